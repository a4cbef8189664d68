"""The last live answer outlives the cache: a definitive verdict never changes because a cache went away.

The attack this pins: a live source said "suspended", the older upload says "valid"; Redis (the only place
the live answer lived) died, the live source was rate limited, and the answer turned "valid". Now every
definitive live answer is kept in the records database, one row per change, and used, marked stale, when
the source cannot answer.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from aggregator.cache import SourceCache
from aggregator.config import Settings
from aggregator.gateway import Gateway
from aggregator.models import (
    Certificate,
    CertKind,
    CertStatus,
    Department,
    ErrorKind,
    Outcome,
    Query,
    SourceResult,
    Verdict,
)
from aggregator.records import RecordStore
from aggregator.records.live import LiveHistory
from aggregator.records.schema import live_answers
from aggregator.resilience.health import Recheck, RedisHealth
from tests.records_support import ID_WANG, ID_ZHANG, mem_row, write_csv
from tests.redis_server import RedisServer

TODAY = date(2026, 11, 25)
NUMBER = "T" + ID_ZHANG


def mem_api_result(status: CertStatus | None, *, source: str = "mem_api") -> SourceResult:
    certs = []
    if status is not None:
        certs = [
            Certificate(
                number=NUMBER,
                kind=CertKind.MEM_SPECIAL_OPERATION,
                department=Department.MEM,
                holder_name="张小三",
                holder_id_number=ID_ZHANG,
                category="电工作业",
                operation_item="低压电工作业",
                valid_until=date(2029, 1, 2),
                status=status,
                status_text={CertStatus.SUSPENDED: "暂扣", CertStatus.VALID: "有效"}.get(status),
            )
        ]
    return SourceResult(
        source=source,
        department=Department.MEM,
        mode="api",
        outcome=Outcome.FOUND if certs else Outcome.NOT_FOUND,
        certificates=certs,
        fetched_at=datetime.now(UTC),
    )


class ScriptedRunner:
    """mem_api answers what `status` says (None: not found; "down": unavailable, rate limited); the other
    live sources are not found."""

    def __init__(self) -> None:
        self.status: CertStatus | str | None = None
        self.calls = 0

    async def run(self, source: Any, adapter: Any, query: Any, *, deadline: float) -> SourceResult:
        if source.id != "mem_api":
            return SourceResult(
                source=source.id, department=source.department, mode=source.mode, outcome=Outcome.NOT_FOUND,
                fetched_at=datetime.now(UTC),
            )
        self.calls += 1
        if self.status == "down":
            return SourceResult(
                source=source.id, department=source.department, mode=source.mode, outcome=Outcome.UNAVAILABLE,
                error_kind=ErrorKind.RATE_LIMITED, message="rate limited", fetched_at=datetime.now(UTC),
            )
        return mem_api_result(self.status)  # type: ignore[arg-type]

    async def close(self) -> None:
        pass


@pytest.fixture
async def valid_upload(tmp_path: Path):
    """SQLite with last quarter's upload: the card is valid there."""
    s = await RecordStore.open(f"sqlite+aiosqlite:///{tmp_path / 'certq.sqlite3'}")
    path = write_csv(tmp_path / "mem-2026Q1.csv", [mem_row(name="张小三")])
    assert (await s.import_file(path, department="mem", quarter="2026Q1")).status == "imported"
    yield s
    await s.close()


def gateway(settings: Settings, store: RecordStore, runner: ScriptedRunner, cache: SourceCache | None = None) -> Gateway:
    return Gateway(settings, store, runner=runner, cache=cache, today=lambda: TODAY)  # type: ignore[arg-type]


async def history_rows(store: RecordStore) -> list[Any]:
    async with store.engine.connect() as conn:
        return list((await conn.execute(sa.select(live_answers).order_by(live_answers.c.id))).all())


async def test_a_suspension_seen_live_survives_the_cache_and_the_source_going_away(settings, valid_upload) -> None:
    runner = ScriptedRunner()
    runner.status = CertStatus.SUSPENDED
    gw = gateway(settings, valid_upload, runner)
    try:
        first = await gw.lookup(NUMBER)
        assert first.verdict == Verdict.SUSPENDED
        await gw.settle()
    finally:
        await gw.close()

    # A new process (or a Redis that died): an empty cache, and the live source is rate limited.
    runner.status = "down"
    gw = gateway(settings, valid_upload, runner)
    try:
        again = await gw.lookup(NUMBER)
    finally:
        await gw.close()
    assert again.verdict == Verdict.SUSPENDED, again.verdict_reason  # not the older upload's "valid"
    mem_api = next(s for s in again.sources if s.source == "mem_api")
    assert mem_api.outcome == Outcome.FOUND and mem_api.stale and mem_api.from_cache
    assert "rate_limited" in (mem_api.message or "")
    assert mem_api.fetched_at is not None and mem_api.fetched_at <= datetime.now(UTC)
    assert "上次的实时结果" in again.verdict_reason and "mem_api" in again.verdict_reason
    # The upload's disagreeing value is listed, not hidden.
    assert any(c.field == "status" and c.chosen_source == "mem_api" for c in again.conflicts)


async def test_without_any_live_answer_kept_an_unavailable_source_is_still_unavailable(settings, valid_upload) -> None:
    runner = ScriptedRunner()
    runner.status = "down"
    gw = gateway(settings, valid_upload, runner)
    try:
        a = await gw.lookup(NUMBER)
    finally:
        await gw.close()
    mem_api = next(s for s in a.sources if s.source == "mem_api")
    assert mem_api.outcome == Outcome.UNAVAILABLE and mem_api.error_kind == ErrorKind.RATE_LIMITED
    assert not a.complete


