"""The source-result cache on a real Redis: TTLs, versions, serve-stale, corrupt values, and coalescing
within one process, across two gateway processes, and when the lock holder dies."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from aggregator.cache import SCHEMA_VERSION, SourceCache
from aggregator.models import ErrorKind, Outcome, Query
from tests.core.test_cache import FOUND_S, MAX_STALE_S, NOT_FOUND_S, QUERY, FakeClock, Source, make_source, result

pytestmark = pytest.mark.redis
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def prefix() -> str:
    return f"certq-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def client(redis_url: str, prefix: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url)
    yield c
    keys = [k async for k in c.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await c.delete(*keys)
    await c.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def cache(client: aioredis.Redis, prefix: str, clock: FakeClock) -> AsyncIterator[SourceCache]:
    c = SourceCache.redis(client, prefix=prefix, clock=clock)
    yield c
    await c.close()


def spy_on_polling(cache: SourceCache) -> asyncio.Event:
    """An event set when `cache` starts waiting on another process's lock."""
    polling = asyncio.Event()
    backend = cache._backend
    original = backend.poll

    async def poll(*args: object, **kw: object):
        polling.set()
        return await original(*args, **kw)

    backend.poll = poll  # type: ignore[method-assign]
    return polling


# --- TTL per outcome ----------------------------------------------------------------------------


async def test_a_found_answer_is_stored_as_versioned_json_with_ttl_for_fresh_plus_stale(
    cache: SourceCache, client: aioredis.Redis, clock: FakeClock
) -> None:
    src, upstream = make_source(), Source(result(Outcome.FOUND))
    first = await cache.fetch(src, QUERY, upstream)
    key = cache.key(src, QUERY)

    raw = await client.get(key)
    envelope = json.loads(raw)  # JSON, not pickle
    assert envelope["v"] == SCHEMA_VERSION
    assert envelope["expires_at"] == pytest.approx(clock.now + FOUND_S)
    assert envelope["stale_until"] == pytest.approx(clock.now + FOUND_S + MAX_STALE_S)
    assert envelope["result"]["outcome"] == "found"
    assert (FOUND_S + MAX_STALE_S - 5) * 1000 < await client.pttl(key) <= (FOUND_S + MAX_STALE_S) * 1000

    clock.advance(FOUND_S - 1)
    hit = await cache.fetch(src, QUERY, upstream)
    assert hit.from_cache and not hit.stale and hit.fetched_at == first.fetched_at
    clock.advance(2)
    assert not (await cache.fetch(src, QUERY, upstream)).from_cache
    assert upstream.calls == 2


async def test_a_not_found_answer_gets_the_shorter_ttl(
    cache: SourceCache, client: aioredis.Redis, clock: FakeClock
) -> None:
    src, upstream = make_source(), Source(result(Outcome.NOT_FOUND))
    await cache.fetch(src, QUERY, upstream)
    ttl_ms = await client.pttl(cache.key(src, QUERY))
    assert (NOT_FOUND_S + MAX_STALE_S - 5) * 1000 < ttl_ms <= (NOT_FOUND_S + MAX_STALE_S) * 1000
    clock.advance(NOT_FOUND_S - 1)
    assert (await cache.fetch(src, QUERY, upstream)).from_cache
    clock.advance(2)
    assert not (await cache.fetch(src, QUERY, upstream)).from_cache
    assert upstream.calls == 2


@pytest.mark.parametrize("kind", [ErrorKind.TIMEOUT, ErrorKind.CAPTCHA, ErrorKind.BLOCKED, ErrorKind.CIRCUIT_OPEN])
async def test_an_unavailable_answer_is_never_stored(
    cache: SourceCache, client: aioredis.Redis, kind: ErrorKind
) -> None:
    src, upstream = make_source(), Source(result(Outcome.UNAVAILABLE, error_kind=kind))
    await cache.fetch(src, QUERY, upstream)
    assert await client.exists(cache.key(src, QUERY)) == 0
    await cache.fetch(src, QUERY, upstream)
    assert upstream.calls == 2


