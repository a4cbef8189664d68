"""Checking one sampled certificate against the departments' live sources, and what disagrees.

    checker = Checker(gateway)                        # the gateway's runner: its rate limits, breakers, sessions
    result = await checker.check(item)                # item: a sampled upload (sampling.Sampled or its stored row)
    result.outcome                                    # "agrees" | "discrepant" | "inconclusive"
    result.discrepancies                              # each with both sides' values, the source and when it answered

Which sources: every live (api / html) source that is enabled and configured. The certificate's own department's
sources are asked about its number (MEM's and SAMR's numbers are the holder's ID number, so one question by ID
serves both purposes); every source that answers by ID number (any department) is asked about the holder's ID
number, for the holder's certificates the upload does not have. Each question goes through the gateway's runner
(`Runner.run`), so certq's rate limits, circuit breakers and per-source concurrency hold for campaigns as for
lookups, across every instance; the cache is not used (a spot check wants what the source says now), and every
definitive answer is kept in the live-answer history as a lookup's would be. The deadline is long: a rate-limit
slot is waited for (up to the source's own timeout), not turned into `rate_limited`.

What counts (as of the gateway's today):
- not_found_live: the upload has it as valid; the own department's live sources all answered and none has it
  (an upload that itself says suspended, revoked or expired is not contradicted by a register that lists only
  certificates in force, as MOHRSS's does: that is a note, not a discrepancy).
- status: the statuses in force differ (`effective_status`), unless both sides only say valid/expired and their
  end dates differ (then the date is the discrepancy: a renewal the upload does not know yet). A live `unknown`
  (SAMR's flag says only "not valid") disagrees only with an upload that says valid.
- field: issued_on, valid_from, valid_until, next_review_on, operation_item, category, level or issuer differ,
  where the live source states the field (a source that does not show a field never disagrees about it).
- missing_from_upload: a live certificate of the holder (not a MEM 历史数据 record) that no current upload has.
An item whose own department's sources did not all answer definitively (down, captcha, rate limited, circuit
open, no live source at all) is inconclusive: counted apart, never a discrepancy. Holder questions that fail
are listed in `incomplete` without making the item inconclusive.
"""

from __future__ import annotations

import asyncio
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from adapters.mem import HISTORY_PREFIX
from adapters.registry import build_adapter
from aggregator.config import SourceConfig
from aggregator.models import LIVE_MODES, Certificate, CertStatus, Department, Outcome, Query, SourceResult
from aggregator.numbers import classify

if TYPE_CHECKING:
    from aggregator.gateway import Gateway

DEADLINE_S = 120.0  # per question: long, so that a rate-limit slot is waited for (the source's timeout still cuts)
COMPARED_FIELDS = (
    "issued_on",
    "valid_from",
    "valid_until",
    "next_review_on",
    "operation_item",
    "category",
    "level",
    "issuer",
)
KINDS = ("status", "field", "not_found_live", "missing_from_upload")
KIND_ZH = {
    "status": "状态不符",
    "field": "字段不符",
    "not_found_live": "在线未查到",
    "missing_from_upload": "上报缺失",
}
OUTCOMES = ("agrees", "discrepant", "inconclusive")
OUTCOME_ZH = {"agrees": "一致", "discrepant": "不一致", "inconclusive": "无法确定"}
IN_FORCE = frozenset({CertStatus.VALID, CertStatus.UNKNOWN})  # what an upload claims when it lists a certificate
_TEXT_FIELDS = frozenset({"operation_item", "category", "level", "issuer"})


@dataclass
class CheckResult:
    outcome: str  # agrees | discrepant | inconclusive
    discrepancies: list[dict[str, Any]] = field(default_factory=list)
    inconclusive: list[dict[str, Any]] = field(default_factory=list)  # why not (own department's sources)
    incomplete: list[dict[str, Any]] = field(default_factory=list)  # holder questions that got no answer
    sources: list[dict[str, Any]] = field(default_factory=list)  # every question asked and its outcome
    notes: list[dict[str, Any]] = field(default_factory=list)  # what was seen but is no discrepancy

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "discrepancies": self.discrepancies,
            "inconclusive": self.inconclusive,
            "incomplete": self.incomplete,
            "sources": self.sources,
            "notes": self.notes,
        }


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, date):
        return value.isoformat()
    text = "".join(unicodedata.normalize("NFKC", str(value)).split()).upper()
    return text or None


