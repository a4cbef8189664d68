"""Lookups as a role may make them: the one path from a request (API or page) to an answer.

    answer, view = await services.lookup_for(principal, number, name=None, id_number=None, purpose=None, client_ip=ip)
    body = await services.lookup_json_for(principal, number, ...)   # the same view as JSON bytes (the API)
    rows = await services.verify_for(principal, pairs, purpose=None, client_ip=ip, rate_state=request_state)

`lookup_for`: the purpose rule for regulators, the name-check budget (a name beyond it is not checked: the
lookup is made without it, see `namebudget.py`), the lookup under the configured deadline, metrics, the audit
entry (written before the answer is returned; fail closed) and the masking for the caller's role. The pages
call it too, so they cannot show more than the API. `verify_for` does the same for a batch, which first costs
one unit of the key's rate limit per pair.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from aggregator.audit import AuditEntry, AuditLog
from aggregator.models import Answer, Mode, NameCheck
from aggregator.numbers import parse_number
from aggregator.resilience import SourceStats
from aggregator.web.batch import Pair, RowResult, verify_all
from aggregator.web.config import WebConfig
from aggregator.web.holders.view import PublicLookupCounts
from aggregator.web.masking import mask_answer, masked_json, overall_name_match
from aggregator.web.metrics import Metrics
from aggregator.web.namebudget import (
    BUDGET_SPENT,
    CHECKS_UNAVAILABLE,
    NameBudget,
    NameBudgetUnavailable,
    caller_for,
    name_outcome,
)
from aggregator.web.problems import PurposeRequired, TooManyRequests, Unprocessable, has_control_characters
from aggregator.web.ratelimit import RATELIMIT_IDENT, RATELIMIT_STATE, WindowLimiter
from aggregator.web.roles import Principal, Role

if TYPE_CHECKING:
    from aggregator.gateway import Gateway

log = logging.getLogger(__name__)


def require_purpose(principal: Principal, purpose: str | None) -> str | None:
    """The stated purpose, stripped; `PurposeRequired` for a regulator without one, `Unprocessable` for one
    with control characters (tab, CR and LF included: they would forge lines in the audit log; NUL, which
    PostgreSQL refuses in text, is bad input rather than a failed audit write that would read as a 503)."""
    text = (purpose or "").strip() or None
    if principal.role == Role.REGULATOR and text is None:
        raise PurposeRequired()
    if text is not None and has_control_characters(text):
        raise Unprocessable(
            "用途说明含有控制字符（含换行、制表符）", "the purpose contains control characters (line breaks, tabs ...)"
        )
    return text


def audit_name_check(answer: Answer) -> str | None:
    """What happened to the name of a lookup, for the audit log: match, mismatch, not_checked, unknown
    (given and checked, but nothing to compare it with) or None (no name given)."""
    if answer.query.name_check == NameCheck.NOT_CHECKED:
        return "not_checked"
    if not answer.query.name_given:
        return None
    match = overall_name_match(answer)
    return "unknown" if match is None else ("match" if match else "mismatch")


def audit_holder(answer: Answer, id_number: str | None = None) -> str | None:
    """Whom a lookup was about, for the audit log (so a regulator can ask who looked a holder up): the ID
    number given or looked up, else the holder's of the certificate(s) found, when they are one person."""
    if id_number and id_number.strip():
        try:
            return parse_number(id_number).number[:18]
        except ValueError:
            return None
    if {f.format for f in answer.query.formats} & {"id18", "id15"}:
        return answer.query.number[:18]
    holders = {c.holder_id_number for c in answer.certificates if c.matched_by == "number" and c.holder_id_number}
    return holders.pop()[:18] if len(holders) == 1 else None


def lookup_entry(
    principal: Principal, answer: Answer, *, purpose: str | None, client_ip: str | None, id_number: str | None
) -> AuditEntry:
    """The audit entry of one lookup (`action="lookup"`): what was asked, the verdict, what became of the name."""
    return AuditEntry.now(
        principal,
        action="lookup",
        number=answer.query.number,
        name_given=answer.query.name_given,
        id_number_given=answer.query.id_number_given,
        verdict=answer.verdict.value,
        purpose=purpose,
        client_ip=client_ip,
        name_check=audit_name_check(answer),
        holder_id_number=audit_holder(answer, id_number),
    )