async def test_redis_itself_drops_an_answer_once_its_fresh_and_stale_windows_are_over(
    client: aioredis.Redis, prefix: str
) -> None:
    cache = SourceCache.redis(client, prefix=prefix)  # real clock: Redis's own expiry is under test
    src, upstream = make_source(found_s=1, max_stale_s=0), Source(result(Outcome.FOUND))
    await cache.fetch(src, QUERY, upstream)
    key = cache.key(src, QUERY)
    assert await client.exists(key) == 1
    for _ in range(100):
        if not await client.exists(key):
            break
        await asyncio.sleep(0.05)
    assert await client.exists(key) == 0
    assert not (await cache.fetch(src, QUERY, upstream)).from_cache
    assert upstream.calls == 2


# --- versions, serve-stale, corrupt values ------------------------------------------------------


async def test_a_new_data_version_is_a_miss(cache: SourceCache) -> None:
    src, upstream = (make_source(), Source(result(Outcome.NOT_FOUND), result(Outcome.FOUND)))
    await cache.fetch(src, QUERY, upstream, version="1")
    assert (await cache.fetch(src, QUERY, upstream, version="1")).outcome == Outcome.NOT_FOUND
    after_import = await cache.fetch(src, QUERY, upstream, version="2")
    assert after_import.outcome == Outcome.FOUND and not after_import.from_cache
    assert upstream.calls == 2


async def test_stale_answer_during_a_source_outage_and_none_past_max_stale(
    cache: SourceCache, clock: FakeClock
) -> None:
    src = make_source()
    down = result(Outcome.UNAVAILABLE, error_kind=ErrorKind.UPSTREAM_ERROR, message="502")
    upstream = Source(result(Outcome.FOUND), down)
    original = await cache.fetch(src, QUERY, upstream)

    clock.advance(FOUND_S + 10)
    stale = await cache.fetch(src, QUERY, upstream)
    assert stale.outcome == Outcome.FOUND and stale.from_cache and stale.stale
    assert stale.fetched_at == original.fetched_at
    assert stale.message == "stale: source upstream_error: 502"

    clock.advance(MAX_STALE_S)
    gone = await cache.fetch(src, QUERY, upstream)
    assert gone.outcome == Outcome.UNAVAILABLE and not gone.stale
    assert upstream.calls == 3


@pytest.mark.parametrize(
    "stored",
    [
        b"not json at all",
        b"\x80\x04\x95pickle",
        b'{"v": 1, "stored_at": 1}',
        json.dumps({"v": 999, "stored_at": 1, "expires_at": 9e12, "stale_until": 9e12, "result": {}}).encode(),
    ],
    ids=["garbage", "pickle", "truncated", "future-schema"],
)
async def test_a_corrupt_or_foreign_value_is_a_miss_not_an_exception(
    cache: SourceCache, client: aioredis.Redis, stored: bytes
) -> None:
    src, upstream = make_source(), Source(result(Outcome.FOUND))
    key = cache.key(src, QUERY)
    await client.set(key, stored)
    r = await cache.fetch(src, QUERY, upstream)
    assert r.outcome == Outcome.FOUND and not r.from_cache
    assert upstream.calls == 1
    assert cache.stats()["corrupt"] >= 1
    assert json.loads(await client.get(key))["v"] == SCHEMA_VERSION  # replaced by a good answer
    assert (await cache.fetch(src, QUERY, upstream)).from_cache


async def test_a_current_envelope_written_by_another_instance_is_a_hit(
    client: aioredis.Redis, prefix: str, clock: FakeClock
) -> None:
    writer = SourceCache.redis(client, prefix=prefix, clock=clock)
    reader = SourceCache.redis(client, prefix=prefix, clock=clock)
    src = make_source()
    await writer.fetch(src, QUERY, Source(result(Outcome.FOUND)))
    upstream = Source(result(Outcome.NOT_FOUND))
    hit = await reader.fetch(src, QUERY, upstream)
    assert hit.outcome == Outcome.FOUND and hit.from_cache and upstream.calls == 0


# --- coalescing ---------------------------------------------------------------------------------


async def test_a_hundred_concurrent_identical_lookups_make_one_call(cache: SourceCache, client: aioredis.Redis) -> None:
    src, upstream = make_source(), Source(result(Outcome.FOUND), delay_s=0.05)
    results = await asyncio.gather(*(cache.fetch(src, QUERY, upstream) for _ in range(100)))
    assert upstream.calls == 1
    assert all(r.outcome == Outcome.FOUND for r in results)
    assert cache.stats()["coalesced_local"] == 99
    assert await client.exists(f"{cache.key(src, QUERY)}:lock") == 0  # released


