"""Long-running work as the roles may start it, and the assembly of the job engine that runs it.

    engine = build_engine(services, database_url=url)    # every handler and periodic hook a worker has
    services.work = Work(services, engine)
    job = await services.work.start_roster_run(principal, roster_id)
    job = await services.work.job_for(principal, job_id)   # the owner's organisation only (else None: a 404)

`certq worker` runs `engine.run_worker()`; `certq serve` and `certq demo` on the embedded default (SQLite) run it
in-process (see `aggregator.jobs.engine`). Add a kind of job or a periodic hook here, in `build_engine`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from aggregator.jobs import Job, JobEngine, JobStore

if TYPE_CHECKING:
    from aggregator.web.config import WebConfig
    from aggregator.web.roles import Principal
    from aggregator.web.services import Services

log = logging.getLogger(__name__)


def build_engine(services: Services, *, database_url: str, lease_s: float | None = None) -> JobEngine:
    """The job engine with every handler and periodic hook certq has."""
    from aggregator.web.services.campaigns import runs as campaign_runs
    from aggregator.web.services.monitoring import Monitoring
    from aggregator.web.services.roster_runs import RosterRuns

    jobs = JobStore(services.gateway.store.engine, **({"lease_s": lease_s} if lease_s else {}))
    engine = JobEngine(jobs, database_url=database_url)
    runs = RosterRuns(services, jobs, engine.config)
    engine.handler("roster_verify")(runs.run)
    monitoring = Monitoring(services, engine)
    engine.handler("monitor_batch")(monitoring.run_batch)
    engine.on_tick(monitoring.tick)
    # --- webhooks (issue 11): register the dispatcher's tick hook here -------------------------------
    engine.on_tick(services.webhooks.dispatcher().tick)
    # --- campaigns (issue 14): register the "campaign_run" handler here -----------------------------
    engine.handler("campaign_run")(campaign_runs(services).run)
    return engine


class Work:
    """Starting, reading and cancelling jobs as a principal may."""

    def __init__(self, services: Services, running: RunningWork) -> None:
        self.services = services
        self.running = running
        self.jobs = running.engine.jobs

    async def start(
        self, principal: Principal, kind: str, *, subject: str | None, params: dict | None = None, total: int = 0
    ) -> Job:
        job = await self.jobs.create(
            kind,
            organisation=principal.label or "",
            created_by=principal.key_id or "",
            subject=subject,
            params=params,
            total=total,
        )
        engine = await self.running.ensure_open()
        await engine.submit(job.id)
        return job

    async def start_roster_run(self, principal: Principal, roster_id: str) -> Job:
        """Verify every member of a roster (the caller has checked that the roster is the principal's)."""
        from aggregator.web.services.roster_runs import count_members

        total = await count_members(self.services.gateway.store.engine, roster_id)
        return await self.start(principal, "roster_verify", subject=roster_id, total=total)

    async def job_for(self, principal: Principal, job_id: str) -> Job | None:
        job = await self.jobs.get(job_id)
        if job is None or job.organisation != (principal.label or "") or principal.key_id is None:
            return None
        return job

    async def cancel(self, principal: Principal, job_id: str) -> Job | None:
        job = await self.job_for(principal, job_id)
        if job is None:
            return None
        return await self.jobs.cancel(job_id)


class RunningWork:
    """The job engine of one serving process: opened on first use, and a worker inside it when asked."""

    def __init__(self, services: Services, *, in_process: bool, concurrency: int) -> None:
        self.services = services
        url = services.gateway.store.engine.url.render_as_string(hide_password=False)
        self.engine = build_engine(services, database_url=url)
        self.in_process = in_process
        self.concurrency = concurrency
        self._worker: asyncio.Task[None] | None = None
        self._opening: asyncio.Lock = asyncio.Lock()
        self._open = False
        self.starting: asyncio.Task[JobEngine] | None = None

    async def ensure_open(self) -> JobEngine:
        async with self._opening:
            if not self._open:
                await self.engine.open()
                self._open = True
                if self.in_process:
                    self._worker = asyncio.create_task(
                        self.engine.run_worker(concurrency=self.concurrency, install_signal_handlers=False),
                        name="certq-jobs",
                    )
        return self.engine

    async def stop(self) -> None:
        if self.starting is not None and not self.starting.done():
            self.starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.starting
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._worker
            self._worker = None
        if self._open:
            self._open = False
            await self.engine.close()


def start_work(services: Services, web: WebConfig) -> RunningWork:
    """The app's job engine (`services.work`); on the embedded default its worker starts with the app."""
    distributed = services.gateway.store.engine.dialect.name == "postgresql"
    in_process = (not distributed) if web.jobs_in_process is None else web.jobs_in_process
    running = RunningWork(services, in_process=in_process, concurrency=web.job_concurrency)
    services.work = Work(services, running)
    if in_process:
        running.starting = asyncio.get_running_loop().create_task(running.ensure_open())
        running.starting.add_done_callback(_report_failure)
    return running


def _report_failure(task: asyncio.Task[JobEngine]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the in-process job engine did not start: %s", task.exception())
