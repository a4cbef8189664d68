"""The state of every job, in certq's own `jobs` table: what it is, who owns it, how far it got, who runs it.

    jobs = JobStore(engine)
    job = await jobs.create("roster_verify", organisation="某建设集团", created_by=key_id, subject=roster_id,
                            params={...}, total=120)
    lease = await jobs.claim(job.id, worker="host:pid:n")      # None: finished, cancelled or held by a live worker
    await lease.progress(done=40, total=120)                    # extends the lease; raises Cancelled / LeaseLost
    await lease.finish({"valid": 100, "inconclusive": 20})      # or lease.fail("why")

A worker holds a job by its lease (`lease_s`, CERTQ_JOBS_LEASE_S, renewed on every `progress`). A worker that dies (SIGKILL, a lost
machine) stops renewing; once the lease has run out any worker may claim the job again and carry on from the
results already stored (the job's own tables make each unit of work count once). The engine that dispatches
jobs (`aggregator.jobs.engine`) only has to deliver the job id; everything a restart needs is here.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.jobs.config import JobsConfig
from aggregator.records.database import write_transaction
from aggregator.records.reads import as_utc
from aggregator.records.schema import jobs

ACTIVE = ("queued", "running")


class JobInterrupted(Exception):
    """The job must stop now (base of `Cancelled` and `LeaseLost`)."""


class Cancelled(JobInterrupted):
    """Its owner cancelled the job."""


class LeaseLost(JobInterrupted):
    """Another worker took the job over (this one was too slow to renew its lease)."""


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    organisation: str
    created_by: str
    subject: str | None
    params: dict[str, Any]
    status: str
    total: int
    done: int
    counts: dict[str, int] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool
    attempts: int

    @classmethod
    def of(cls, row: Any) -> Job:
        m = row._mapping
        return cls(
            id=m["id"],
            kind=m["kind"],
            organisation=m["organisation"],
            created_by=m["created_by"],
            subject=m["subject"],
            params=dict(m["params"] or {}),
            status=m["status"],
            total=m["total"],
            done=m["done"],
            counts=m["counts"],
            error=m["error"],
            created_at=as_utc(m["created_at"]),
            started_at=as_utc(m["started_at"]) if m["started_at"] else None,
            finished_at=as_utc(m["finished_at"]) if m["finished_at"] else None,
            cancel_requested=bool(m["cancel_requested"]),
            attempts=m["attempts"],
        )

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def rate(self, now: datetime) -> float | None:
        """Units done per second since it started (None before it has done anything)."""
        if self.started_at is None or self.done <= 0:
            return None
        end = self.finished_at or now
        seconds = (end - self.started_at).total_seconds()
        return self.done / seconds if seconds > 0 else None

    def eta_s(self, now: datetime) -> float | None:
        """Seconds left at the current rate (None when unknown or finished)."""
        rate = self.rate(now)
        if self.status != "running" or not rate:
            return None
        return max(self.total - self.done, 0) / rate


class JobStore:
    def __init__(self, engine: AsyncEngine, *, lease_s: float | None = None) -> None:
        self.engine = engine
        self.lease_s = lease_s if lease_s is not None else JobsConfig.from_env().lease_s

    async def create(
        self,
        kind: str,
        *,
        organisation: str,
        created_by: str,
        subject: str | None = None,
        params: dict[str, Any] | None = None,
        total: int = 0,
    ) -> Job:
        job_id = secrets.token_hex(12)
        now = datetime.now(UTC)
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                sa.insert(jobs).values(
                    id=job_id,
                    kind=kind,
                    organisation=organisation,
                    created_by=created_by,
                    subject=subject,
                    params=params or {},
                    status="queued",
                    total=total,
                    done=0,
                    created_at=now,
                    attempts=0,
                )
            )
        job = await self.get(job_id)
        assert job is not None
        return job

    async def get(self, job_id: str) -> Job | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).first()
        return Job.of(row) if row is not None else None

    async def list(
        self, *, organisation: str | None = None, subject: str | None = None, limit: int = 50
    ) -> list[Job]:
        q = sa.select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit)
        if organisation is not None:
            q = q.where(jobs.c.organisation == organisation)
        if subject is not None:
            q = q.where(jobs.c.subject == subject)
        async with self.engine.connect() as conn:
            return [Job.of(r) for r in (await conn.execute(q)).all()]

    async def cancel(self, job_id: str) -> Job | None:
        """Ask the job to stop: a queued job is cancelled at once, a running one at its next progress."""
        now = datetime.now(UTC)
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == "queued")
                .values(status="cancelled", cancel_requested=True, finished_at=now)
            )
            await conn.execute(
                sa.update(jobs).where(jobs.c.id == job_id, jobs.c.status == "running").values(cancel_requested=True)
            )
        return await self.get(job_id)

    async def claim(self, job_id: str, *, worker: str) -> Lease | None:
        """Take the job if nobody holds it (or the holder's lease ran out). None when it is not to be run now."""
        now = datetime.now(UTC)
        async with write_transaction(self.engine) as conn:
            result = await conn.execute(
                sa.update(jobs)
                .where(
                    jobs.c.id == job_id,
                    jobs.c.status.in_(ACTIVE),
                    jobs.c.cancel_requested.is_(sa.false()),
                    sa.or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < now),
                )
                .values(
                    status="running",
                    lease_owner=worker,
                    lease_until=now + timedelta(seconds=self.lease_s),
                    attempts=jobs.c.attempts + 1,
                    started_at=sa.func.coalesce(jobs.c.started_at, now),
                )
            )
        if result.rowcount != 1:
            return None
        job = await self.get(job_id)
        assert job is not None
        return Lease(self, job, worker)

    async def summary(self) -> dict[str, int]:
        """How many jobs are in each status."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status))).all()
        return {status: n for status, n in rows}

    async def live_workers(self, within_s: float = 60.0) -> int | None:
        """`certq worker` processes that sent a heartbeat lately (PostgreSQL: Procrastinate's table; None where
        there is no such table: the embedded default, or before any worker started)."""
        if self.engine.dialect.name != "postgresql":
            return None
        async with self.engine.connect() as conn:
            if (await conn.execute(sa.text("SELECT to_regclass('procrastinate_workers')"))).scalar() is None:
                return None
            q = sa.text("SELECT count(*) FROM procrastinate_workers WHERE last_heartbeat > now() - make_interval(secs => :s)")
            return int((await conn.execute(q, {"s": within_s})).scalar_one())

    async def orphans(self, *, queued_for_s: float = 60.0, limit: int = 100) -> list[str]:
        """Jobs nobody is running: running with a lapsed lease (its worker died), or queued for a while
        (the message that should have started it was lost, e.g. an in-process engine that restarted)."""
        now = datetime.now(UTC)
        q = (
            sa.select(jobs.c.id)
            .where(
                sa.or_(
                    sa.and_(jobs.c.status == "running", jobs.c.lease_until < now),
                    sa.and_(
                        jobs.c.status == "queued",
                        jobs.c.created_at < now - timedelta(seconds=queued_for_s),
                        sa.or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < now),
                    ),
                )
            )
            .order_by(jobs.c.created_at)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [r[0] for r in (await conn.execute(q)).all()]


class Lease:
    """A worker's hold on one job (see the module docstring)."""

    def __init__(self, store: JobStore, job: Job, worker: str) -> None:
        self.store = store
        self.job = job
        self.worker = worker

    async def progress(self, *, done: int, total: int | None = None) -> None:
        """Record how far the job got and renew the lease; raises `Cancelled` or `LeaseLost`."""
        now = datetime.now(UTC)
        values: dict[str, Any] = {"done": done, "lease_until": now + timedelta(seconds=self.store.lease_s)}
        if total is not None:
            values["total"] = total
        async with write_transaction(self.store.engine) as conn:
            result = await conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == self.job.id, jobs.c.lease_owner == self.worker, jobs.c.status == "running")
                .values(**values)
                .returning(jobs.c.cancel_requested)
            )
            row = result.first()
        if row is None:
            raise LeaseLost(self.job.id)
        if row[0]:
            await self._end("cancelled", None, None)
            raise Cancelled(self.job.id)

    async def finish(self, counts: dict[str, int], *, done: int | None = None) -> None:
        await self._end("finished", counts, None, done=done)

    async def fail(self, error: str) -> None:
        await self._end("failed", None, error[:2000])

    async def _end(self, status: str, counts: dict[str, int] | None, error: str | None, *, done: int | None = None) -> None:
        values: dict[str, Any] = {
            "status": status,
            "finished_at": datetime.now(UTC),
            "lease_until": None,
            "counts": counts,
            "error": error,
        }
        if done is not None:
            values["done"] = done
        async with write_transaction(self.store.engine) as conn:
            await conn.execute(
                sa.update(jobs).where(jobs.c.id == self.job.id, jobs.c.lease_owner == self.worker).values(**values)
            )
