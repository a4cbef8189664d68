"""The gateway answers link-outs and fresh in-process cache hits inline, without a task and a timer per source.

What that shortcut must not change: the answer (field by field, apart from timing), the deadline for the
sources that do have to be asked, coalescing with a lookup already asking the same source, and stale-serving.
The "old way" below is the same gateway with the shortcut turned off (`_answer_now` always None), which is
exactly the code path every source took before.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from aggregator.cache.envelope import make_envelope
from aggregator.config import Settings
from aggregator.gateway import Gateway
from aggregator.models import ErrorKind, Mode, Outcome, Query, SourceResult
from aggregator.records import RecordStore
from tests.records_support import ID_ZHANG, mem_row, write_csv

TODAY = date(2026, 11, 25)
NUMBER = "T" + ID_ZHANG
TIMING = {"answered_at", "elapsed_ms"}


class StubRunner:
    """Stands in for the runner (no HTTP): each live source answers not_found, or never (`hang`)."""

    def __init__(self, *, hang: frozenset[str] = frozenset(), fail: frozenset[str] = frozenset()) -> None:
        self.calls: list[str] = []
        self.hang = hang
        self.fail = fail

    async def run(self, source: Any, adapter: Any, query: Any, *, deadline: float) -> SourceResult:
        self.calls.append(source.id)
        if source.id in self.hang:
            await asyncio.sleep(3600)
        outcome = Outcome.UNAVAILABLE if source.id in self.fail else Outcome.NOT_FOUND
        return SourceResult(
            source=source.id,
            department=source.department,
            mode=source.mode,
            outcome=outcome,
            error_kind=ErrorKind.UPSTREAM_ERROR if outcome == Outcome.UNAVAILABLE else None,
            elapsed_ms=12.5,
            fetched_at=datetime.now(UTC),
        )

    async def close(self) -> None:
        pass


@pytest.fixture
async def mem_store(tmp_path: Path):
    """SQLite with two MEM certificates of one holder (the records plugin's `store` would add PostgreSQL runs)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'certq.sqlite3'}"
    s = await RecordStore.open(url)
    path = write_csv(tmp_path / "mem-2026Q1.csv", [mem_row(), mem_row(item="高压电工作业")])
    assert (await s.import_file(path, department="mem", quarter="2026Q1")).status == "imported"
    yield s
    await s.close()


def gateway(settings: Settings, store: RecordStore, runner: StubRunner) -> Gateway:
    return Gateway(settings, store, runner=runner, today=lambda: TODAY)  # type: ignore[arg-type]


def the_old_way(gw: Gateway) -> None:
    gw._answer_now = lambda *a, **kw: None  # type: ignore[method-assign]


def without_timing(answer: Any) -> dict[str, Any]:
    data = answer.model_dump(exclude=TIMING)
    for s in data["sources"]:
        if s["mode"] == Mode.LINK:
            s.pop("elapsed_ms")  # built on the spot: its own build time
    return data


async def test_an_answer_from_fresh_cache_entries_equals_the_answer_made_the_old_way(settings, mem_store) -> None:
    runner = StubRunner()
    gw = gateway(settings, mem_store, runner)
    try:
        first = await gw.lookup(NUMBER, name="张小三")  # fills the cache (records and live sources)
        assert not any(s.from_cache for s in first.sources)
        hits_before = gw.cache.stats()["hits"]
        inline = await gw.lookup(NUMBER, name="张小三")
        asked = [s for s in inline.sources if s.outcome in (Outcome.FOUND, Outcome.NOT_FOUND)]
        assert {s.mode for s in asked} == {Mode.RECORDS, Mode.API}
        assert all(s.from_cache and not s.stale for s in asked)
        assert any(s.outcome == Outcome.MANUAL for s in inline.sources)  # link-outs are inline too
        assert gw.cache.stats()["hits"] == hits_before + len(asked)  # counted as fetch counts them

        kept = await gw.lookup(NUMBER, name="张小三")  # the same near-tier results: the merged answer is reused
        assert kept is not inline and kept.answered_at >= inline.answered_at
        assert kept.certificates is inline.certificates and kept.sources is inline.sources  # not built again
        assert gw.cache.stats()["hits"] == hits_before + 2 * len(asked)  # each source still counted as a hit

        the_old_way(gw)
        old = await gw.lookup(NUMBER, name="张小三")
        assert without_timing(inline) == without_timing(old) == without_timing(kept)
        assert [s.source for s in inline.sources] == [c.id for c in settings.sources]
        assert runner.calls.count("mem_api") == 1  # only the first lookup asked the live source
    finally:
        await gw.close()


async def test_a_kept_answer_is_not_reused_once_a_source_answers_differently(settings, mem_store) -> None:
    gw = gateway(settings, mem_store, StubRunner())
    try:
        await gw.lookup(NUMBER)
        before = await gw.lookup(NUMBER)  # built from near-tier results and kept
        assert {s.source: s.outcome for s in before.sources}["mem_api"] == Outcome.NOT_FOUND
        api, query = source(settings, "mem_api"), gw_query(NUMBER)
        found = SourceResult(source="mem_api", department=api.department, mode=api.mode, outcome=Outcome.FOUND)
        await gw.cache._backend.set(gw.cache.key(api, query), make_envelope(api, found, time.time(), 900).encode(), 900)
        after = await gw.lookup(NUMBER)  # a new version of mem_api's answer: merged again
        assert {s.source: s.outcome for s in after.sources}["mem_api"] == Outcome.FOUND
        assert {s.source: s.from_cache for s in after.sources}["mem_api"]
        assert without_timing(await gw.lookup(NUMBER)) == without_timing(after)
    finally:
        await gw.close()


async def test_a_miss_among_hits_still_gets_the_deadline(settings, mem_store) -> None:
    runner = StubRunner()
    gw = gateway(settings, mem_store, runner)
    try:
        await gw.lookup(NUMBER)  # every source cached ...
        entries = gw.cache._backend._entries  # type: ignore[union-attr]
        for key in [k for k in entries if ":src:mem_api:" in k]:
            del entries[key]
        runner.hang = frozenset({"mem_api"})  # ... but mem_api: a miss, and it hangs
        started = time.monotonic()
        a = await gw.lookup(NUMBER, deadline_s=0.3)
        took = time.monotonic() - started
        assert took < 1.0
        by_id = {s.source: s for s in a.sources}
        assert by_id["mem_api"].outcome == Outcome.UNAVAILABLE and by_id["mem_api"].error_kind == ErrorKind.TIMEOUT
        assert by_id["mem_records"].outcome == Outcome.FOUND and by_id["mem_records"].from_cache
        assert not a.complete
    finally:
        await gw.close()


async def test_a_spent_deadline_is_a_timeout_even_for_cached_sources(settings, mem_store) -> None:
    gw = gateway(settings, mem_store, StubRunner())
    try:
        await gw.lookup(NUMBER)
        a = await gw.lookup(NUMBER, deadline_s=0)
        asked = [s for s in a.sources if s.outcome != Outcome.SKIPPED]
        assert asked and all(s.error_kind == ErrorKind.TIMEOUT for s in asked)
    finally:
        await gw.close()


async def test_a_lookup_joins_a_flight_in_progress_instead_of_reading_the_cache(settings, mem_store) -> None:
    runner = StubRunner(hang=frozenset({"mem_api"}))
    gw = gateway(settings, mem_store, runner)
    try:
        first = asyncio.create_task(gw.lookup(NUMBER, deadline_s=0.5))
        await asyncio.sleep(0.05)
        # A fresh entry appears while the flight runs (on Redis: stored by another process); `fetch` joins the
        # flight without reading it, and so must the inline path.
        api, query = source(settings, "mem_api"), gw_query(NUMBER)
        found = SourceResult(source="mem_api", department=api.department, mode=api.mode, outcome=Outcome.FOUND)
        await gw.cache._backend.set(gw.cache.key(api, query), make_envelope(api, found, time.time(), 900).encode(), 900)
        assert gw.cache.peek(api, query) is None
        second = await gw.lookup(NUMBER, deadline_s=0.2)
        await first
        assert runner.calls.count("mem_api") == 1  # the second lookup joined the first one's call
        assert {s.source: s.error_kind for s in second.sources}["mem_api"] == ErrorKind.TIMEOUT
    finally:
        await gw.close()


async def test_an_expired_entry_is_not_served_inline_but_stale_when_the_source_fails(settings, mem_store) -> None:
    runner = StubRunner()
    gw = gateway(settings, mem_store, runner)
    try:
        await gw.lookup(NUMBER)
        offset = source(settings, "mem_api").cache.not_found_s + 1
        gw.cache._clock = lambda: time.time() + offset  # type: ignore[method-assign]
        gw.cache._backend._clock = gw.cache._clock  # type: ignore[union-attr]
        runner.fail = frozenset({"mem_api"})
        a = await gw.lookup(NUMBER)
        mem_api = {s.source: s for s in a.sources}["mem_api"]
        assert mem_api.outcome == Outcome.NOT_FOUND and mem_api.from_cache and mem_api.stale
        assert runner.calls.count("mem_api") == 2
    finally:
        await gw.close()


def source(settings: Settings, source_id: str) -> Any:
    return next(s for s in settings.sources if s.id == source_id)


def gw_query(number: str) -> Query:
    return Query(number=number)