def _shown(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def _is_history(cert: Certificate) -> bool:
    return (cert.status_text or "").startswith(HISTORY_PREFIX)


def _when(result: SourceResult) -> str | None:
    return result.fetched_at.isoformat() if result.fetched_at else None


def upload_certificate(upload: dict[str, Any]) -> Certificate:
    return Certificate.model_validate({k: v for k, v in upload.items() if k in Certificate.model_fields})


def compare(upload: Certificate, live: Certificate, today: date) -> list[tuple[str, str, Any, Any]]:
    """(kind, field, upload value, live value) for every way `live` disagrees with `upload`."""
    out: list[tuple[str, str, Any, Any]] = []
    mine, theirs = upload.effective_status(today), live.effective_status(today)
    dated = {upload.status, live.status} <= {CertStatus.VALID, CertStatus.EXPIRED}
    # UNKNOWN from a live source says only "not valid" (SAMR's validFlag): it disagrees with a valid upload only
    vague = theirs == CertStatus.UNKNOWN and mine not in (CertStatus.VALID, CertStatus.UNKNOWN)
    if mine != theirs and not vague and not (dated and upload.valid_until != live.valid_until):
        out.append(("status", "status", mine.value, theirs.value))
    for name in COMPARED_FIELDS:
        a, b = getattr(upload, name), getattr(live, name)
        if b is None:
            continue  # the live source does not state it
        same = _text(a) == _text(b) if name in _TEXT_FIELDS else a == b
        if not same:
            out.append(("field", name, _shown(a), _shown(b)))
    return out


class Checker:
    """Checks sampled certificates through `gateway`'s runner (see the module docstring)."""

    def __init__(self, gateway: Gateway, *, today: date | None = None, deadline_s: float = DEADLINE_S) -> None:
        self.gateway = gateway
        self.today = today or gateway.today()
        self.deadline_s = deadline_s
        self.sources = [s for s in gateway.settings.sources if s.enabled and s.configured and s.mode in LIVE_MODES]
        self.adapters = {s.id: build_adapter(s) for s in self.sources}
        # Questions wait for their source's concurrency slot here, before the runner's clock starts: the runner's
        # own cap is then never full, and its wait (which counts against the source's timeout) is never long.
        self._caps = {s.id: asyncio.Semaphore(s.max_concurrency) for s in self.sources}

    def questions(self, department: str, number: str, holder: str | None) -> list[tuple[SourceConfig, Query, str]]:
        """(source, query, why) for one certificate: why is "number" (its own department) or "holder"."""
        fits = classify(number).names
        out: list[tuple[SourceConfig, Query, str]] = []
        for s in self.sources:
            by_holder = bool(holder) and "id18" in s.patterns
            if s.department.value == department:
                covered = by_holder and number in (holder, "T" + (holder or ""))
                if not covered and ("*" in s.patterns or fits & set(s.patterns)):
                    out.append((s, Query(number=number), "number"))
            if by_holder:
                assert holder is not None
                out.append((s, Query(number=holder), "holder"))
        return out

    async def ask(self, source: SourceConfig, query: Query) -> SourceResult:
        async with self._caps[source.id]:
            deadline = time.monotonic() + self.deadline_s
            result = await self.gateway.runner.run(source, self.adapters[source.id], query, deadline=deadline)
        if self.gateway.history is not None:
            self.gateway.history.keep(source.id, query, result)
        return result

    async def check(self, department: str, number: str, holder: str | None, upload: dict[str, Any]) -> CheckResult:
        cert = upload_certificate(upload)
        plan = self.questions(department, number, holder)
        results = await asyncio.gather(*(self.ask(s, q) for s, q, _ in plan))
        asked = list(zip(plan, results, strict=True))
        out = CheckResult("agrees")
        for (s, q, why), r in asked:
            out.sources.append(
                {
                    "source": s.id,
                    "department": s.department.value,
                    "asked": why,
                    "outcome": r.outcome.value,
                    "error_kind": r.error_kind.value if r.error_kind else None,
                    "found": len(r.certificates),
                    "fetched_at": _when(r),
                }
            )
        own = [(s, r) for (s, _, _), r in asked if s.department.value == department]
        if not own:
            out.outcome = "inconclusive"
            out.inconclusive.append({"reason": "no_live_source", "source": None, "error_kind": None})
            return out
        failed = [(s, r) for s, r in own if r.outcome not in (Outcome.FOUND, Outcome.NOT_FOUND)]
        if failed:
            out.outcome = "inconclusive"
            for s, r in failed:
                kind = r.error_kind.value if r.error_kind else r.outcome.value
                out.inconclusive.append({"reason": kind, "source": s.id, "error_kind": kind, "message": r.message})
            return out

        key = cert.key()
        live = next(
            ((s, r, c) for s, r in own for c in r.certificates if c.key() == key and not _is_history(c)), None
        )
        if live is None and cert.effective_status(self.today) in IN_FORCE:
            s, r = own[0]
            out.discrepancies.append(
                self._evidence("not_found_live", "number", number, None, s.id, r, department, number)
            )
        elif live is None:  # the upload itself says it is not in force; registers may list only what is
            out.notes.append({"note": "not_listed_live", "upload_status": cert.effective_status(self.today).value})
        else:
            s, r, c = live
            for kind, name, mine, theirs in compare(cert, c, self.today):
                out.discrepancies.append(self._evidence(kind, name, mine, theirs, s.id, r, department, number))
        if holder:
            await self._holder(out, asked, holder)
        out.outcome = "discrepant" if out.discrepancies else "agrees"
        return out

    async def _holder(self, out: CheckResult, asked: list[Any], holder: str) -> None:
        """Live certificates of the holder that no current upload has."""
        uploaded: dict[Department, set[tuple[str, str, str]]] = {}
        seen: set[tuple[str, str, str]] = set()
        for (s, _, why), r in asked:
            if why != "holder":
                continue
            if r.outcome not in (Outcome.FOUND, Outcome.NOT_FOUND):
                kind = r.error_kind.value if r.error_kind else r.outcome.value
                out.incomplete.append({"source": s.id, "error_kind": kind})
                continue
            for c in r.certificates:
                if _is_history(c) or (c.holder_id_number and c.holder_id_number != holder) or c.key() in seen:
                    continue
                if c.department not in uploaded:
                    hit = await self.gateway.store.find(c.department, id_number=holder)
                    uploaded[c.department] = {u.key() for u in hit.certificates}
                if c.key() not in uploaded[c.department]:
                    more = await self.gateway.store.find(c.department, number=c.number)
                    if c.key() in {u.key() for u in more.certificates}:
                        continue  # uploaded, with another holder ID: the number's own check speaks of it
                    seen.add(c.key())
                    out.discrepancies.append(
                        self._evidence(
                            "missing_from_upload",
                            "number",
                            None,
                            c.number,
                            s.id,
                            r,
                            c.department.value,
                            c.number,
                            live={"status": c.effective_status(self.today).value, "kind": c.kind.value,
                                  "operation_item": c.operation_item or c.category,
                                  "valid_until": _shown(c.valid_until)},
                        )
                    )

    @staticmethod
    def _evidence(
        kind: str,
        name: str,
        mine: Any,
        theirs: Any,
        source: str,
        result: SourceResult,
        department: str,
        number: str,
        live: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        out = {
            "kind": kind,
            "field": name,
            "upload": mine,
            "live": theirs,
            "source": source,
            "fetched_at": _when(result),
            "department": department,
            "number": number,
        }
        if live:
            out["live_certificate"] = live
        return out
