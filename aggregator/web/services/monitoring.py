"""Monitoring: the members due are re-verified in batches (jobs), and what changed is stored as events.

    monitoring = Monitoring(services, engine)
    engine.on_tick(monitoring.tick)                       # takes the members due, queues a batch job per roster
    engine.handler("monitor_batch")(monitoring.run_batch) # verifies them, writes state and events

The tick runs once across all workers (Procrastinate's periodic deduplication) and takes at most `per_tick`
members (`CERTQ_MONITOR_PER_TICK`), through the `due_at` index (see `aggregator.rosters.schedule`). A batch job
verifies its members as a roster run does (same lookups, budget and audit under the job), then compares each
result with the member's last state (`aggregator.rosters.events`): the first check is the baseline; later ones
append events, never rewritten. The events' webhooks are the dispatcher's (`aggregator.rosters.webhooks`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from aggregator.jobs import JobEngine, Lease
from aggregator.records.database import write_transaction
from aggregator.records.reads import as_utc
from aggregator.records.schema import roster_events, roster_members, rosters
from aggregator.rosters.events import changes
from aggregator.rosters.schedule import take_due
from aggregator.web.roles import Principal, Role
from aggregator.web.services.roster_runs import RosterRuns, member_result

if TYPE_CHECKING:
    from collections.abc import Callable

    from aggregator.web.services import Services



class Monitoring:
    def __init__(
        self, services: Services, engine: JobEngine, *, clock: Callable[[], float] = time.time, per_tick: int | None = None
    ) -> None:
        self.services = services
        self.engine = engine
        self.db = services.gateway.store.engine
        self.runs = RosterRuns(services, engine.jobs, engine.config)
        self.clock = clock
        self.per_tick = per_tick or engine.config.monitor_per_tick

    async def tick(self) -> list[str]:
        """Queue a batch job for the members due now; the job ids."""
        due = await take_due(self.db, now=self.clock(), limit=self.per_tick)
        if not due:
            return []
        async with self.db.connect() as conn:
            owners = {
                r.id: r
                for r in (
                    await conn.execute(
                        sa.select(rosters.c.id, rosters.c.organisation, rosters.c.created_by).where(
                            rosters.c.id.in_(list(due))
                        )
                    )
                ).all()
            }
        started = []
        for roster_id, member_ids in due.items():
            owner = owners.get(roster_id)
            if owner is None:
                continue
            job = await self.engine.jobs.create(
                "monitor_batch",
                organisation=owner.organisation,
                created_by=owner.created_by,
                subject=roster_id,
                params={"members": member_ids},
                total=len(member_ids),
            )
            await self.engine.submit(job.id)
            started.append(job.id)
        return started

    async def run_batch(self, lease: Lease) -> dict[str, int]:
        job = lease.job
        roster_id = job.subject
        principal = Principal(Role.EMPLOYER, key_id=job.created_by, label=job.organisation)
        member_ids = [int(i) for i in job.params.get("members", [])]
        async with self.db.connect() as conn:
            roster = (await conn.execute(sa.select(rosters).where(rosters.c.id == roster_id))).first()
        if roster is None:
            return {"skipped": len(member_ids)}
        warn_days = tuple(sorted({int(d) for d in (roster.expiry_warn_days or [90, 30, 7])}, reverse=True))
        counts: dict[str, int] = {}
        done = 0
        await lease.progress(done=0, total=len(member_ids))
        size = self.runs.config.chunk
        for start in range(0, len(member_ids), size):
            chunk = member_ids[start : start + size]
            async with self.db.connect() as conn:
                members = (
                    await conn.execute(sa.select(roster_members).where(roster_members.c.id.in_(chunk)))
                ).all()
            results = await self.runs.verify_members(principal, members, job_id=job.id)
            now = datetime.now(UTC)
            async with write_transaction(self.db) as conn:
                for m, r in results:
                    verdict, _outcome, result = member_result(r, now.date())
                    counts[verdict or "error"] = counts.get(verdict or "error", 0) + 1
                    state, events, since = changes(
                        m.state,
                        result,
                        today=now.date(),
                        now=now,
                        warn_days=warn_days,
                        inconclusive_since=as_utc(m.inconclusive_since) if m.inconclusive_since else None,
                        inconclusive_after_days=roster.inconclusive_after_days,
                    )
                    await conn.execute(
                        sa.update(roster_members)
                        .where(roster_members.c.id == m.id)
                        .values(state=state, inconclusive_since=since)
                    )
                    if events:
                        await conn.execute(
                            sa.insert(roster_events),
                            [self._event_row(roster, m, e, now, job.id) for e in events],
                        )
                        counts["events"] = counts.get("events", 0) + len(events)
            done += len(chunk)
            await lease.progress(done=done)
        return counts

    @staticmethod
    def _event_row(roster: Any, member: Any, e: Any, now: datetime, job_id: str) -> dict[str, Any]:
        return {
            "roster_id": roster.id,
            "organisation": roster.organisation,
            "member_ref": member.ref,
            "type": e.type,
            "number": e.number or member.number,
            "department": e.department,
            "old": e.old,
            "new": e.new,
            "detail": {**e.detail, "job": job_id},
            "at": now,
        }