class Lookups:
    """Lookups and batches as a caller may make them (the base of `Services`, which adds the other services).

    `limiter` and `names` are read at every call, so that whoever replaces them (a test's frozen clock) replaces
    them for the Gate and the batches alike."""

    public_lookups: PublicLookupCounts | None = None  # anonymous lookups per number and day (the holder's view)

    def __init__(
        self,
        gateway: Gateway,
        *,
        audit: AuditLog,
        limiter: WindowLimiter,
        metrics: Metrics,
        config: WebConfig,
        names: NameBudget | None = None,
    ) -> None:
        self.gateway = gateway  # the services' only way to the sources and the store; handlers never use it
        self.audit = audit
        self.limiter = limiter
        self.metrics = metrics
        self.config = config
        self.names = names  # the name-check budget (None: every name is checked)
        self.record_stats: dict[str, SourceStats] = {}  # records sources, as lookups saw them
        # Called with every answer (the receipts service supersedes receipts the answer makes out of date).
        self.after_lookup: Callable[[Answer], Awaitable[None]] | None = None

    async def admit_names(
        self, principal: Principal, client_ip: str | None, pairs: Sequence[tuple[str, str]]
    ) -> list[str | None]:
        """Per (normalised number, name): None when the name may be checked, else why it is not."""
        caller = caller_for(principal, client_ip)
        if self.names is None or caller is None or not pairs:
            return [None] * len(pairs)
        try:
            admitted = await self.names.admit_many(caller, pairs)
        except NameBudgetUnavailable:
            return [CHECKS_UNAVAILABLE] * len(pairs)  # fail closed: no name is checked
        return [None if ok else BUDGET_SPENT for ok in admitted]

    async def charge_pairs(self, principal: Principal, n: int, state: MutableMapping[str, Any] | None = None) -> None:
        """A batch of `n` pairs costs `n` of the key's per-minute window (the request itself, if the Gate
        counted it against this key, is one of them); `TooManyRequests` before anything is looked up when
        they do not fit. `state`: the request state, where the decision is left for the response headers."""
        limit = self.config.key_per_minute
        if principal.key_id is None or limit <= 0 or n <= 0:
            return
        ident = f"key:{principal.key_id}"
        counted = 1 if state is not None and state.get(RATELIMIT_IDENT) == ident else 0
        if n > limit:
            raise Unprocessable(
                f"一次核验 {n} 条超过该密钥每分钟 {limit} 条的限额，请分批提交",
                f"{n} pairs are more than this key's limit of {limit} per minute; send smaller batches",
            )
        if n - counted <= 0:
            return
        decision = await self.limiter.hit(ident, limit, cost=n - counted)
        if state is not None:
            state[RATELIMIT_STATE], state[RATELIMIT_IDENT] = decision, ident
        if not decision.allowed:
            self.metrics.rate_limited.labels("key").inc()
            raise TooManyRequests("key", limit, decision.retry_after_s)

    def observe(self, answer: Answer) -> None:
        """Metrics and the records sources' recent-call statistics for one answer."""
        self.metrics.observe_answer(answer)
        for s in answer.sources:
            if s.mode == Mode.RECORDS and not s.from_cache:
                self.record_stats.setdefault(s.source, SourceStats()).record(s)  # type: ignore[arg-type]

    async def admit_name(
        self, principal: Principal, client_ip: str | None, number: str, id_number: str | None, name: str | None
    ) -> tuple[str | None, str | None]:
        """(the name given, stripped, or None; why it may not be checked, or None). Bad input fails here, as in
        the lookup, before any of the name budget is spent."""
        name = (name or "").strip() or None
        if name is None:
            return None, None
        normalised = parse_number(number).number
        if id_number and id_number.strip():
            parse_number(id_number)
        [refused] = await self.admit_names(principal, client_ip, [(normalised, name)])
        return name, refused

    async def lookup_for(
        self,
        principal: Principal,
        number: str,
        *,
        name: str | None = None,
        id_number: str | None = None,
        purpose: str | None = None,
        client_ip: str | None = None,
    ) -> tuple[Answer, dict[str, Any]]:
        """One lookup as `principal` may make it: the answer and the view of it the caller may see."""
        answer, typed = await self._lookup(
            principal, number, name=name, id_number=id_number, purpose=purpose, client_ip=client_ip
        )
        return answer, mask_answer(answer, principal.role, typed)

    async def lookup_json_for(
        self,
        principal: Principal,
        number: str,
        *,
        name: str | None = None,
        id_number: str | None = None,
        purpose: str | None = None,
        client_ip: str | None = None,
    ) -> bytes:
        """`lookup_for`'s view serialised (UTF-8 JSON, compact), for the API: a repeated lookup's view is kept
        serialised (`masking.masked_json`)."""
        answer, typed = await self._lookup(
            principal, number, name=name, id_number=id_number, purpose=purpose, client_ip=client_ip
        )
        return masked_json(answer, principal.role, typed)

    async def _lookup(
        self,
        principal: Principal,
        number: str,
        *,
        name: str | None,
        id_number: str | None,
        purpose: str | None,
        client_ip: str | None,
    ) -> tuple[Answer, frozenset[str]]:
        """The lookup, its metrics and its audit entry: the answer and the numbers the caller typed."""
        purpose = require_purpose(principal, purpose)
        name, refused = await self.admit_name(principal, client_ip, number, id_number, name)
        answer = await self.gateway.lookup(
            number, name=name if refused is None else None, id_number=id_number, deadline_s=self.config.deadline_s
        )
        answer = name_outcome(answer, name, refused)
        self.observe(answer)
        if self.after_lookup is not None:
            await self.after_lookup(answer)
        if principal.key_id is None and self.public_lookups is not None:  # what a holder sees of the public
            self.public_lookups.count(answer.query.number)
        if principal.key_id is not None or refused == BUDGET_SPENT:  # the public: when it keeps guessing names
            entry = lookup_entry(principal, answer, purpose=purpose, client_ip=client_ip, id_number=id_number)
            if principal.key_id is not None:
                await self.audit.write([entry])
            else:
                try:
                    await self.audit.write([entry])
                except Exception as e:  # noqa: BLE001 - the answer reveals nothing the name could: still given
                    log.warning("could not audit a refused public name check: %s", e)
        return answer, frozenset(t for t in (number, id_number) if t)

    async def verify_for(
        self,
        principal: Principal,
        pairs: Sequence[Pair],
        *,
        purpose: str | None = None,
        client_ip: str | None = None,
        rate_state: MutableMapping[str, Any] | None = None,
    ) -> list[RowResult]:
        """A batch of pairs as `principal` may verify them; every looked-up pair is audited. The pairs cost
        the key's rate limit first (`charge_pairs`; `rate_state` is the request state), then each name is
        admitted by the name-check budget or looked up without it."""
        purpose = require_purpose(principal, purpose)
        await self.charge_pairs(principal, len(pairs), rate_state)
        return await self.verify_pairs(
            principal,
            pairs,
            purpose=purpose,
            client_ip=client_ip,
            concurrency=self.config.batch_concurrency,
            deadline_s=self.config.deadline_s,
        )

    async def verify_pairs(
        self,
        principal: Principal,
        pairs: Sequence[Pair],
        *,
        purpose: str | None,
        client_ip: str | None,
        concurrency: int,
        deadline_s: float,
        job_id: str | None = None,
    ) -> list[RowResult]:
        """Look the pairs up as `principal` (its name budget), then what follows every lookup: metrics, the
        receipts hook and one audit entry per looked-up pair (`job_id`: filed under a background job)."""

        async def admit(items: Sequence[tuple[str, str]]) -> list[str | None]:
            return await self.admit_names(principal, client_ip, items)

        rows = await verify_all(
            self.gateway, pairs, principal.role, concurrency=concurrency, deadline_s=deadline_s, admit=admit
        )
        for r in rows:
            if r.answer is not None:
                self.observe(r.answer)
                if self.after_lookup is not None:
                    await self.after_lookup(r.answer)
        if principal.key_id is not None:
            await self.audit.write(
                [
                    AuditEntry.now(
                        principal,
                        action="verification",
                        number=r.answer.query.number,
                        name_given=r.answer.query.name_given,
                        id_number_given=r.answer.query.id_number_given,
                        verdict=r.answer.verdict.value,
                        purpose=purpose,
                        client_ip=client_ip,
                        name_check=audit_name_check(r.answer),
                        holder_id_number=audit_holder(r.answer, r.pair.id_number),
                        job_id=job_id,
                    )
                    for r in rows
                    if r.answer is not None
                ]
            )
        return rows
