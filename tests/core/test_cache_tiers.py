"""The two-tier source cache: a near tier (decoded answers in process) in front of Redis, kept coherent across
instances by pub/sub events; one MGET where several sources miss it; imports and purges seen everywhere.

Instances here are SourceCaches or Gateways in one process, each with its own Redis client and subscription,
exactly as two processes would have them (the subscription is a separate connection either way).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from aggregator.cache import SourceCache
from aggregator.cache.near import NearTier
from aggregator.config import Settings
from aggregator.gateway import Gateway
from aggregator.models import Department, Mode, Outcome, Query
from aggregator.records import RecordStore
from aggregator.redisconn import client_from_url
from tests.core.test_cache import Source, make_source, result
from tests.records_support import ID_ZHANG, mem_row, write_csv
from tests.redis_server import RedisServer

TODAY = date(2026, 11, 25)
NUMBER = "T" + ID_ZHANG


async def eventually(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"never happened within {timeout_s} s: {what}")


# --- the near tier on its own ---------------------------------------------------------------------


def test_the_near_tier_never_serves_past_the_answers_own_freshness() -> None:
    near = NearTier(10)
    r = result(Outcome.FOUND)
    near.put("k", r, expires_at=100.0, version=1.0)
    assert near.get("k", 99.9) is not None and near.get("k", 99.9).result is r  # type: ignore[union-attr]
    assert near.get("k", 100.0) is None  # a lost invalidation cannot keep it longer than this
    assert len(near) == 0


def test_an_announced_newer_version_drops_the_older_copy_and_refuses_a_read_that_raced_it() -> None:
    near = NearTier(10)
    old, new = result(Outcome.FOUND), result(Outcome.NOT_FOUND)
    near.put("k", old, expires_at=1e12, version=1.0)
    near.drop("k", 2.0)  # another instance stored version 2
    assert near.get("k", 0) is None
    near.put("k", old, expires_at=1e12, version=1.0)  # a GET issued before the store answers after the event
    assert near.get("k", 0) is None
    near.put("k", new, expires_at=1e12, version=2.0)
    assert near.get("k", 0).result is new  # type: ignore[union-attr]
    near.drop("k", 2.0)  # our own store's event: the same version stays
    assert near.get("k", 0).result is new  # type: ignore[union-attr]


def test_the_near_tier_is_bounded_lru() -> None:
    near = NearTier(2)
    for k in "abc":
        near.put(k, result(Outcome.FOUND), expires_at=1e12, version=1.0)
    assert near.get("a", 0) is None and near.get("b", 0) is not None and near.get("c", 0) is not None


# --- two instances on one Redis -------------------------------------------------------------------


@pytest.fixture
def prefix() -> str:
    return f"certq-tiers-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def clients(redis_url: str, prefix: str) -> AsyncIterator[list[aioredis.Redis]]:
    made = [client_from_url(redis_url) for _ in range(2)]
    yield made
    keys = [k async for k in made[0].scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await made[0].delete(*keys)
    for c in made:
        await c.aclose()


@pytest.fixture
async def caches(clients: list[aioredis.Redis], prefix: str) -> AsyncIterator[list[SourceCache]]:
    made = [SourceCache.redis(c, prefix=prefix) for c in clients]
    for c in made:
        assert await c.start(), "the cache did not subscribe to its events"
    yield made
    for c in made:
        await c.close()


@pytest.mark.redis
async def test_a_repeated_hit_is_answered_from_the_near_tier_without_redis(caches: list[SourceCache]) -> None:
    a, _ = caches
    src, upstream = make_source(), Source(result(Outcome.FOUND))
    q = Query(number=NUMBER)
    first = await a.fetch(src, q, upstream)
    assert not first.from_cache
    calls_to_redis = 0
    original = a._backend.get  # type: ignore[union-attr]

    async def counting_get(key: str) -> Any:
        nonlocal calls_to_redis
        calls_to_redis += 1
        return await original(key)

    a._backend.get = counting_get  # type: ignore[method-assign,union-attr]
    hits = [await a.fetch(src, q, upstream) for _ in range(5)]
    assert all(h.from_cache and h.outcome == Outcome.FOUND for h in hits)
    assert calls_to_redis == 0 and upstream.calls == 1
    assert a.stats()["near_hits"] == 5
    assert a.peek(src, q) is hits[0]  # the gateway's inline path sees it too


@pytest.mark.redis
async def test_a_purge_on_one_instance_empties_every_instances_near_tier(caches: list[SourceCache]) -> None:
    a, b = caches
    src, upstream = make_source(), Source(result(Outcome.FOUND))
    q = Query(number=NUMBER)
    await a.fetch(src, q, upstream)
    assert (await b.fetch(src, q, upstream)).from_cache  # read from Redis, now also in b's near tier
    assert b.peek(src, q) is not None
    removed = await a.purge(src.id)
    assert removed >= 1  # the answer (and any hand-off left by the lock holder)
    started = time.monotonic()
    await eventually(lambda: b.peek(src, q) is None, "b forgetting the purged answer")
    seen_after = time.monotonic() - started
    again = await b.fetch(src, q, upstream)
    assert not again.from_cache and upstream.calls == 2, "after a purge the source is asked again"
    assert seen_after < 5


@pytest.mark.redis
async def test_a_newer_version_stored_by_one_instance_replaces_the_others_near_copy(caches: list[SourceCache]) -> None:
    a, b = caches
    src = make_source()
    q = Query(number=NUMBER)
    await a.fetch(src, q, Source(result(Outcome.NOT_FOUND)))
    assert b.peek(src, q) is None
    assert (await b.fetch(src, q, Source(result(Outcome.FOUND)))).outcome == Outcome.NOT_FOUND
    assert b.peek(src, q) is not None and b.peek(src, q).outcome == Outcome.NOT_FOUND  # type: ignore[union-attr]
    # The live answer changes: a refreshes the key (as after its expiry) and stores the new version.
    key = a.key(src, q)
    await a._call_and_store(key, src, Source(result(Outcome.FOUND)), None)
    await eventually(lambda: b.peek(src, q) is None or b.peek(src, q).outcome == Outcome.FOUND, "b dropping v1")
    assert (await b.fetch(src, q, Source(result(Outcome.NOT_FOUND)))).outcome == Outcome.FOUND


@pytest.mark.redis
async def test_without_its_subscription_an_instance_reads_redis_not_its_near_tier(caches: list[SourceCache]) -> None:
    a, _ = caches
    src = make_source()
    q = Query(number=NUMBER)
    await a.fetch(src, q, Source(result(Outcome.FOUND)))
    assert a.peek(src, q) is not None
    a._events.live = False  # type: ignore[union-attr]  # as while the subscription is being made again
    assert a.peek(src, q) is None  # could have missed an event: no near answers
    assert (await a.fetch(src, q, Source(result(Outcome.NOT_FOUND)))).from_cache  # from Redis


# --- gateways: one MGET, imports announced, the same answers ---------------------------------------


@pytest.fixture
async def shared_store(tmp_path: Path) -> AsyncIterator[str]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'certq.sqlite3'}"
    s = await RecordStore.open(url)
    path = write_csv(tmp_path / "mem-2026Q1.csv", [mem_row(), mem_row(item="高压电工作业")])
    assert (await s.import_file(path, department="mem", quarter="2026Q1")).status == "imported"
    await s.close()
    yield url


def records_only(settings: Settings) -> Settings:
    return settings.with_sources([s for s in settings.sources if s.mode == Mode.RECORDS])


async def redis_gateway(
    settings: Settings, url: str, client: aioredis.Redis, prefix: str, near: bool = True
) -> Gateway:
    store = await RecordStore.open(url)
    cache = SourceCache.redis(client, prefix=prefix, near=near)
    gw = Gateway(records_only(settings), store, cache=cache, today=lambda: TODAY)
    assert await cache.start()
    return gw


def without_timing(answer: Any) -> dict[str, Any]:
    return answer.model_dump(exclude={"answered_at", "elapsed_ms"})


@pytest.mark.redis
async def test_two_tier_answers_equal_one_tier_answers_and_several_misses_make_one_mget(
    settings: Settings, shared_store: str, clients: list[aioredis.Redis], prefix: str
) -> None:
    a = await redis_gateway(settings, shared_store, clients[0], prefix)
    plain = await redis_gateway(settings, shared_store, clients[1], prefix, near=False)
    try:
        other = "T" + "110105198001010011"
        await a.lookup(other)  # learns every department's generation
        for who in (None, "张小三", "李四"):
            await plain.lookup(NUMBER, name=who)  # stored in Redis by the other instance only
            before = a.cache.stats()
            two_tier = await a.lookup(NUMBER, name=who)  # near tier empty for it: one MGET for all 4 sources
            after = a.cache.stats()
            assert after["batch_reads"] == before["batch_reads"] + 1
            assert after["hits"] == before["hits"] + 4 and after["misses"] == before["misses"]
            memoised = await a.lookup(NUMBER, name=who)  # near tier, then the merged answer kept
            one_tier = await plain.lookup(NUMBER, name=who)
            assert all(s.from_cache for s in one_tier.sources)
            assert without_timing(two_tier) == without_timing(one_tier) == without_timing(memoised)
            assert memoised.sources is two_tier.sources  # the kept answer, not built again
            assert memoised.answered_at >= two_tier.answered_at
    finally:
        await a.close()
        await plain.close()


@pytest.mark.redis
async def test_an_import_through_one_gateway_is_seen_by_the_other_at_once(
    settings: Settings, shared_store: str, clients: list[aioredis.Redis], prefix: str, tmp_path: Path
) -> None:
    a = await redis_gateway(settings, shared_store, clients[0], prefix)
    b = await redis_gateway(settings, shared_store, clients[1], prefix)
    try:
        first = await b.lookup(NUMBER)
        assert any("2026Q1" in (s.message or "") for s in first.sources if s.source == "mem_records")
        assert all(s.from_cache for s in (await b.lookup(NUMBER)).sources)  # cached on b, generation memo fresh
        path = write_csv(tmp_path / "mem-2026Q2.csv", [mem_row(status="吊销")])
        assert (await a.store.import_file(path, department="mem", quarter="2026Q2")).status == "imported"
        await a.imported(Department.MEM)
        await eventually(lambda: Department.MEM not in b._generations, "b forgetting MEM's generation")
        after = await b.lookup(NUMBER)  # well within the 1 s generation memo that would otherwise hold
        mem = next(s for s in after.sources if s.source == "mem_records")
        assert "2026Q2" in (mem.message or "") and not mem.from_cache
    finally:
        await a.close()
        await b.close()


# --- Redis killed under two instances ---------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CERTQ_REQUIRE_SERVICES") == "1":
            pytest.fail("redis-server is not on PATH but CERTQ_REQUIRE_SERVICES=1")
        pytest.skip("redis-server is not installed")
    with RedisServer() as s:
        yield s


@pytest.mark.slow
async def test_two_instances_fall_back_when_redis_dies_and_use_both_tiers_again_after_restart(
    server: RedisServer,
) -> None:
    caches = [SourceCache.from_url(server.url, prefix="tiers-outage") for _ in range(2)]
    src = make_source()
    numbers = [f"T11010519900307{i:04d}" for i in range(6)]
    wrong: list[str] = []
    answered = [0, 0]

    async def lookups(i: int) -> None:
        cache = caches[i]
        while True:
            for n in numbers:
                r = await cache.fetch(src, Query(number=n), Source(result(Outcome.FOUND, number=n)))
                if r.outcome != Outcome.FOUND or r.certificates[0].number != n:
                    wrong.append(f"{i} {n}: {r.outcome}")
                answered[i] += 1
                await asyncio.sleep(0.002)

    for c in caches:
        assert await c.start()
    runners = [asyncio.create_task(lookups(i)) for i in range(2)]
    try:
        await eventually(lambda: all(c.stats()["near_hits"] >= 30 for c in caches), "near hits while Redis is up")
        server.kill()
        await eventually(lambda: not any(c.near_live for c in caches), "both instances leaving the near tier")
        at_kill = list(answered)
        await eventually(lambda: all(answered[i] >= at_kill[i] + 100 for i in range(2)), "lookups during the outage")
        assert not any(r.done() for r in runners), "a Redis outage must never reach the caller"
        server.start()
        await eventually(lambda: all(c.near_live for c in caches), "both instances subscribed again", 20)
        hits = [c.stats()["near_hits"] for c in caches]
        await eventually(
            lambda: all(c.stats()["near_hits"] >= h + 30 for c, h in zip(caches, hits, strict=True)),
            "near hits after the restart",
        )
        # What the restarted (empty) Redis holds is the same as what each near tier answers.
        for n in numbers:
            r = await caches[1].fetch(src, Query(number=n), Source(result(Outcome.NOT_FOUND)))
            assert r.outcome == Outcome.FOUND
    finally:
        for r in runners:
            r.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        for c in caches:
            await c.close()
    assert not wrong


@pytest.mark.redis
async def test_an_import_made_with_the_cli_is_announced_to_running_gateways(
    settings: Settings, shared_store: str, clients: list[aioredis.Redis], prefix: str, redis_url: str
) -> None:
    from aggregator.cache.events import announce_import

    b = await redis_gateway(settings, shared_store, clients[1], prefix)
    try:
        await b.lookup(NUMBER)
        assert Department.MEM in b._generations
        assert await announce_import(redis_url, "mem", prefix=prefix)
        await eventually(lambda: Department.MEM not in b._generations, "b forgetting MEM's generation")
        assert Department.SAMR in b._generations  # only the department imported
    finally:
        await b.close()


@pytest.mark.slow
async def test_certq_cache_purge_empties_redis_and_a_running_instances_near_tier(server: RedisServer) -> None:
    from click.testing import CliRunner

    from aggregator.cli import main

    cache = SourceCache.from_url(server.url)  # the default prefix, as `certq serve` uses it
    try:
        assert await cache.start()
        src, q = make_source(), Query(number=NUMBER)
        await cache.fetch(src, q, Source(result(Outcome.FOUND)))
        assert cache.peek(src, q) is not None
        out = await asyncio.to_thread(
            CliRunner().invoke, main, ["cache", "purge", "--source", src.id, "--redis", server.url]
        )
        assert out.exit_code == 0, out.output
        assert "removed" in out.output
        await eventually(lambda: cache.peek(src, q) is None, "the running instance forgetting the purged answer")
        assert not (await cache.fetch(src, q, Source(result(Outcome.FOUND)))).from_cache
    finally:
        await cache.close()


@pytest.mark.slow
async def test_certq_import_with_a_redis_url_tells_running_gateways(
    server: RedisServer, settings: Settings, shared_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from aggregator.cli import main

    cache = SourceCache.from_url(server.url)  # the default prefix, as `certq serve` and `certq import` use it
    store = await RecordStore.open(shared_store)
    gw = Gateway(records_only(settings), store, cache=cache, today=lambda: TODAY)
    try:
        assert await cache.start()
        await gw.lookup(NUMBER)
        assert Department.MEM in gw._generations
        monkeypatch.setenv("CERTQ_REDIS_URL", server.url)
        path = write_csv(tmp_path / "mem-2026Q2.csv", [mem_row(status="吊销")])
        out = await asyncio.to_thread(
            CliRunner().invoke,
            main,
            ["import", str(path), "--department", "mem", "--quarter", "2026Q2", "--db", shared_store],
        )
        assert out.exit_code == 0, out.output
        await eventually(lambda: Department.MEM not in gw._generations, "the gateway forgetting MEM's generation")
        answer = await gw.lookup(NUMBER)
        mem = next(s for s in answer.sources if s.source == "mem_records")
        assert "2026Q2" in (mem.message or "") and not mem.from_cache
    finally:
        await gw.close()
