"""Circuit breakers and rate limiters behave the same in memory and in Redis, and survive Redis going away."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis

from aggregator.config import Circuit, RateLimit, SourceConfig
from aggregator.models import CertKind, Department, ErrorKind, Mode, Outcome, SourceResult
from aggregator.redisconn import client_from_url
from aggregator.resilience import (
    BreakerRegistry,
    CircuitState,
    LimiterRegistry,
    RedisHealth,
    ResilienceState,
    SourceStats,
)
from tests.helpers import FakeClock


def make_source(
    source_id: str = "t",
    *,
    threshold: int = 3,
    base: float = 10.0,
    cap: float = 40.0,
    per_second: float = 2.0,
    burst: int = 3,
) -> SourceConfig:
    return SourceConfig(
        id=source_id,
        name=source_id,
        department=Department.MEM,
        mode=Mode.API,
        adapter="test",
        kinds=[CertKind.MEM_SPECIAL_OPERATION],
        patterns=["*"],
        endpoint="http://127.0.0.1:9",
        timeout_s=5.0,
        circuit=Circuit(failure_threshold=threshold, base_backoff_s=base, max_backoff_s=cap),
        rate_limit=RateLimit(per_second=per_second, burst=burst),
    )


@dataclass
class Backend:
    """Factories for one backend, all on the same fake clock (and, for Redis, the same key prefix)."""

    name: str
    clock: FakeClock
    breakers: Callable[[], BreakerRegistry]
    limiters: Callable[[], LimiterRegistry]


async def _drop_prefix(client: Any, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    clock = FakeClock(1_000_000.0)
    if request.param == "memory":
        yield Backend(
            "memory", clock, lambda: BreakerRegistry.memory(clock=clock), lambda: LimiterRegistry.memory(clock=clock)
        )
        return
    url = request.getfixturevalue("redis_url")
    client = aioredis.Redis.from_url(url)
    prefix = f"certq-test-{uuid.uuid4().hex[:12]}"
    try:
        yield Backend(
            "redis",
            clock,
            lambda: BreakerRegistry.redis(client, prefix=prefix, clock=clock),
            lambda: LimiterRegistry.redis(client, prefix=prefix, clock=clock),
        )
    finally:
        await _drop_prefix(client, prefix)
        await client.aclose()


async def fail(breakers: BreakerRegistry, source: SourceConfig, times: int, *, suspend_s: float | None = None) -> None:
    for _ in range(times):
        permit = await breakers.allow(source)
        assert permit.allowed
        await breakers.failure(permit, suspend_s=suspend_s)


# --- Circuit breaker ------------------------------------------------------------------------------


async def test_breaker_stays_closed_below_the_threshold_and_a_success_resets_the_count(backend: Backend) -> None:
    breakers, source = backend.breakers(), make_source(threshold=3)
    await fail(breakers, source, 2)
    assert (await breakers.state("t")).consecutive_failures == 2
    permit = await breakers.allow(source)
    await breakers.success(permit)
    await fail(breakers, source, 2)
    state = await breakers.state("t")
    assert state.state == CircuitState.CLOSED
    assert state.consecutive_failures == 2


async def test_breaker_opens_after_threshold_failures_and_refuses_calls(backend: Backend) -> None:
    breakers, source = backend.breakers(), make_source(threshold=3, base=10)
    await fail(breakers, source, 3)
    state = await breakers.state("t")
    assert state.state == CircuitState.OPEN
    assert state.consecutive_failures == 3
    assert state.backoff_s == 10
    assert state.open_until == pytest.approx(backend.clock.now + 10)
    permit = await breakers.allow(source)
    assert not permit.allowed
    assert permit.retry_in_s == pytest.approx(10)
    backend.clock.advance(9.9)
    assert not (await breakers.allow(source)).allowed


async def test_half_open_lets_exactly_one_probe_through_when_many_ask_at_once(backend: Backend) -> None:
    breakers, source = backend.breakers(), make_source(threshold=1, base=10)
    await fail(breakers, source, 1)
    backend.clock.advance(10)
    assert (await breakers.state("t")).state == CircuitState.HALF_OPEN
    permits = await asyncio.gather(*(breakers.allow(source) for _ in range(20)))
    allowed = [p for p in permits if p.allowed]
    assert len(allowed) == 1
    assert allowed[0].probe
    assert (await breakers.state("t")).probe_in_flight


async def test_half_open_probe_is_exclusive_across_two_registries(backend: Backend) -> None:
    """Two gateway instances: with Redis they share one probe; in memory each process has its own state."""
    one, two, source = backend.breakers(), backend.breakers(), make_source(threshold=1, base=10)
    await fail(one, source, 1)
    backend.clock.advance(10)
    first = await one.allow(source)
    second = await two.allow(source)
    assert first.allowed and first.probe
    if backend.name == "redis":
        assert not second.allowed
    else:
        assert second.allowed  # separate processes without Redis do not share a breaker


async def test_a_good_probe_closes_the_breaker_and_resets_the_backoff(backend: Backend) -> None:
    breakers, source = backend.breakers(), make_source(threshold=2, base=10, cap=40)
    await fail(breakers, source, 2)
    backend.clock.advance(10)
    probe = await breakers.allow(source)
    await breakers.failure(probe)  # backoff 20
    backend.clock.advance(20)
    probe = await breakers.allow(source)
    assert probe.probe
    await breakers.success(probe)
    state = await breakers.state("t")
    assert state.state == CircuitState.CLOSED
    assert state.consecutive_failures == 0
    assert (await breakers.allow(source)).allowed
    await fail(breakers, source, 2)
    assert (await breakers.state("t")).backoff_s == 10  # reset to the base, not 40


async def test_a_bad_probe_reopens_with_a_doubled_backoff_capped_at_the_maximum(backend: Backend) -> None:
    breakers, source = backend.breakers(), make_source(threshold=1, base=10, cap=40)
    await fail(breakers, source, 1)
    seen = []
    for _ in range(4):
        backend.clock.advance((await breakers.state("t")).backoff_s)
        probe = await breakers.allow(source)
        assert probe.allowed and probe.probe
        await breakers.failure(probe)
        state = await breakers.state("t")
        assert state.state == CircuitState.OPEN
        assert state.open_until == pytest.approx(backend.clock.now + state.backoff_s)
        seen.append(state.backoff_s)
    assert seen == [20, 40, 40, 40]


async def test_a_suspend_hint_lengthens_the_open_period(backend: Backend) -> None:
    breakers, source = backend.breakers(), make_source(threshold=1, base=10)
    await fail(breakers, source, 1, suspend_s=120)
    state = await breakers.state("t")
    assert state.open_until == pytest.approx(backend.clock.now + 120)
    backend.clock.advance(60)
    assert not (await breakers.allow(source)).allowed


async def test_a_probe_that_never_reports_frees_its_slot_after_its_lease(backend: Backend) -> None:
    breakers, source = backend.breakers(), make_source(threshold=1, base=10)
    await fail(breakers, source, 1)
    backend.clock.advance(10)
    assert (await breakers.allow(source)).probe
    assert not (await breakers.allow(source)).allowed
    backend.clock.advance(source.timeout_s + 5.1)
    assert (await breakers.allow(source)).probe


async def test_releasing_a_probe_lets_the_next_caller_probe_without_changing_the_state(backend: Backend) -> None:
    breakers, source = backend.breakers(), make_source(threshold=1, base=10)
    await fail(breakers, source, 1)
    backend.clock.advance(10)
    probe = await breakers.allow(source)
    await breakers.release(probe)
    state = await breakers.state("t")
    assert state.state == CircuitState.HALF_OPEN and state.backoff_s == 10
    assert (await breakers.allow(source)).probe


async def test_a_late_success_of_a_call_admitted_before_opening_does_not_close_it(backend: Backend) -> None:
    breakers, source = backend.breakers(), make_source(threshold=2, base=10)
    early = await breakers.allow(source)
    await fail(breakers, source, 2)
    await breakers.success(early)
    assert (await breakers.state("t")).state == CircuitState.OPEN


async def test_breakers_are_per_source(backend: Backend) -> None:
    breakers = backend.breakers()
    await fail(breakers, make_source("a", threshold=1), 1)
    assert (await breakers.state("a")).state == CircuitState.OPEN
    assert (await breakers.allow(make_source("b", threshold=1))).allowed
    assert (await breakers.state("b")).state == CircuitState.CLOSED


# --- Rate limiter ---------------------------------------------------------------------------------


async def test_limiter_allows_the_burst_then_paces_at_the_rate(backend: Backend) -> None:
    limiters, source = backend.limiters(), make_source(per_second=2.0, burst=3)
    waits = [await limiters.reserve(source, max_wait_s=10) for _ in range(5)]
    assert waits == pytest.approx([0, 0, 0, 0.5, 1.0])


async def test_limiter_refuses_a_slot_beyond_the_callers_wait_and_takes_nothing(backend: Backend) -> None:
    limiters, source = backend.limiters(), make_source(per_second=1.0, burst=1)
    assert await limiters.reserve(source, max_wait_s=0) == 0
    assert await limiters.reserve(source, max_wait_s=0.5) is None
    assert await limiters.reserve(source, max_wait_s=0.5) is None
    assert await limiters.reserve(source, max_wait_s=1.0) == pytest.approx(1.0)  # the refusals took no slot


async def test_limiter_refills_with_time(backend: Backend) -> None:
    limiters, source = backend.limiters(), make_source(per_second=1.0, burst=2)
    assert [await limiters.reserve(source, max_wait_s=0) for _ in range(3)] == [0, 0, None]
    backend.clock.advance(1.0)
    assert await limiters.reserve(source, max_wait_s=0) == 0
    backend.clock.advance(100)
    assert [await limiters.reserve(source, max_wait_s=0) for _ in range(3)] == [0, 0, None]  # burst, not 100


async def test_limiters_are_per_source(backend: Backend) -> None:
    limiters = backend.limiters()
    a, b = make_source("a", per_second=1, burst=1), make_source("b", per_second=1, burst=1)
    assert await limiters.reserve(a, max_wait_s=0) == 0
    assert await limiters.reserve(a, max_wait_s=0) is None
    assert await limiters.reserve(b, max_wait_s=0) == 0


@pytest.mark.redis
async def test_redis_limits_hold_across_instances(redis_url: str) -> None:
    clock, prefix = FakeClock(1_000_000.0), f"certq-test-{uuid.uuid4().hex[:12]}"
    client = aioredis.Redis.from_url(redis_url)
    try:
        one = LimiterRegistry.redis(client, prefix=prefix, clock=clock)
        two = LimiterRegistry.redis(client, prefix=prefix, clock=clock)
        source = make_source(per_second=1, burst=2)
        assert await one.reserve(source, max_wait_s=0) == 0
        assert await two.reserve(source, max_wait_s=0) == 0
        assert await one.reserve(source, max_wait_s=0) is None
        assert await client.exists(f"{prefix}:rl:t") == 1
    finally:
        await _drop_prefix(client, prefix)
        await client.aclose()


# --- Redis outages --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _client(port: int) -> aioredis.Redis:
    return client_from_url(f"redis://127.0.0.1:{port}/0")


async def test_redis_state_falls_back_to_memory_when_redis_is_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(1_000_000.0)
    client = _client(_free_port())  # nothing listens there
    state = ResilienceState.redis(client, prefix="certq-test-down", clock=clock)
    source = make_source(threshold=2, base=10, per_second=1, burst=1)
    try:
        with caplog.at_level(logging.WARNING, logger="aggregator.resilience.health"):
            await fail(state.breakers, source, 2)
            assert not (await state.breakers.allow(source)).allowed  # opened in the fallback, same rules
            assert (await state.breakers.state("t")).state == CircuitState.OPEN
            assert await state.limiters.reserve(source, max_wait_s=0) == 0
            assert await state.limiters.reserve(source, max_wait_s=0) is None
        assert state.health is not None
        assert state.health.down
        assert state.health.outages == 1
        assert state.health.fallbacks >= 7
        assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1  # once per outage
    finally:
        await client.aclose()


@dataclass
class RedisProcess:
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    """A redis-server of this test's own on a free port (the shared 6379 is left alone)."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CERTQ_REQUIRE_SERVICES") == "1":
            pytest.fail("redis-server is not installed but CERTQ_REQUIRE_SERVICES=1")
        pytest.skip("redis-server is not installed")
    server = RedisProcess(_free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_redis_state_survives_a_redis_restart_and_is_shared_again_after(own_redis: RedisProcess) -> None:
    clock = FakeClock(1_000_000.0)
    client = _client(own_redis.port)
    health = RedisHealth(recheck_s=0.0)
    state = ResilienceState.redis(client, clock=clock, health=health)
    source = make_source(threshold=3, base=10)
    try:
        await fail(state.breakers, source, 1)
        assert await client.hget("certq:cb:t", "failures") == b"1"
        assert not health.down

        own_redis.stop()
        for _ in range(5):  # lookups go on without Redis, never an exception
            permit = await state.breakers.allow(source)
            assert permit.allowed
            await state.breakers.success(permit)
            assert await state.limiters.reserve(source, max_wait_s=10) is not None
        assert health.down and health.outages == 1

        own_redis.start()  # an empty Redis, as after a crash without persistence
        await fail(state.breakers, source, 3)
        assert not health.down
        assert await client.hget("certq:cb:t", "failures") == b"3"
        assert (await state.breakers.state("t")).state == CircuitState.OPEN
        assert health.outages == 1
    finally:
        await client.aclose()


@pytest.mark.parametrize("build", [lambda: ResilienceState.from_url(None), lambda: ResilienceState.memory()])
async def test_without_redis_the_state_is_in_process(build: Callable[[], ResilienceState]) -> None:
    state = build()
    assert state.health is None
    await fail(state.breakers, make_source(threshold=1), 1)
    assert (await state.breakers.state("t")).state == CircuitState.OPEN
    await state.aclose()


@pytest.mark.redis
async def test_from_url_shares_state_between_instances(redis_url: str) -> None:
    prefix = f"certq-test-{uuid.uuid4().hex[:12]}"
    one, two = ResilienceState.from_url(redis_url, prefix=prefix), ResilienceState.from_url(redis_url, prefix=prefix)
    try:
        await fail(one.breakers, make_source(threshold=1), 1)
        assert (await two.breakers.state("t")).state == CircuitState.OPEN
        assert one.health is not None and not one.health.down
    finally:
        assert one.owned_client is not None
        await _drop_prefix(one.owned_client, prefix)
        await one.aclose()
        await two.aclose()


# --- Call statistics ------------------------------------------------------------------------------


def _result(outcome: Outcome, kind: ErrorKind | None = None, ms: float = 10.0) -> SourceResult:
    return SourceResult(
        source="t",
        department=Department.MEM,
        mode=Mode.API,
        outcome=outcome,
        error_kind=kind,
        elapsed_ms=ms,
        message=kind.value if kind else None,
    )


def test_source_stats_summarise_the_recent_calls() -> None:
    stats = SourceStats(window=5)
    for ms in (10, 20, 30, 40):
        stats.record(_result(Outcome.FOUND, ms=ms))
    stats.record(_result(Outcome.UNAVAILABLE, ErrorKind.TIMEOUT, ms=1000))
    stats.record(_result(Outcome.UNAVAILABLE, ErrorKind.CIRCUIT_OPEN, ms=0))  # pushes out the 10 ms call
    snap = stats.snapshot("t")
    assert snap["calls"] == 5 and snap["calls_total"] == 6
    assert snap["success_rate"] == pytest.approx(3 / 5)
    assert snap["outcomes"] == {"found": 3, "timeout": 1, "circuit_open": 1}
    assert snap["p50_ms"] == 30 and snap["p95_ms"] == 1000  # circuit_open answers are not latencies
    assert snap["last_error"]["kind"] == "circuit_open"


def test_source_stats_of_an_unused_source_are_empty() -> None:
    snap = SourceStats().snapshot("t")
    assert snap["calls"] == 0 and snap["success_rate"] is None and snap["p50_ms"] is None
