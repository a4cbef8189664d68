"""A roster run: every member of a roster verified as one job, resumable, each member counted once.

    runs = RosterRuns(services, jobs)
    engine.handler("roster_verify")(runs.run)        # see services/work.py

The job works through the members in the order of their ids, a chunk at a time: the lookups of a chunk run
concurrently (`JobsConfig.lookup_concurrency`), then the chunk's results are stored in one transaction with the job's
progress. A result's key is (job, member), and a worker that takes a job over (its first worker died) skips the
members that already have one, so every member has exactly one result however often the job is restarted.

Lookups go through the gateway like any other (cache, coalescing, the sources' shared rate limits and circuit
breakers), with a long deadline: a roster waits for a source's rate-limit slot instead of turning throttling into
an inconclusive answer, and never into "not found". Names cost the organisation's name budget as in a batch. The
member lookups are audited under the job (`job_id`), and the run itself is one entry with its counts.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.jobs import JobStore, Lease
from aggregator.jobs.config import JobsConfig
from aggregator.models import Verdict
from aggregator.records.database import dialect_insert, write_transaction
from aggregator.records.schema import roster_members, roster_results
from aggregator.web.batch import Pair, RowResult
from aggregator.web.roles import Principal, Role
from aggregator.web.services.lookups import audit_name_check

if TYPE_CHECKING:
    from aggregator.web.services import Services

log = logging.getLogger(__name__)

INCONCLUSIVE = frozenset({Verdict.INCONCLUSIVE.value})


async def count_members(engine: AsyncEngine, roster_id: str) -> int:
    async with engine.connect() as conn:
        q = sa.select(sa.func.count()).select_from(roster_members).where(roster_members.c.roster_id == roster_id)
        return int((await conn.execute(q)).scalar_one())


def chunks(ids: Sequence[int], *, size: int, first: int = 8) -> Iterator[Sequence[int]]:
    """`ids` in chunks growing from `first` to `size`: the first results show at once, the rest go in bulk."""
    start, step = 0, min(first, size)
    while start < len(ids):
        yield ids[start : start + step]
        start += step
        step = min(step * 2, size)


def days_to_expiry(certificates: Sequence[dict[str, Any]], today: date) -> int | None:
    """Days until the soonest valid-until among the certificates in force or expired (negative: already past);
    a suspended or revoked card, or one that is not the holder's, has no expiry worth counting down to."""
    days = []
    for c in certificates:
        value = c.get("valid_until")
        if value and c.get("status") in ("valid", "expired"):
            try:
                days.append((date.fromisoformat(str(value)[:10]) - today).days)
            except ValueError:
                continue
    return min(days) if days else None


def member_result(r: RowResult, today: date) -> tuple[str | None, str, dict[str, Any]]:
    """(verdict, outcome, result JSON) of one member's row."""
    view = r.view or {}
    certificates = [
        {
            "department": c.get("department"),
            "number": c.get("number"),
            "status": c.get("status"),
            "valid_until": c.get("valid_until"),
            "kind": c.get("kind"),
            "operation_item": c.get("operation_item"),
        }
        for c in view.get("certificates") or []
    ]
    verdict = r.answer.verdict.value if r.answer else None
    if r.answer is None:
        outcome = "error"
    elif verdict in INCONCLUSIVE:
        outcome = "inconclusive"
    else:
        outcome = "definitive"
    result = {
        "verdict": verdict,
        "verdict_reason": r.answer.verdict_reason if r.answer else None,
        # match | mismatch | not_checked | unknown, as the audit log says it (None: no name to check)
        "name_check": audit_name_check(r.answer) if r.answer is not None else None,
        "name_matches": r.name_matches,
        "complete": r.answer.complete if r.answer else False,
        "days_to_expiry": None if verdict == Verdict.NAME_MISMATCH.value else days_to_expiry(certificates, today),
        "certificates": certificates,
        "conflicts": len(r.answer.conflicts) if r.answer else 0,
        "error": (r.error or {}).get("detail"),
    }
    return verdict, outcome, result


class RosterRuns:
    def __init__(self, services: Services, jobs: JobStore, config: JobsConfig | None = None) -> None:
        self.services = services
        self.jobs = jobs
        self.engine = services.gateway.store.engine
        self.config = config or JobsConfig.from_env()

    async def verify_members(
        self, principal: Principal, members: Sequence[Any], *, job_id: str
    ) -> list[tuple[Any, RowResult]]:
        """Look the members up as the organisation would (its name budget), auditing each under the job."""
        pairs = [Pair(row=m.id, number=m.number, name=m.name, id_number=m.id_number) for m in members]
        rows = await self.services.verify_pairs(
            principal,
            pairs,
            purpose="名册核验 roster run",
            client_ip=None,
            concurrency=self.config.lookup_concurrency,
            deadline_s=self.config.lookup_deadline_s,  # waits for rate-limit slots (an interactive lookup: 6 s)
            job_id=job_id,
        )
        return list(zip(members, rows, strict=True))

    async def run(self, lease: Lease) -> dict[str, int]:
        job = lease.job
        roster_id = job.subject
        principal = Principal(Role.EMPLOYER, key_id=job.created_by, label=job.organisation)
        async with self.engine.connect() as conn:
            ids = [
                r[0]
                for r in (
                    await conn.execute(
                        sa.select(roster_members.c.id)
                        .where(roster_members.c.roster_id == roster_id)
                        .order_by(roster_members.c.id)
                    )
                ).all()
            ]
            finished = {
                r[0]
                for r in (
                    await conn.execute(sa.select(roster_results.c.member_id).where(roster_results.c.job_id == job.id))
                ).all()
            }
        todo = [i for i in ids if i not in finished]
        done = len(ids) - len(todo)
        await lease.progress(done=done, total=len(ids))
        insert = dialect_insert(self.engine.dialect.name, roster_results).on_conflict_do_nothing()
        for chunk in chunks(todo, size=self.config.chunk):
            async with self.engine.connect() as conn:
                members = (
                    await conn.execute(sa.select(roster_members).where(roster_members.c.id.in_(chunk)))
                ).all()
            results = await self.verify_members(principal, members, job_id=job.id)
            now = datetime.now(UTC)
            values = []
            for m, r in results:
                verdict, outcome, result = member_result(r, now.date())
                values.append(
                    {
                        "job_id": job.id,
                        "member_id": m.id,
                        "verdict": verdict,
                        "outcome": outcome,
                        "result": result,
                        "checked_at": now,
                    }
                )
            async with write_transaction(self.engine) as conn:
                if values:
                    done += len((await conn.execute(insert.returning(roster_results.c.member_id), values)).all())
            await lease.progress(done=done)
        counts = await self.counts(job.id)
        await self.services.audit.record_action(
            principal,
            "roster_run",
            detail={"roster": roster_id, "job": job.id, "members": len(ids), "counts": counts},
            job_id=job.id,
        )
        return counts

    async def counts(self, job_id: str) -> dict[str, int]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(roster_results.c.verdict, roster_results.c.outcome, sa.func.count())
                    .where(roster_results.c.job_id == job_id)
                    .group_by(roster_results.c.verdict, roster_results.c.outcome)
                )
            ).all()
        counts: Counter[str] = Counter()
        for verdict, outcome, n in rows:
            counts[verdict or outcome] += n
        return dict(sorted(counts.items()))
