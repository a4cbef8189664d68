"""What the API routes and the pages share: the app's services and one lookup as a role may make it.

    services: Services = request.app.state.services
    view = await services.lookup_for(principal, number, name=None, id_number=None, purpose=None, client_ip=ip)

`lookup_for` is the one path from a request to an answer: the purpose rule for regulators, the lookup
under the configured deadline, metrics, the audit entry (written before the answer is returned; fail
closed) and the masking for the caller's role. The pages call it too, so they cannot show more than the API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aggregator.models import Answer, Mode
from aggregator.resilience import SourceStats
from aggregator.web.audit import AuditEntry, AuditLog
from aggregator.web.batch import Pair, RowResult, verify_all
from aggregator.web.config import WebConfig
from aggregator.web.keys import KeyStore
from aggregator.web.masking import mask_answer
from aggregator.web.metrics import Metrics
from aggregator.web.problems import PurposeRequired, Unprocessable
from aggregator.web.ratelimit import WindowLimiter
from aggregator.web.roles import Principal, Role


# Control characters (NUL above all: PostgreSQL refuses it in text) have no place in a purpose; refused as bad
# input rather than failing the audit write, which would read as an outage (503).
_CONTROL = frozenset(chr(c) for c in range(32) if chr(c) not in "\t\n\r") | {"\x7f"}


def require_purpose(principal: Principal, purpose: str | None) -> str | None:
    """The stated purpose, stripped; `PurposeRequired` for a regulator without one, `Unprocessable` for one
    with control characters."""
    text = (purpose or "").strip() or None
    if principal.role == Role.REGULATOR and text is None:
        raise PurposeRequired()
    if text is not None and not _CONTROL.isdisjoint(text):
        raise Unprocessable("用途说明含有控制字符", "the purpose contains control characters")
    return text


@dataclass
class Services:
    """Everything a request handler needs, built by the app's lifespan."""

    gateway: Any  # aggregator.gateway.Gateway (or a stand-in with the same lookup/store/cache)
    keys: KeyStore
    audit: AuditLog
    limiter: WindowLimiter
    metrics: Metrics
    config: WebConfig
    record_stats: dict[str, SourceStats] = field(default_factory=dict)  # records sources, as lookups saw them

    def observe(self, answer: Answer) -> None:
        """Metrics and the records sources' recent-call statistics for one answer."""
        self.metrics.observe_answer(answer)
        for s in answer.sources:
            if s.mode == Mode.RECORDS and not s.from_cache:
                self.record_stats.setdefault(s.source, SourceStats()).record(s)  # type: ignore[arg-type]

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
        purpose = require_purpose(principal, purpose)
        answer = await self.gateway.lookup(number, name=name, id_number=id_number, deadline_s=self.config.deadline_s)
        self.observe(answer)
        if principal.key_id is not None:
            await self.audit.write(
                [
                    AuditEntry.now(
                        principal,
                        action="lookup",
                        number=answer.query.number,
                        name_given=answer.query.name_given,
                        id_number_given=answer.query.id_number_given,
                        verdict=answer.verdict.value,
                        purpose=purpose,
                        client_ip=client_ip,
                    )
                ]
            )
        typed = {t for t in (number, id_number) if t}
        return answer, mask_answer(answer, principal.role, typed)

    async def verify_for(
        self,
        principal: Principal,
        pairs: Sequence[Pair],
        *,
        purpose: str | None = None,
        client_ip: str | None = None,
    ) -> list[RowResult]:
        """A batch of pairs as `principal` may verify them; every looked-up pair is audited."""
        purpose = require_purpose(principal, purpose)
        rows = await verify_all(
            self.gateway,
            pairs,
            principal.role,
            concurrency=self.config.batch_concurrency,
            deadline_s=self.config.deadline_s,
        )
        for r in rows:
            if r.answer is not None:
                self.observe(r.answer)
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
                    )
                    for r in rows
                    if r.answer is not None
                ]
            )
        return rows
