"""Running a campaign: the job that checks every sampled certificate (kind "campaign_run", subject = campaign id).

    runs = CampaignRuns(gateway, CampaignStore(engine), audit=AuditLog(engine))
    engine.handler("campaign_run")(runs.run)        # (see aggregator/web/services/work.py)

The job reads the items not checked yet, checks up to `IN_FLIGHT` at a time (each source's own concurrency cap
bounds what reaches it, and its rate limit paces it), and every second or so writes what is done: first one
audit entry per checked certificate (action lookup, under the job's id, by the key that started the run), then
the results, then the job's progress (which renews its lease, and raises when the job was cancelled or taken
over). A worker that dies loses only the results not yet written; whoever takes the job over carries on with
the items that have none. The counts at the end are the items' outcomes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from aggregator.audit.entry import AuditEntry, CliActor
from aggregator.campaigns.checks import OUTCOMES, Checker, CheckResult
from aggregator.campaigns.store import CampaignStore, Item
from aggregator.jobs import Lease

if TYPE_CHECKING:
    from aggregator.audit import AuditLog
    from aggregator.gateway import Gateway

log = logging.getLogger(__name__)

IN_FLIGHT = 48  # items being checked at once (each asks 1-5 sources)
BATCH = 500  # items read from the database at a time
FLUSH_S = 1.0  # how often results are written (and the lease renewed)


class CampaignRuns:
    def __init__(
        self,
        gateway: Gateway,
        store: CampaignStore,
        *,
        audit: AuditLog | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        in_flight: int = IN_FLIGHT,
    ) -> None:
        self.gateway = gateway
        self.store = store
        self.audit = audit
        self.on_progress = on_progress  # (done, total) after each write: the CLI's progress bar
        self.in_flight = in_flight

    async def run(self, lease: Lease) -> dict[str, int]:
        campaign_id = lease.job.subject or ""
        campaign = await self.store.get(campaign_id)
        if campaign is None:
            raise LookupError(f"campaign {campaign_id} does not exist")
        total, done = await self.store.progress(campaign_id)
        await lease.progress(done=done, total=total)
        checker = Checker(self.gateway)
        actor = CliActor(key_id=lease.job.created_by or None, role=campaign.created_role)
        purpose = f"抽查 {campaign.name}"[:500]
        while True:
            pending = await self.store.pending(campaign_id, limit=BATCH)
            if not pending:
                break
            done = await self._batch(lease, checker, pending, done, total, actor, purpose)
        return await self.counts(campaign_id)

    async def counts(self, campaign_id: str) -> dict[str, int]:
        counts: Counter[str] = Counter({o: 0 for o in OUTCOMES})
        for item in await self.store.items(campaign_id):
            if item.outcome:
                counts[item.outcome] += 1
                counts["discrepancies"] += len((item.result or {}).get("discrepancies", []))
        return dict(counts)

    async def _batch(
        self,
        lease: Lease,
        checker: Checker,
        pending: list[Item],
        done: int,
        total: int,
        actor: CliActor,
        purpose: str,
    ) -> int:
        slots = asyncio.Semaphore(self.in_flight)
        finished: list[tuple[Item, CheckResult]] = []

        async def one(item: Item) -> None:
            async with slots:
                result = await checker.check(item.department, item.number, item.holder_id_number, item.upload)
            finished.append((item, result))

        tasks = [asyncio.create_task(one(i)) for i in pending]
        try:
            waiting: set[asyncio.Task[None]] = set(tasks)
            while waiting:
                _, waiting = await asyncio.wait(waiting, timeout=FLUSH_S)
                for t in tasks:
                    if t.done() and not t.cancelled() and t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
                if finished:
                    ready, finished[:] = list(finished), []
                    done += await self._write(lease, ready, actor, purpose)
                    await lease.progress(done=done, total=total)
                    if self.on_progress is not None:
                        self.on_progress(done, total)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return done

    async def _write(self, lease: Lease, ready: list[tuple[Item, CheckResult]], actor: CliActor, purpose: str) -> int:
        if self.audit is not None:
            await self.audit.write(
                [
                    AuditEntry.now(
                        actor,
                        action="lookup",
                        number=item.number,
                        name_given=False,
                        id_number_given=bool(item.holder_id_number),
                        verdict=None,
                        purpose=purpose,
                        client_ip=None,
                        holder_id_number=item.holder_id_number,
                        job_id=lease.job.id,
                    )
                    for item, _ in ready
                ]
            )
        return await self.store.save(lease.job.subject or "", [(item.seq, result) for item, result in ready])