async def test_one_row_per_change_not_per_fetch(store) -> None:
    history = LiveHistory(store.engine)
    query = Query(number=NUMBER)
    assert await history.record("mem_api", query, mem_api_result(CertStatus.VALID))
    history.forget()  # as another process would: no memo, the database decides
    assert not await history.record("mem_api", query, mem_api_result(CertStatus.VALID))
    assert not await history.record("mem_api", query, mem_api_result(CertStatus.VALID))
    assert await history.record("mem_api", query, mem_api_result(CertStatus.SUSPENDED))
    assert await history.record("mem_api", query, mem_api_result(None))  # not found is an answer too
    rows = await history_rows(store)
    assert [r.outcome for r in rows] == ["found", "found", "not_found"]
    assert rows[0].last_seen >= rows[0].first_seen
    last = await history.last("mem_api", query)
    assert last is not None and last.outcome == Outcome.NOT_FOUND
    # Errors and answers that came from a cache are not kept.
    down = mem_api_result(None).model_copy(update={"outcome": Outcome.UNAVAILABLE, "error_kind": ErrorKind.TIMEOUT})
    assert not await history.record("mem_api", query, down)
    assert not await history.record("mem_api", query, mem_api_result(CertStatus.VALID).model_copy(update={"from_cache": True}))
    assert len(await history_rows(store)) == 3
    # A query is kept as a digest (it may carry a name); the number asked about is in clear.
    assert rows[0].number == NUMBER and NUMBER not in rows[0].query_digest


async def test_a_card_found_with_a_name_serves_a_later_lookup_without_one_but_a_not_found_does_not(store) -> None:
    history = LiveHistory(store.engine)
    with_name = Query(number=NUMBER, name="张小三")
    assert await history.record("mem_api", with_name, mem_api_result(CertStatus.SUSPENDED))
    last = await history.last("mem_api", Query(number=NUMBER))  # the public, no name
    assert last is not None and last.certificates[0].status == CertStatus.SUSPENDED

    other = "T" + ID_WANG
    assert await history.record("mem_api", Query(number=other, name="错名"), mem_api_result(None))
    assert await history.last("mem_api", Query(number=other, name="王五")) is None  # asked with another name
    assert (await history.last("mem_api", Query(number=other, name="错名"))).outcome == Outcome.NOT_FOUND
    assert await history.last("samr_api", Query(number=NUMBER)) is None  # another source's history is its own


async def test_a_newer_live_not_found_is_said_beside_an_upload_that_holds_the_certificate(settings, valid_upload) -> None:
    runner = ScriptedRunner()
    runner.status = None  # the live source, asked now, does not know the card the upload holds
    gw = gateway(settings, valid_upload, runner)
    try:
        a = await gw.lookup(NUMBER)
    finally:
        await gw.close()
    assert a.verdict == Verdict.VALID  # the upload still decides ...
    assert "更新的实时查询 mem_api" in a.verdict_reason  # ... and the answer says what disagrees


@pytest.mark.redis
async def test_redis_killed_under_lookups_never_flips_a_verdict(settings, valid_upload) -> None:
    runner = ScriptedRunner()
    runner.status = CertStatus.SUSPENDED
    with RedisServer() as server:
        cache = SourceCache.from_url(server.url, prefix="live-history-test")
        gw = gateway(settings, valid_upload, runner, cache=cache)
        try:
            assert (await gw.lookup(NUMBER)).verdict == Verdict.SUSPENDED
            await gw.settle()
            server.kill()
            runner.status = "down"  # with the cache gone, the source is asked and is rate limited
            verdicts = [(await gw.lookup(NUMBER)).verdict for _ in range(20)]
            server.start()
            await asyncio.sleep(0.6)
            verdicts += [(await gw.lookup(NUMBER)).verdict for _ in range(20)]
        finally:
            await gw.close()
    assert set(verdicts) == {Verdict.SUSPENDED}


def test_a_dead_backend_is_probed_by_one_call_at_a_time_with_growing_pauses() -> None:
    now = [0.0]
    recheck = Recheck(first_s=0.5, max_s=4.0, clock=lambda: now[0])
    assert recheck.may_try() == "call"
    assert recheck.failed() is True  # the outage starts
    assert recheck.may_try() is None  # everyone uses the fallback during the pause
    pauses = []
    for _ in range(6):
        start = now[0]
        while recheck.may_try() is None:
            now[0] += 0.05
        pauses.append(round(now[0] - start, 1))
        assert recheck.may_try() is None  # one probe at a time: the others keep to the fallback
        recheck.failed(probe=True)
    assert pauses == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    while recheck.may_try() is None:
        now[0] += 0.05
    assert recheck.succeeded(probe=True) is True
    assert recheck.may_try() == "call" and recheck.pause_s == 0.5


async def test_redis_health_sends_one_probe_while_down_and_the_rest_to_the_fallback() -> None:
    health = RedisHealth(timeout_s=0.2, recheck_s=0.05)
    shared_calls = 0

    async def shared() -> str:
        nonlocal shared_calls
        shared_calls += 1
        await asyncio.sleep(0.02)
        raise ConnectionError("refused")

    async def local() -> str:
        return "local"

    assert await health.call(shared, local) == "local"
    assert health.down and shared_calls == 1
    await asyncio.sleep(0.06)
    answers = await asyncio.gather(*(health.call(shared, local) for _ in range(50)))
    assert set(answers) == {"local"}
    assert shared_calls == 2  # one probe, not fifty reconnections
