"""Roster runs and monitoring on the job engine, against the sandbox: every member gets exactly one result, a
revoked card is exactly one event, and the first check is a baseline."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from aggregator.gateway import Gateway
from aggregator.models import CertStatus, Department
from aggregator.records import RecordStore
from aggregator.records.schema import jobs, roster_events, roster_members, roster_results, rosters
from aggregator.rosters.schedule import start_monitoring
from aggregator.sandbox.dataset import generate, write_upload_csv
from aggregator.sandbox.server import Sandbox
from aggregator.web.config import WebConfig
from aggregator.web.metrics import Metrics
from aggregator.web.roles import Principal, Role
from aggregator.web.services import Services
from aggregator.web.services.monitoring import Monitoring
from aggregator.web.services.work import RunningWork, Work
from tests.core.test_gateway import fast_settings

TODAY = date(2026, 11, 25)
DATASET = generate(seed=11, holders=120, today=TODAY)
ORG = "某建设集团 人事部"
EMPLOYER = Principal(Role.EMPLOYER, key_id="k-roster-test", label=ORG)


def mem_cards(n: int):
    """Valid MEM cards the upload and the live site agree on."""
    uploaded = {c.number: c for c in DATASET.uploaded[Department.MEM]}
    out = []
    for c in DATASET.live[Department.MEM]:
        u = uploaded.get(c.number)
        if u is None or c.status != CertStatus.VALID or u.status != CertStatus.VALID:
            continue
        if c.number in DATASET.differences or any(k.startswith(c.number) for k in DATASET.differences):
            continue
        if c.valid_until is None or c.valid_until <= date(2027, 6, 1):
            continue
        out.append(c)
        if len(out) == n:
            break
    assert len(out) == n
    return out


@pytest.fixture
async def db_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'certq.sqlite3'}"
    store = await RecordStore.open(url)
    for dept in Department:
        path = write_upload_csv(DATASET, dept, tmp_path / f"{dept.value}.csv")
        await store.import_file(path, department=dept, quarter=DATASET.upload_quarter, uploaded_by="test")
    await store.close()
    return url


@pytest.fixture
async def sandbox():
    async with Sandbox(DATASET) as sb:
        yield sb


@pytest.fixture
async def work(settings, sandbox, db_url):
    async with await Gateway.open(
        fast_settings(settings, sandbox), database_url=db_url, redis_url="", today=lambda: TODAY
    ) as gw:
        services = Services.on(gw, config=WebConfig(), metrics=Metrics())
        running = RunningWork(services, in_process=True, concurrency=2)
        services.work = Work(services, running)
        await running.ensure_open()
        try:
            yield services
        finally:
            await running.stop()


async def make_roster(engine, cards, *, roster_id: str = "r1") -> None:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(rosters).values(
                id=roster_id, organisation=ORG, name="一标段", created_by=EMPLOYER.key_id, created_at=now,
                expiry_warn_days=[90, 30, 7],
            )
        )
        await conn.execute(
            sa.insert(roster_members),
            [
                {"roster_id": roster_id, "ref": f"E{i:04d}", "number": c.number, "name": c.holder_name,
                 "id_number": None, "team": "电气班", "added_at": now}
                for i, c in enumerate(cards)
            ],
        )


async def wait_finished(services, job_id: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = await services.work.jobs.get(job_id)
        if job.status in ("finished", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout} s")


async def test_a_roster_run_verifies_every_member_once_on_the_in_process_engine(work) -> None:
    engine = work.gateway.store.engine
    cards = mem_cards(12)
    await make_roster(engine, cards)
    job = await work.work.start_roster_run(EMPLOYER, "r1")
    assert job.total == 12 and job.status == "queued"
    job = await wait_finished(work, job.id)
    assert job.status == "finished", job.error
    assert job.done == 12 and job.counts == {"valid": 12}
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(roster_results).where(roster_results.c.job_id == job.id))).all()
    assert len(rows) == 12
    async with engine.connect() as conn:
        number_of = dict((await conn.execute(sa.select(roster_members.c.id, roster_members.c.number))).all())
    for r in rows:
        assert r.verdict == "valid" and r.outcome == "definitive"
        assert r.result["name_matches"] is True
        assert number_of[r.member_id] in {c["number"] for c in r.result["certificates"]}
        assert r.result["days_to_expiry"] > 0
    # the run is one audit action, its lookups are filed under the job
    entries = await work.audit.read(limit=100)
    assert [e.action for e in entries].count("roster_run") == 1
    assert all(e.job_id == job.id for e in entries if e.action == "verification")


async def test_a_job_taken_over_after_its_worker_died_counts_each_member_once(work) -> None:
    engine = work.gateway.store.engine
    await make_roster(engine, mem_cards(8))
    jobs_store = work.work.jobs
    job = await jobs_store.create("roster_verify", organisation=ORG, created_by=EMPLOYER.key_id, subject="r1", total=8)
    # a first worker claims it, stores three results, then dies (its lease runs out)
    lease = await jobs_store.claim(job.id, worker="dead-worker")
    async with engine.connect() as conn:
        first = (await conn.execute(sa.select(roster_members).order_by(roster_members.c.id).limit(3))).all()
    runs = work.work.running.engine.handlers["roster_verify"].__self__
    results = await runs.verify_members(EMPLOYER, first, job_id=job.id)
    from aggregator.web.services.roster_runs import member_result

    async with engine.begin() as conn:
        for m, r in results:
            verdict, outcome, result = member_result(r, TODAY)
            await conn.execute(
                sa.insert(roster_results).values(
                    job_id=job.id, member_id=m.id, verdict=verdict, outcome=outcome, result=result,
                    checked_at=datetime.now(UTC),
                )
            )
        await conn.execute(sa.update(jobs).where(jobs.c.id == job.id).values(lease_until=datetime(2000, 1, 1, tzinfo=UTC)))
    assert lease is not None
    # the tick finds the orphan and another worker finishes it
    await work.work.running.engine.tick()
    job = await wait_finished(work, job.id)
    assert job.status == "finished" and job.done == 8 and job.attempts == 2
    async with engine.connect() as conn:
        n = (await conn.execute(sa.select(sa.func.count()).select_from(roster_results).where(roster_results.c.job_id == job.id))).scalar_one()
    assert n == 8


async def test_cancelling_a_queued_job_stops_it_before_it_runs(work) -> None:
    jobs_store = work.work.jobs
    job = await jobs_store.create("roster_verify", organisation=ORG, created_by="k", subject="nope", total=0)
    cancelled = await work.work.cancel(EMPLOYER, job.id)
    assert cancelled.status == "cancelled"
    assert await jobs_store.claim(job.id, worker="w") is None
    other = Principal(Role.EMPLOYER, key_id="k2", label="另一家公司")
    assert await work.work.job_for(other, job.id) is None


async def test_monitoring_records_a_baseline_then_exactly_one_event_when_a_card_is_revoked(
    work, sandbox, aiohttp_receiver
) -> None:
    """... and the event reaches the employer's webhook once, signed as Standard Webhooks says."""
    from standardwebhooks import Webhook

    from aggregator.rosters.webhook_config import WebhookConfig
    from aggregator.web.services.webhooks import WebhookService

    engine = work.gateway.store.engine
    hooks = WebhookService(engine, work.audit, WebhookConfig(allow=("127.0.0.1/32",)))
    endpoint, secret = await hooks.create(EMPLOYER, url=aiohttp_receiver.url)
    cards = mem_cards(5)
    await make_roster(engine, cards)
    clock = [time.time()]
    engine_ = work.work.running.engine
    engine_.tick_hooks.clear()  # the test drives the scheduler with its own clock, not the engine's real ticks
    monitoring = Monitoring(work, engine_, clock=lambda: clock[0])
    await start_monitoring(engine, "r1", every_h=24, now=clock[0] - 24 * 3600)  # all due now

    async def cycle() -> list:
        started = await monitoring.tick()
        for job_id in started:
            job = await wait_finished(work, job_id)
            assert job.status == "finished", job.error
        return started

    assert len(await cycle()) == 1
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(roster_events))).scalar_one() == 0
        due = (await conn.execute(sa.select(roster_members.c.due_at))).scalars().all()
    assert all(d > clock[0] for d in due)  # each moved one period on
    assert await monitoring.tick() == []  # nothing due until then

    revoked = cards[2]
    assert sandbox.sites["mem"].set_status(revoked.number, CertStatus.REVOKED) >= 1
    await work.gateway.cache.purge()
    clock[0] += 24 * 3600 + 1
    assert len(await cycle()) == 1
    async with engine.connect() as conn:
        events = (await conn.execute(sa.select(roster_events))).all()
    assert [(e.type, e.number, e.old, e.new, e.member_ref) for e in events] == [
        ("status_changed", revoked.number, "valid", "revoked", "E0002")
    ]
    assert "id_number" not in events[0].detail

    await hooks.dispatcher().tick()
    await hooks.dispatcher().tick()  # nothing more to send
    assert len(aiohttp_receiver.received) == 1
    headers, body = aiohttp_receiver.received[0]
    payload = Webhook(secret).verify(body, headers)
    assert payload["type"] == "status_changed"
    data = payload["data"]
    assert (data["number"], data["department"], data["old"], data["new"], data["member_ref"]) == (
        revoked.number, "mem", "valid", "revoked", "E0002"
    )
    assert revoked.holder_name not in body.decode()


@pytest.fixture
async def aiohttp_receiver():
    """A webhook receiver on loopback that keeps what it was sent."""
    from aiohttp import web

    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(({k.lower(): v for k, v in request.headers.items()}, await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    class Receiver:
        url = f"http://127.0.0.1:{port}/hook"

    Receiver.received = received  # type: ignore[attr-defined]
    try:
        yield Receiver
    finally:
        await runner.cleanup()
