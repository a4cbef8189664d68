"""Lookups go on while Redis is killed and restarted under them, and use the cache again once it is back.

Runs a redis-server of its own on a free port (tests/redis_server.py); the shared 6379 is never touched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from aggregator.cache import SourceCache
from aggregator.models import Outcome, Query, SourceResult
from tests.core.test_cache import make_source, result
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow

NUMBERS = [f"T11010519900307{i:04d}" for i in range(8)]


@pytest.fixture
def server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CERTQ_REQUIRE_SERVICES") == "1":
            pytest.fail("redis-server is not on PATH but CERTQ_REQUIRE_SERVICES=1")
        pytest.skip("redis-server is not installed")
    with RedisServer() as s:
        yield s


async def eventually(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"never happened within {timeout_s} s: {what}")


async def test_lookups_survive_a_redis_crash_and_use_the_cache_again_after_restart(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aggregator.cache")
    cache = SourceCache.from_url(server.url, prefix="outage-test")
    src = make_source()
    upstream_calls: Counter[str] = Counter()
    answered: list[SourceResult] = []
    wrong: list[str] = []

    def source_for(number: str) -> Callable[[], object]:
        async def call() -> SourceResult:
            upstream_calls[number] += 1
            return result(Outcome.FOUND, number=number)

        return call

    async def lookups() -> None:
        while True:
            for number in NUMBERS:
                r = await cache.fetch(src, Query(number=number), source_for(number))
                if r.outcome != Outcome.FOUND or r.certificates[0].number != number:
                    wrong.append(f"{number}: {r.outcome} {r.certificates}")
                answered.append(r)
                await asyncio.sleep(0.002)

    runner = asyncio.create_task(lookups())
    try:
        await eventually(lambda: cache.stats()["hits"] >= 50, "cache hits while Redis is up")
        assert cache.stats()["outages"] == 0

        server.kill()
        calls_at_kill, answered_at_kill = upstream_calls.total(), len(answered)
        # Keep looking up through several back-off rounds: every retry fails, still one outage.
        await eventually(lambda: cache.stats()["backend_errors"] >= 3, "repeated Redis errors during the outage")
        await eventually(lambda: len(answered) >= answered_at_kill + 200, "lookups answered during the outage")
        # Answers are kept in process meanwhile: each number is asked of the source once, not on every lookup.
        assert upstream_calls.total() <= calls_at_kill + len(NUMBERS)
        assert cache.stats()["outages"] == 1
        assert not runner.done(), "a Redis outage must never reach the caller"

        server.start()  # same port, empty data set
        await eventually(
            lambda: any("answers again" in r.getMessage() for r in caplog.records), "the cache noticing Redis is back"
        )
        hits_at_restart = cache.stats()["hits"]
        await eventually(lambda: cache.stats()["hits"] >= hits_at_restart + 50, "cache hits after Redis is back")
        calls_when_warm = upstream_calls.total()
        await eventually(lambda: cache.stats()["hits"] >= hits_at_restart + 150, "more hits")
        assert upstream_calls.total() == calls_when_warm, "with Redis back, a warm cache asks the source no more"
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await cache.close()

    assert not wrong
    assert runner.cancelled(), f"the lookup loop ended by itself: {runner}"
    stats = cache.stats()
    assert stats["outages"] == 1
    warnings = [r for r in caplog.records if r.name == "aggregator.cache" and r.levelno == logging.WARNING]
    recoveries = [r for r in caplog.records if r.name == "aggregator.cache" and "answers again" in r.getMessage()]
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()
    assert len(recoveries) == 1
