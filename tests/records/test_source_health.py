"""The sources' health history: counts per 5-minute bucket that every instance sums into one database, the
availability bars and incidents read back from it, and the runner counting every call that ends (issue 14).

Time is a FakeClock the test moves: no sleeps. Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.config import HealthConfig
from aggregator.models import Department, ErrorKind, Mode, Outcome, SourceResult
from aggregator.records import RecordStore
from aggregator.records.source_health import HealthHistory, HealthLog, percentile
from aggregator.resilience import BreakerRegistry, LimiterRegistry
from aggregator.runner import Runner
from tests.adapters.test_runner import Q, Site, TwoStepAdapter, make_source, site  # noqa: F401 - site: a fixture
from tests.helpers import FakeClock

START = datetime(2026, 11, 25, 8, 0, tzinfo=UTC).timestamp()  # 16:00 Beijing time
MIN = 60


def call(outcome: str, ms: float = 40.0, source: str = "mem_api") -> SourceResult:
    """A finished call: found / not_found, or an error kind (unavailable)."""
    if outcome in ("found", "not_found"):
        return SourceResult(source=source, department=Department.MEM, mode=Mode.API, outcome=Outcome(outcome),
                            elapsed_ms=ms)
    return SourceResult(source=source, department=Department.MEM, mode=Mode.API, outcome=Outcome.UNAVAILABLE,
                        error_kind=ErrorKind(outcome), elapsed_ms=ms)


@asynccontextmanager
async def another_instance(store: RecordStore) -> AsyncIterator[AsyncEngine]:
    """A second engine (another gateway instance) on the same database as `store`."""
    url = store.engine.url.render_as_string(hide_password=False)
    args = None
    if store.engine.dialect.name == "postgresql":
        async with store.engine.connect() as conn:
            path = (await conn.execute(sa.text("SHOW search_path"))).scalar()
        args = {"server_settings": {"search_path": str(path)}}
    other = await RecordStore.open(url, connect_args=args)
    try:
        yield other.engine
    finally:
        await other.close()


async def test_two_instances_flushing_into_one_database_combine_counts_and_percentiles(store) -> None:
    clock = FakeClock(START)
    async with another_instance(store) as engine_b:
        a, b = HealthLog(store.engine, clock=clock), HealthLog(engine_b, clock=clock)
        for _ in range(10):
            a.record(call("found", 40))
            b.record(call("not_found", 900))
        a.record(call("timeout", 5000))
        b.record(call("circuit_open", 0.1), opened=False)
        b.record(call("upstream_error", 120), opened=True)
        assert await a.flush() == 1 and await b.flush() == 1
        a.record(call("found", 40))  # the same bucket again: added to the row, not replacing it
        await a.flush()
        a.record(call("found", 40))  # the next bucket
        clock.advance(5 * MIN)
        a.record(call("found", 40))
        await a.flush()

    view = (await HealthHistory(store.engine).overview(["mem_api"], now=clock.now))["mem_api"]
    day = view.windows[0]
    assert day.window == "24h"
    assert day.calls == 26
    assert day.outcomes == {"found": 13, "not_found": 10, "timeout": 1, "circuit_open": 1, "upstream_error": 1}
    assert day.openings == 1
    assert day.availability == round(23 / 26, 4)
    # p50 / p95 of all 25 timed calls together (13 at 40 ms, 1 at 120, 10 at 900, 1 at 5 s): the median is one of
    # the 40 ms calls, the 95th percentile one of the 900 ms ones. Neither instance alone would say so.
    assert 25 <= day.p50_ms <= 50
    assert 750 <= day.p95_ms <= 1000


def test_percentiles_come_from_the_histogram_buckets() -> None:
    histogram = [0] * 15
    histogram[2] = 50  # 50-100 ms
    histogram[7] = 50  # 750-1000 ms
    assert percentile(histogram, 50) == 100.0
    assert 750 < percentile(histogram, 95) <= 1000
    assert percentile([0] * 15, 50) is None


async def test_incidents_are_runs_of_down_buckets_that_a_bucket_without_calls_does_not_end(store) -> None:
    clock = FakeClock(START)
    log = HealthLog(store.engine, clock=clock)

    def bucket(*outcomes: str) -> None:
        for o in outcomes:
            log.record(call(o))
        clock.advance(5 * MIN)

    bucket("found", "found")  # 08:00 up
    bucket("timeout", "timeout")  # 08:05 down
    bucket("timeout", "found")  # 08:10 half answered: not below 0.5, so up; it ends the run: 5 min, too short
    bucket("captcha", "captcha")  # 08:15 down
    bucket("captcha", "found", "captcha")  # 08:20 down (1/3 answered)
    clock.advance(20 * MIN)  # 08:25 - 08:45 no calls: the run goes on
    bucket("blocked")  # 08:45 down
    bucket("rate_limited", "rate_limited")  # 08:50 rate limited only: neither up nor down
    bucket("found")  # 08:55 up: the run 08:15 - 08:50 ended
    bucket("upstream_error")  # 09:00 down: an incident still going on ...
    bucket("upstream_error", "upstream_error")  # 09:05
    log.record(call("upstream_error"))  # 09:10, now: 09:12
    clock.advance(2 * MIN)
    await log.flush()

    history = HealthHistory(store.engine, HealthConfig(incident_min_minutes=10))
    view = (await history.overview(["mem_api"], now=clock.now))["mem_api"]

    newest, older = view.incidents  # newest first; the 5 minutes at 08:05 are too short to be one
    at = datetime.fromtimestamp
    assert (newest.start, newest.ongoing, newest.error_kind) == (at(START + 60 * MIN, UTC), True, "upstream_error")
    assert newest.minutes == 12
    assert (older.start, older.end) == (at(START + 15 * MIN, UTC), at(START + 50 * MIN, UTC))
    assert (older.minutes, older.ongoing, older.error_kind) == (35, False, "captcha")
    assert older.kinds == {"captcha": 4, "blocked": 1} and older.answered == 1
    assert view.state == "down"


async def test_the_history_after_simulated_outages_through_the_runner(store, site) -> None:  # noqa: F811
    """The runner counts every call it ends; a one-hour outage of a real local site is one incident of
    upstream errors with its circuit openings, a five-minute blip is not, and the bars show both."""
    fake_site, base = site
    mono, wall = FakeClock(), FakeClock(START)
    log = HealthLog(store.engine, clock=wall)
    source = make_source(base, id="mem_api")
    adapter = TwoStepAdapter(base)
    runner = Runner(breakers=BreakerRegistry.memory(clock=mono), limiters=LimiterRegistry.memory(), health=log)

    async def slot(calls: int = 1) -> list[SourceResult]:
        """`calls` lookups now, then five minutes pass."""
        out = [await runner.run(source, adapter, Q, deadline=_soon()) for _ in range(calls)]
        mono.advance(5 * MIN)
        wall.advance(5 * MIN)
        return out

    try:
        for _ in range(24):  # 08:00 - 10:00 healthy
            assert (await slot())[0].outcome == Outcome.FOUND
        fake_site.always["/person"] = "502"  # 10:00 - 11:00 down: two lookups every five minutes
        outage = [r for _ in range(12) for r in await slot(2)]
        del fake_site.always["/person"]
        for _ in range(24):  # 11:00 - 13:00 healthy again (the first call is the probe that closes the circuit)
            assert (await slot())[0].outcome == Outcome.FOUND
        fake_site.always["/person"] = "502"  # 13:00 a five-minute blip: two failures, the circuit stays closed
        await slot(2)
        del fake_site.always["/person"]
        for _ in range(3):
            await slot()
        await log.flush()
    finally:
        await runner.close()

    kinds = [r.error_kind for r in outage]
    assert set(kinds) == {ErrorKind.UPSTREAM_ERROR, ErrorKind.CIRCUIT_OPEN}
    view = (await HealthHistory(store.engine).overview(["mem_api"], now=wall.now))["mem_api"]

    (incident,) = view.incidents
    assert incident.start == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert incident.end == datetime(2026, 11, 25, 11, 0, tzinfo=UTC)
    assert (incident.minutes, incident.error_kind, incident.ongoing) == (60, "upstream_error", False)
    assert incident.kinds == {"upstream_error": kinds.count(ErrorKind.UPSTREAM_ERROR),
                              "circuit_open": kinds.count(ErrorKind.CIRCUIT_OPEN)}

    day = view.windows[0]
    by_hour = {bar.start.hour: bar for bar in day.bars if bar.calls}
    assert [h for h, bar in sorted(by_hour.items()) if bar.availability == 1.0] == [8, 9, 11, 12]
    assert by_hour[10].availability == 0.0 and by_hour[10].openings >= 1
    assert by_hour[13].availability == 0.6  # 3 of 5 answered
    assert day.openings == by_hour[10].openings  # the blip did not open the circuit
    assert day.calls == 24 + 24 + 24 + 2 + 3
    assert view.state == "up"
    month = view.windows[1]
    assert month.window == "30d" and len(month.bars) == 30
    (today,) = [bar for bar in month.bars if bar.calls]
    assert today.calls == day.calls and today.failed == 24 + 2


def _soon() -> float:
    import time

    return time.monotonic() + 5.0


async def test_a_database_that_cannot_be_written_keeps_the_counts_for_the_next_flush(store, tmp_path) -> None:
    clock = FakeClock(START)
    broken = RecordStore(sa.ext.asyncio.create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/no/such/dir/x.db"))
    log = HealthLog(broken.engine, clock=clock)
    log.record(call("found"))
    assert await log.flush() == 0  # logged, not raised
    log.engine = store.engine  # the database is back
    assert await log.flush() == 1
    view = (await HealthHistory(store.engine).overview(["mem_api"], now=clock.now))["mem_api"]
    assert view.windows[0].calls == 1
    await broken.close()
