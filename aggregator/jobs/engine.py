"""The job engine: Procrastinate delivers job ids to workers; certq's `jobs` table holds everything else.

    engine = JobEngine(JobStore(db), database_url=url)
    engine.handler("roster_verify")(verify_roster)      # async (lease) -> counts
    engine.on_tick(monitoring.schedule)                  # periodic work, once per tick across all workers
    await engine.open()
    await engine.submit(job)                             # from a request: defer, never run inline
    await engine.run_worker(concurrency=4)               # `certq worker`, or in-process under `certq serve`

Why Procrastinate: it keeps its queue in PostgreSQL, which is certq's scale-out store already (no broker to run),
is asyncio-native, deduplicates periodic tasks in the database (a tick runs once per period however many workers
run) and has queueing locks (a job is queued at most once). On the embedded default (SQLite) the same tasks run
on Procrastinate's in-memory connector inside the serving process: nothing to install, and since a job's state,
progress and per-unit results are in certq's own tables, a restart loses only the in-memory queue, which the
tick rebuilds (`JobStore.orphans`).

A worker runs a job only while it holds the job's lease (`JobStore.claim`); a worker killed mid-job stops
renewing it, and the next tick after the lease runs out queues the job again for any worker, which carries on
from the results already stored. The tick also runs the registered periodic work (monitoring's scheduler).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from itertools import count
from typing import Any

import procrastinate
import sqlalchemy as sa
from procrastinate import exceptions as pexc
from procrastinate.testing import InMemoryConnector

from aggregator.errors import describe
from aggregator.jobs.config import JobsConfig
from aggregator.jobs.store import JobInterrupted, JobStore, Lease

log = logging.getLogger(__name__)

Handler = Callable[[Lease], Awaitable[dict[str, int]]]
TickHook = Callable[[], Awaitable[None]]

QUEUE = "certq"
# (LOCK_CLASS, 1) of aggregator.records.database: applying Procrastinate's schema once, whoever starts first
_SCHEMA_LOCK = (7345, 1)
_names = count(1)


def procrastinate_conninfo(database_url: str) -> str | None:
    """The libpq address of a PostgreSQL database URL (None for SQLite: the in-memory connector)."""
    url = sa.engine.make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class JobEngine:
    def __init__(
        self, jobs: JobStore, *, database_url: str, name: str | None = None, config: JobsConfig | None = None
    ) -> None:
        self.jobs = jobs
        self.config = config or JobsConfig.from_env()
        self.conninfo = procrastinate_conninfo(database_url)
        self.distributed = self.conninfo is not None
        connector: Any = (
            procrastinate.PsycopgConnector(conninfo=self.conninfo)
            if self.conninfo
            else InMemoryConnector()
        )
        self.app = procrastinate.App(connector=connector)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{next(_names)}"
        self.handlers: dict[str, Handler] = {}
        self.tick_hooks: list[TickHook] = []
        self._opened = False

        @self.app.task(name="certq.run_job", queue=QUEUE, pass_context=False)
        async def run_job(job_id: str) -> None:
            await self.run(job_id)

        @self.app.periodic(cron=self.config.tick_cron)  # recovery of orphaned jobs, then the periodic work
        @self.app.task(name="certq.tick", queue=QUEUE, queueing_lock="certq.tick", pass_context=False)
        async def tick(timestamp: int) -> None:
            await self.tick()

        self._run_job = run_job

    # --- set-up -----------------------------------------------------------------------------------

    def handler(self, kind: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.handlers[kind] = fn
            return fn

        return register

    def on_tick(self, hook: TickHook) -> TickHook:
        self.tick_hooks.append(hook)
        return hook

    async def open(self) -> JobEngine:
        if self._opened:
            return self
        await self.app.open_async()
        self._opened = True
        if self.distributed:
            await self._apply_schema()
        return self

    async def close(self) -> None:
        if self._opened:
            self._opened = False
            await self.app.close_async()

    async def _apply_schema(self) -> None:
        """Procrastinate's tables, once per database (an advisory lock serialises workers starting together)."""
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
            await conn.execute("SELECT pg_advisory_lock(%s, %s)", _SCHEMA_LOCK)
            try:
                cur = await conn.execute("SELECT to_regclass('procrastinate_jobs')")
                row = await cur.fetchone()
                if row is None or row[0] is None:
                    await self.app.schema_manager.apply_schema_async()
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s, %s)", _SCHEMA_LOCK)

    # --- use --------------------------------------------------------------------------------------

    async def submit(self, job_id: str) -> None:
        """Queue a job for any worker (at most once: a job already waiting is not queued twice)."""
        try:
            await self._run_job.configure(queueing_lock=f"job:{job_id}").defer_async(job_id=job_id)
        except pexc.AlreadyEnqueued:
            pass

    async def run_worker(self, *, concurrency: int = 4, wait: bool = True, install_signal_handlers: bool = True) -> None:
        await self.app.run_worker_async(
            queues=[QUEUE],
            concurrency=concurrency,
            wait=wait,
            name=self.name,
            install_signal_handlers=install_signal_handlers,
            fetch_job_polling_interval=1.0 if self.distributed else 0.5,
            abort_job_polling_interval=5.0,
            shutdown_graceful_timeout=10.0,
            delete_jobs="successful",
        )

    async def run(self, job_id: str) -> None:
        """Run one job if this worker can take it (see `JobStore.claim`)."""
        lease = await self.jobs.claim(job_id, worker=self.name)
        if lease is None:
            return
        handler = self.handlers.get(lease.job.kind)
        if handler is None:
            await lease.fail(f"no handler for jobs of kind {lease.job.kind!r} in this worker")
            return
        try:
            counts = await handler(lease)
        except JobInterrupted:
            return
        except asyncio.CancelledError:
            raise  # the worker is stopping: the lease runs out and another worker carries on
        except Exception as e:  # noqa: BLE001 - a job fails with its reason; the worker goes on
            log.exception("job %s (%s) failed", job_id, lease.job.kind)
            await lease.fail(describe(e).text)
            return
        await lease.finish(counts)

    async def tick(self) -> None:
        """Queue again the jobs nobody runs (a dead worker's, a lost message's), then the periodic work."""
        for job_id in await self.jobs.orphans():
            log.info("job %s has no live worker: queued again", job_id)
            await self.submit(job_id)
        for hook in self.tick_hooks:
            try:
                await hook()
            except Exception:  # noqa: BLE001 - one failing hook must not stop the others or the recovery
                log.exception("periodic work %s failed", getattr(hook, "__qualname__", hook))
