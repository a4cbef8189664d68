"""The source-result cache on its embedded backend: TTL per outcome, versions, serve-stale, single-flight."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from aggregator.cache import SourceCache
from aggregator.config import CacheTtl, SourceConfig
from aggregator.models import (
    Certificate,
    CertKind,
    CertStatus,
    Department,
    ErrorKind,
    Mode,
    Outcome,
    Query,
    SourceResult,
)
from tests.helpers import FakeClock

FOUND_S, NOT_FOUND_S, MAX_STALE_S = 3600, 600, 86400
T0 = 1_800_000_000.0


def make_source(source_id: str = "mem_records", *, timeout_s: float = 5.0, **ttl: int) -> SourceConfig:
    ttls = {"found_s": FOUND_S, "not_found_s": NOT_FOUND_S, "max_stale_s": MAX_STALE_S, **ttl}
    return SourceConfig(
        id=source_id,
        name="test source",
        department=Department.MEM,
        mode=Mode.RECORDS,
        adapter="records",
        kinds=[CertKind.MEM_SPECIAL_OPERATION],
        patterns=["*"],
        timeout_s=timeout_s,
        cache=CacheTtl(**ttls),
    )


def result(outcome: Outcome, number: str = "T110105199003071239", **kw: object) -> SourceResult:
    certs = []
    if outcome == Outcome.FOUND:
        certs = [
            Certificate(
                number=number,
                kind=CertKind.MEM_SPECIAL_OPERATION,
                department=Department.MEM,
                holder_name="张伟",
                status=CertStatus.VALID,
            )
        ]
    return SourceResult(
        source="mem_records",
        department=Department.MEM,
        mode=Mode.RECORDS,
        outcome=outcome,
        certificates=certs,
        fetched_at=datetime.now(UTC),
        **kw,
    )


class Source:
    """A fake upstream: answers with the queued results (the last one repeats) and counts its calls."""

    def __init__(self, *answers: SourceResult, delay_s: float = 0.0) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.delay_s = delay_s

    async def __call__(self) -> SourceResult:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        answer = self.answers[min(self.calls, len(self.answers)) - 1]
        return answer.model_copy(update={"fetched_at": datetime.now(UTC)})


QUERY = Query(number="T110105199003071239")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def cache(clock: FakeClock):
    c = SourceCache.memory(clock=clock)
    yield c
    await c.close()


# --- TTL per outcome ----------------------------------------------------------------------------


async def test_a_found_answer_is_served_from_cache_until_its_ttl(cache: SourceCache, clock: FakeClock) -> None:
    src, upstream = make_source(), Source(result(Outcome.FOUND))
    first = await cache.fetch(src, QUERY, upstream)
    assert first.outcome == Outcome.FOUND and not first.from_cache

    clock.advance(FOUND_S - 1)
    again = await cache.fetch(src, QUERY, upstream)
    assert upstream.calls == 1
    assert again.from_cache and not again.stale
    assert again.fetched_at == first.fetched_at
    assert again.certificates == first.certificates

    clock.advance(2)
    late = await cache.fetch(src, QUERY, upstream)
    assert upstream.calls == 2
    assert not late.from_cache


async def test_a_not_found_answer_expires_after_its_own_shorter_ttl(cache: SourceCache, clock: FakeClock) -> None:
    src, upstream = make_source(), Source(result(Outcome.NOT_FOUND))
    await cache.fetch(src, QUERY, upstream)
    clock.advance(NOT_FOUND_S - 1)
    assert (await cache.fetch(src, QUERY, upstream)).from_cache
    clock.advance(2)
    assert not (await cache.fetch(src, QUERY, upstream)).from_cache
    assert upstream.calls == 2


@pytest.mark.parametrize("kind", list(ErrorKind))
async def test_an_unavailable_answer_is_never_stored(cache: SourceCache, kind: ErrorKind) -> None:
    src, upstream = make_source(), Source(result(Outcome.UNAVAILABLE, error_kind=kind))
    for _ in range(3):
        r = await cache.fetch(src, QUERY, upstream)
        assert r.outcome == Outcome.UNAVAILABLE and r.error_kind == kind and not r.from_cache
    assert upstream.calls == 3
    assert cache.stats()["stores"] == 0


@pytest.mark.parametrize("outcome", [Outcome.MANUAL, Outcome.SKIPPED])
async def test_manual_and_skipped_answers_are_never_stored(cache: SourceCache, outcome: Outcome) -> None:
    src, upstream = make_source(), Source(result(outcome))
    await cache.fetch(src, QUERY, upstream)
    await cache.fetch(src, QUERY, upstream)
    assert upstream.calls == 2


async def test_a_zero_ttl_outcome_is_not_cached(cache: SourceCache) -> None:
    src, upstream = make_source(not_found_s=0), Source(result(Outcome.NOT_FOUND))
    await cache.fetch(src, QUERY, upstream)
    await cache.fetch(src, QUERY, upstream)
    assert upstream.calls == 2


# --- keys ---------------------------------------------------------------------------------------


async def test_a_new_data_version_makes_cached_answers_unreachable(cache: SourceCache) -> None:
    src = make_source()
    upstream = Source(result(Outcome.NOT_FOUND), result(Outcome.FOUND))
    before = await cache.fetch(src, QUERY, upstream, version="3")
    assert before.outcome == Outcome.NOT_FOUND
    after = await cache.fetch(src, QUERY, upstream, version="4")
    assert after.outcome == Outcome.FOUND and not after.from_cache
    assert upstream.calls == 2


async def test_different_queries_and_sources_do_not_share_answers(cache: SourceCache) -> None:
    upstream = Source(result(Outcome.FOUND))
    await cache.fetch(make_source(), QUERY, upstream)
    await cache.fetch(make_source(), Query(number=QUERY.number, name="李娜"), upstream)
    await cache.fetch(make_source(), Query(number="T110105199003071247"), upstream)
    await cache.fetch(make_source("samr_records"), QUERY, upstream)
    assert upstream.calls == 4


def test_the_key_carries_prefix_schema_source_version_and_a_query_hash() -> None:
    cache = SourceCache.memory()
    key = cache.key(make_source(), QUERY, "7")
    prefix, schema, src, source_id, version, digest = key.split(":")
    assert (prefix, schema, src, source_id, version) == ("certq", "v1", "src", "mem_records", "7")
    assert len(digest) == 64 and QUERY.number not in key  # no personal data in keys


# --- serve stale --------------------------------------------------------------------------------


async def test_an_expired_answer_is_served_marked_stale_while_the_source_fails(
    cache: SourceCache, clock: FakeClock
) -> None:
    src = make_source()
    upstream = Source(
        result(Outcome.FOUND),
        result(Outcome.UNAVAILABLE, error_kind=ErrorKind.TIMEOUT, message="timed out after 5 s"),
        result(Outcome.FOUND),
    )
    original = await cache.fetch(src, QUERY, upstream)
    clock.advance(FOUND_S + 60)

    stale = await cache.fetch(src, QUERY, upstream)
    assert upstream.calls == 2, "an expired answer is not served without asking the source first"
    assert stale.outcome == Outcome.FOUND
    assert stale.from_cache and stale.stale
    assert stale.fetched_at == original.fetched_at
    assert stale.message is not None and stale.message.startswith("stale: source timeout")
    assert stale.certificates == original.certificates
    assert cache.stats()["stale_served"] == 1

    recovered = await cache.fetch(src, QUERY, upstream)
    assert recovered.outcome == Outcome.FOUND and not recovered.stale and not recovered.from_cache
    assert recovered.fetched_at != original.fetched_at
    assert (await cache.fetch(src, QUERY, upstream)).from_cache  # the fresh answer was stored
    assert upstream.calls == 3


async def test_no_stale_answer_past_the_max_stale_window(cache: SourceCache, clock: FakeClock) -> None:
    src = make_source()
    upstream = Source(result(Outcome.FOUND), result(Outcome.UNAVAILABLE, error_kind=ErrorKind.CAPTCHA))
    await cache.fetch(src, QUERY, upstream)
    clock.advance(FOUND_S + MAX_STALE_S + 1)
    r = await cache.fetch(src, QUERY, upstream)
    assert r.outcome == Outcome.UNAVAILABLE and r.error_kind == ErrorKind.CAPTCHA
    assert not r.from_cache and not r.stale


# --- single-flight ------------------------------------------------------------------------------


async def test_a_hundred_concurrent_identical_lookups_make_one_call(cache: SourceCache) -> None:
    upstream = Source(result(Outcome.FOUND), delay_s=0.05)
    src = make_source()
    results = await asyncio.gather(*(cache.fetch(src, QUERY, upstream) for _ in range(100)))
    assert upstream.calls == 1
    assert all(r.outcome == Outcome.FOUND and r.certificates == results[0].certificates for r in results)
    stats = cache.stats()
    assert stats["misses"] == 1 and stats["coalesced_local"] == 99


async def test_waiters_get_their_own_copy_of_the_shared_result(cache: SourceCache) -> None:
    upstream = Source(result(Outcome.FOUND), delay_s=0.01)
    a, b = await asyncio.gather(*(cache.fetch(make_source(), QUERY, upstream) for _ in range(2)))
    a.certificates[0].holder_name = "changed by one caller"
    assert b.certificates[0].holder_name == "张伟"


async def test_an_unavailable_answer_is_shared_with_concurrent_lookups_but_not_stored(cache: SourceCache) -> None:
    upstream = Source(result(Outcome.UNAVAILABLE, error_kind=ErrorKind.RATE_LIMITED), delay_s=0.02)
    src = make_source()
    results = await asyncio.gather(*(cache.fetch(src, QUERY, upstream) for _ in range(10)))
    assert upstream.calls == 1
    assert {r.error_kind for r in results} == {ErrorKind.RATE_LIMITED}
    await cache.fetch(src, QUERY, upstream)
    assert upstream.calls == 2


async def test_one_lookup_giving_up_does_not_cancel_the_call_for_the_others(cache: SourceCache) -> None:
    release = asyncio.Event()
    calls = 0

    async def slow() -> SourceResult:
        nonlocal calls
        calls += 1
        await release.wait()
        return result(Outcome.FOUND)

    src = make_source()
    first = asyncio.create_task(cache.fetch(src, QUERY, slow))
    await asyncio.sleep(0)
    others = [asyncio.create_task(cache.fetch(src, QUERY, slow)) for _ in range(3)]
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    release.set()
    results = await asyncio.gather(*others)
    assert calls == 1
    assert all(r.outcome == Outcome.FOUND for r in results)
    assert (await cache.fetch(src, QUERY, slow)).from_cache


async def test_a_failing_call_reaches_every_sharer_and_nothing_is_stored(cache: SourceCache) -> None:
    calls = 0

    async def broken() -> SourceResult:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("adapter bug")

    src = make_source()
    outcomes = await asyncio.gather(*(cache.fetch(src, QUERY, broken) for _ in range(5)), return_exceptions=True)
    assert calls == 1
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    ok = Source(result(Outcome.FOUND))
    assert (await cache.fetch(src, QUERY, ok)).outcome == Outcome.FOUND
    assert ok.calls == 1


# --- the embedded backend -----------------------------------------------------------------------


async def test_the_memory_backend_keeps_at_most_max_entries_evicting_the_least_recently_used(clock: FakeClock) -> None:
    cache = SourceCache.memory(max_entries=3, clock=clock)
    src = make_source()
    upstream = Source(result(Outcome.FOUND))
    queries = [Query(number=f"T11010519900307{i:04d}") for i in range(4)]
    for q in queries[:3]:
        await cache.fetch(src, q, upstream)
    await cache.fetch(src, queries[0], upstream)  # used again: now the most recent
    await cache.fetch(src, queries[3], upstream)  # evicts queries[1]
    assert upstream.calls == 4
    assert (await cache.fetch(src, queries[0], upstream)).from_cache
    assert (await cache.fetch(src, queries[2], upstream)).from_cache
    assert not (await cache.fetch(src, queries[1], upstream)).from_cache
    await cache.close()


async def test_the_memory_backend_drops_entries_past_their_stale_window(clock: FakeClock) -> None:
    cache = SourceCache.memory(clock=clock)
    await cache.fetch(make_source(), QUERY, Source(result(Outcome.FOUND)))
    assert len(cache._backend) == 1  # type: ignore[arg-type]
    clock.advance(FOUND_S + MAX_STALE_S + 1)
    await cache.fetch(make_source(), QUERY, Source(result(Outcome.UNAVAILABLE, error_kind=ErrorKind.TIMEOUT)))
    assert len(cache._backend) == 0  # type: ignore[arg-type]


def test_from_url_without_a_url_is_the_in_process_cache() -> None:
    assert SourceCache.from_url(None).backend_name == "memory"
    assert SourceCache.from_url("", max_entries=10, prefix="ignored").backend_name == "memory"
    assert SourceCache.from_url(None).client is None


def test_from_url_rejects_what_it_cannot_use() -> None:
    with pytest.raises(ValueError, match="redis://"):
        SourceCache.from_url("http://127.0.0.1:6379")
    with pytest.raises(TypeError, match="ttl"):
        SourceCache.from_url(None, ttl=5)
    with pytest.raises(ValueError, match="max_entries"):
        SourceCache.memory(max_entries=0)


def test_stats_name_every_counter() -> None:
    assert set(SourceCache.memory().stats()) >= {
        "hits",
        "misses",
        "stale_served",
        "coalesced_local",
        "coalesced_remote",
        "stores",
        "backend_errors",
        "outages",
    }