async def test_a_second_instance_waits_for_the_lock_holder_and_gets_its_unavailable_answer(
    client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    other_client = aioredis.Redis.from_url(redis_url)
    holder, waiter = (SourceCache.redis(client, prefix=prefix), SourceCache.redis(other_client, prefix=prefix))
    waiting = spy_on_polling(waiter)
    called, release = asyncio.Event(), asyncio.Event()

    async def failing() -> object:
        called.set()
        await release.wait()
        return result(Outcome.UNAVAILABLE, error_kind=ErrorKind.TIMEOUT)

    src = make_source()
    first = asyncio.create_task(holder.fetch(src, QUERY, failing))
    await called.wait()
    never = Source(result(Outcome.FOUND))
    second = asyncio.create_task(waiter.fetch(src, QUERY, never))
    await asyncio.wait_for(waiting.wait(), 5)
    release.set()
    a, b = await asyncio.gather(first, second)
    assert never.calls == 0
    assert a.error_kind == b.error_kind == ErrorKind.TIMEOUT
    assert waiter.stats()["coalesced_remote"] == 1
    assert await client.exists(holder.key(src, QUERY)) == 0  # shared, not stored
    await other_client.aclose()


WORKER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from datetime import UTC, datetime
    from aggregator.cache import SourceCache
    from aggregator.config import SourceConfig
    from aggregator.models import Query, SourceResult

    url, prefix, role, n, source_json = sys.argv[1:6]
    n = int(n)

    async def main():
        cache = SourceCache.from_url(url, prefix=prefix)  # the client a gateway process builds
        client = cache.client
        source = SourceConfig.model_validate_json(source_json)
        ctl = lambda name: f"{prefix}:ctl:{name}"
        backend = cache._backend
        original_poll = backend.poll

        async def poll(*args, **kw):  # tell the test (and the holder) that this process waits on the lock
            await client.set(ctl(f"polling:{role}"), 1)
            return await original_poll(*args, **kw)

        backend.poll = poll

        async def upstream():
            await client.incr(ctl("upstream_calls"))
            await asyncio.sleep(0.2)
            if role in ("a", "b"):  # hold on until the other gateway process waits on our lock (max 10 s)
                other = "b" if role == "a" else "a"
                for _ in range(500):
                    if await client.exists(ctl(f"polling:{other}")):
                        break
                    await asyncio.sleep(0.02)
            if role == "doomed":
                await client.set(ctl("holder_calling"), 1)
                await asyncio.sleep(600)
            return SourceResult(source=source.id, department=source.department, mode=source.mode,
                                outcome="found", fetched_at=datetime.now(UTC), message=f"asked by {role}")

        await client.incr(ctl("ready"))
        while not await client.exists(ctl("go")):
            await asyncio.sleep(0.002)
        results = await asyncio.gather(*(cache.fetch(source, Query(number="T110105199003071239"), upstream)
                                         for _ in range(n)))
        print(json.dumps({"outcomes": sorted({r.outcome.value for r in results}),
                          "messages": sorted({r.message for r in results}), "stats": cache.stats()}))
        await cache.close()

    asyncio.run(main())
    """
)


def spawn_worker(redis_url: str, prefix: str, role: str, n: int, source_json: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, redis_url, prefix, role, str(n), source_json],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def wait_for(predicate: Callable[[], object], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await predicate():  # type: ignore[misc]
            await asyncio.sleep(0.02)


@pytest.mark.slow
async def test_two_gateway_processes_coalesce_onto_one_upstream_call(
    client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    source_json = make_source(timeout_s=5).model_dump_json()
    workers = [spawn_worker(redis_url, prefix, role, 200, source_json) for role in ("a", "b")]
    try:
        await wait_for(lambda: _count_is(client, f"{prefix}:ctl:ready", 2))
        await client.set(f"{prefix}:ctl:go", 1)
        outputs = [await asyncio.to_thread(w.communicate, timeout=60) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    reports = []
    for (out, err), w in zip(outputs, workers, strict=True):
        assert w.returncode == 0, err
        reports.append(json.loads(out))
    assert int(await client.get(f"{prefix}:ctl:upstream_calls")) == 1
    for report in reports:
        assert report["outcomes"] == ["found"]
        assert len(report["messages"]) == 1  # every lookup in both processes got the one upstream answer
        assert report["stats"]["coalesced_local"] == 199
    assert reports[0]["messages"] == reports[1]["messages"]
    assert sorted(r["stats"]["calls"] for r in reports) == [0, 1]
    assert sorted(r["stats"]["coalesced_remote"] for r in reports) == [0, 1]


async def _count_is(client: aioredis.Redis, key: str, n: int) -> bool:
    value = await client.get(key)
    return value is not None and int(value) >= n


@pytest.mark.slow
async def test_a_waiter_takes_over_when_the_lock_holder_dies(
    client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    src = make_source(timeout_s=0.5)  # the lock lives 2 x timeout = 1 s
    doomed = spawn_worker(redis_url, prefix, "doomed", 1, src.model_dump_json())
    try:
        await client.set(f"{prefix}:ctl:go", 1)
        await wait_for(lambda: client.exists(f"{prefix}:ctl:holder_calling"))
        waiter = SourceCache.redis(client, prefix=prefix)
        waiting = spy_on_polling(waiter)
        upstream = Source(result(Outcome.FOUND, message="asked by the survivor"))
        task = asyncio.create_task(waiter.fetch(src, Query(number="T110105199003071239"), upstream))
        await asyncio.wait_for(waiting.wait(), 5)
        assert upstream.calls == 0  # still waiting on the holder's lock
        doomed.kill()
        doomed.wait(timeout=10)
        r = await asyncio.wait_for(task, 10)
    finally:
        if doomed.poll() is None:
            doomed.kill()
    assert r.outcome == Outcome.FOUND and r.message == "asked by the survivor"
    assert upstream.calls == 1
    assert waiter.stats()["coalesced_remote"] == 0
    assert (await waiter.fetch(src, Query(number="T110105199003071239"), upstream)).from_cache


# --- the client from_url builds -----------------------------------------------------------------


async def test_from_url_builds_a_fail_fast_client_it_owns(redis_url: str, prefix: str, client: aioredis.Redis) -> None:
    cache = SourceCache.from_url(redis_url, prefix=prefix, max_entries=5)
    assert cache.backend_name == "redis" and cache.client is not None
    assert isinstance(cache.client.connection_pool, aioredis.BlockingConnectionPool)  # a burst waits, never fails
    kwargs = cache.client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.5 and kwargs["socket_connect_timeout"] == 0.5
    assert kwargs["health_check_interval"] > 0
    src, upstream = make_source(), Source(result(Outcome.FOUND))
    await cache.fetch(src, QUERY, upstream)
    assert (await cache.fetch(src, QUERY, upstream)).from_cache
    await cache.close()


async def test_a_full_connection_pool_is_not_an_outage(redis_url: str, prefix: str, client: aioredis.Redis) -> None:
    tiny = aioredis.Redis.from_url(redis_url, max_connections=2)  # redis-py's default pool raises when full
    cache = SourceCache.redis(tiny, prefix=prefix)
    src = make_source()
    queries = [Query(number=f"T11010519900307{i:04d}") for i in range(50)]
    upstream = Source(result(Outcome.FOUND))
    results = await asyncio.gather(*(cache.fetch(src, q, upstream) for q in queries))
    assert all(r.outcome == Outcome.FOUND for r in results)
    stats = cache.stats()
    assert stats["backend_errors"] > 0, "the pool was not exhausted: the test proves nothing"
    assert stats["outages"] == 0
    after = Query(number="T110105199003079999")
    await cache.fetch(src, after, upstream)
    assert (await cache.fetch(src, after, upstream)).from_cache, "the cache stays in use after the burst (no back-off)"
    await cache.close()
    await tiny.aclose()


async def test_closing_a_cache_leaves_a_client_it_was_given_open(client: aioredis.Redis, prefix: str) -> None:
    cache = SourceCache.redis(client, prefix=prefix)
    await cache.fetch(make_source(), QUERY, Source(result(Outcome.FOUND)))
    await cache.close()
    assert await client.ping()
