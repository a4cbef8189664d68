"""An import reaches lookups at once, through the gateway's cache: in-process and on a real Redis.

The gateway caches each records source's answer under the department's import generation. A lookup made
before an import is cached; after an import that changes the certificate (here: suspended in a newer
quarter) the next lookup must show the new status, not the cached one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from aggregator import gateway as gateway_module
from aggregator.cache import SourceCache
from aggregator.config import Settings
from aggregator.gateway import Gateway
from aggregator.models import Department, Mode, Verdict
from aggregator.records import RecordStore
from tests.records_support import ID_ZHANG, mem_row, write_csv

TODAY = date(2026, 11, 25)
NUMBER = "T" + ID_ZHANG


def records_only(settings: Settings) -> Settings:
    return settings.with_sources([s for s in settings.sources if s.mode == Mode.RECORDS])


def mem_records(answer):
    return next(s for s in answer.sources if s.source == "mem_records")


@pytest.fixture
async def db_url(tmp_path: Path) -> str:
    """A SQLite store where MEM's 2026Q1 upload says the certificate is valid."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'certq.sqlite3'}"
    store = await RecordStore.open(url)
    try:
        path = write_csv(tmp_path / "mem-2026Q1.csv", [mem_row(status="有效")])
        assert (await store.import_file(path, department="mem", quarter="2026Q1")).status == "imported"
    finally:
        await store.close()
    return url


@pytest.fixture
def suspended_q2(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "mem-2026Q2.csv", [mem_row(status="暂扣")])


class ShiftedClock:
    """The gateway module's `time`, with a monotonic clock a test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def __getattr__(self, name: str):
        return getattr(time, name)


async def look_up_twice_and_see_it_cached(gw: Gateway) -> None:
    first = await gw.lookup(NUMBER)
    assert first.verdict == Verdict.VALID and not mem_records(first).from_cache
    second = await gw.lookup(NUMBER)
    assert second.verdict == Verdict.VALID and mem_records(second).from_cache


async def import_through(gw: Gateway, path: Path) -> None:
    """What the web upload does: import with the gateway's store, then drop its memo of the generation."""
    report = await gw.store.import_file(path, department="mem", quarter="2026Q2")
    assert report.status == "imported"
    gw.forget_generation(Department.MEM)


# --- In-process cache ----------------------------------------------------------------------------


async def test_an_import_through_the_gateway_shows_the_new_status_at_once_in_process(
    settings, db_url, suspended_q2
) -> None:
    async with await Gateway.open(records_only(settings), database_url=db_url, redis_url="", today=lambda: TODAY) as gw:
        await look_up_twice_and_see_it_cached(gw)

        await import_through(gw, suspended_q2)
        after = await gw.lookup(NUMBER)

    assert after.verdict == Verdict.SUSPENDED
    assert not mem_records(after).from_cache


async def test_an_import_by_another_process_shows_once_the_generation_memo_lapses(
    settings, db_url, suspended_q2, monkeypatch
) -> None:
    clock = ShiftedClock()
    monkeypatch.setattr(gateway_module, "time", clock)
    async with await Gateway.open(records_only(settings), database_url=db_url, redis_url="", today=lambda: TODAY) as gw:
        await look_up_twice_and_see_it_cached(gw)
        other = await RecordStore.open(db_url)  # e.g. `certq import` run on another machine
        try:
            await other.import_file(suspended_q2, department="mem", quarter="2026Q2")
        finally:
            await other.close()

        clock.offset += gateway_module.GENERATION_MEMO_S + 0.01
        after = await gw.lookup(NUMBER)

    assert after.verdict == Verdict.SUSPENDED
    assert not mem_records(after).from_cache


# --- Redis ---------------------------------------------------------------------------------------


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[tuple[aioredis.Redis, str]]:
    """A client and a key prefix of this test's own; its keys are deleted afterwards (never FLUSHDB)."""
    prefix = f"certq-test-{uuid.uuid4().hex[:12]}"
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client, prefix
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def redis_gateway(settings: Settings, db_url: str, client: aioredis.Redis, prefix: str) -> Gateway:
    store = await RecordStore.open(db_url)
    cache = SourceCache.redis(client, prefix=prefix)
    return Gateway(records_only(settings), store, cache=cache, redis_client=client, today=lambda: TODAY)


@pytest.mark.redis
async def test_an_import_through_the_gateway_shows_the_new_status_at_once_with_redis(
    settings, db_url, suspended_q2, redis_client
) -> None:
    client, prefix = redis_client
    async with await redis_gateway(settings, db_url, client, prefix) as gw:
        await look_up_twice_and_see_it_cached(gw)
        assert [k async for k in client.scan_iter(match=f"{prefix}:*mem_records*")]  # cached in Redis

        await import_through(gw, suspended_q2)
        after = await gw.lookup(NUMBER)

    assert after.verdict == Verdict.SUSPENDED
    assert not mem_records(after).from_cache


@pytest.mark.redis
async def test_a_second_gateway_sharing_redis_shows_the_new_status_once_its_generation_memo_lapses(
    settings, db_url, suspended_q2, redis_client, monkeypatch
) -> None:
    client, prefix = redis_client
    clock = ShiftedClock()
    monkeypatch.setattr(gateway_module, "time", clock)
    async with (
        await redis_gateway(settings, db_url, client, prefix) as importer,
        await redis_gateway(settings, db_url, client, prefix) as other,
    ):
        await look_up_twice_and_see_it_cached(importer)
        shared = await other.lookup(NUMBER)
        assert mem_records(shared).from_cache  # the first gateway's answer, through Redis

        await import_through(importer, suspended_q2)
        clock.offset += gateway_module.GENERATION_MEMO_S + 0.01
        after = await other.lookup(NUMBER)

    assert after.verdict == Verdict.SUSPENDED
    assert not mem_records(after).from_cache
