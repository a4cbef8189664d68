"""Benchmarks for the source-result cache (aggregator/cache): each figure beside a baseline from the same run.

    python bench/bench_cache.py                                  # all three, on a private redis-server
    CERTQ_BENCH_REDIS_URL=redis://127.0.0.1:6379/0 python bench/bench_cache.py   # on the machine's Redis
    python bench/bench_cache.py --only a --ops 20000             # one part

(a) a fresh hit through SourceCache.fetch on Redis against a bare redis.asyncio GET of a value of the same
    size on the same client: per-operation latency, sequential and with 32 tasks (each on its own key, so
    nothing is coalesced), and the ratio;
(b) 1,000 concurrent identical cold lookups per source from 2 processes (500 each, 4 sources at once)
    against a local aiohttp "department" that takes 200 ms: upstream calls per source (aim: exactly 1);
(c) a Zipf (s=1.1) workload of 100,000 lookups over 20,000 numbers: hit ratio and upstream calls saved,
    memory and Redis backends, against the fewest calls possible (one per distinct number).

Redis: --redis-url, else CERTQ_BENCH_REDIS_URL, else a private redis-server started for the run on a free port
(bench/common.py `bench_redis`). Keys live under a unique prefix and are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: bench.common, aggregator

import redis.asyncio as aioredis  # noqa: E402
from aiohttp import ClientSession, web  # noqa: E402

from aggregator.cache import SourceCache  # noqa: E402
from aggregator.config import CacheTtl, SourceConfig  # noqa: E402
from aggregator.models import (  # noqa: E402
    Certificate,
    CertKind,
    CertStatus,
    Department,
    Mode,
    Outcome,
    Query,
    SourceResult,
)
from bench.common import (  # noqa: E402
    ROOT,
    BenchRedis,
    Op,
    bench_redis,
    delete_prefix,
    interleaved,
    run_loop,
    unique_prefix,
)

SOURCE_IDS = ("mem_records", "mohurd_records", "samr_records", "mohrss_records")
DEPARTMENTS = {
    "mem_records": (Department.MEM, CertKind.MEM_SPECIAL_OPERATION),
    "mohurd_records": (Department.MOHURD, CertKind.MOHURD_CONSTRUCTION),
    "samr_records": (Department.SAMR, CertKind.SAMR_SPECIAL_EQUIPMENT),
    "mohrss_records": (Department.MOHRSS, CertKind.MOHRSS_SKILL_LEVEL),
}


def source(source_id: str = "mem_records") -> SourceConfig:
    department, kind = DEPARTMENTS[source_id]
    return SourceConfig.model_validate(
        {
            "id": source_id,
            "name": f"bench {source_id}",
            "department": department,
            "mode": Mode.RECORDS,
            "adapter": "records",
            "kinds": [kind],
            "patterns": ["*"],
            "timeout_s": 5.0,
            "cache": CacheTtl(found_s=3600, not_found_s=600, max_stale_s=86400),
        }
    )


def answer(src: SourceConfig, number: str, found: bool = True) -> SourceResult:
    """A realistic source answer: one certificate with the usual fields filled in."""
    certs = []
    if found:
        certs = [
            Certificate(
                number=number,
                kind=src.kinds[0],
                department=src.department,
                issuer="北京市应急管理局",
                holder_name="张伟",
                holder_id_number="110105199003071239",
                gender="男",
                category="电工作业",
                operation_item="低压电工作业",
                issued_on=datetime(2021, 3, 4).date(),
                valid_from=datetime(2021, 3, 4).date(),
                valid_until=datetime(2027, 3, 3).date(),
                next_review_on=datetime(2024, 3, 4).date(),
                status=CertStatus.VALID,
                status_text="有效",
            )
        ]
    return SourceResult(
        source=src.id,
        department=src.department,
        mode=src.mode,
        outcome=Outcome.FOUND if found else Outcome.NOT_FOUND,
        certificates=certs,
        message="上报批次 2026Q3",
        elapsed_ms=3.2,
        fetched_at=datetime.now(UTC),
        data_as_of=datetime(2026, 10, 8, tzinfo=UTC),
    )


def us(seconds: float) -> str:
    return f"{seconds * 1e6:8.1f} µs"


# --- (a) hit latency against a bare GET -------------------------------------------------------


async def wall_per_op(ops: dict[str, Op], total: int, concurrency: int) -> dict[str, float]:
    """Median wall time per operation of each op over 10 interleaved rounds (bench/common.py `interleaved`)."""
    return {name: wall for name, (wall, _cpu) in (await interleaved(ops, total, concurrency)).items()}


async def bench_hit_latency(url: str, ops: int) -> None:
    print("\n(a) cached SourceCache.fetch hit on Redis vs a bare redis.asyncio GET of a same-size value")
    prefix = unique_prefix()
    cache = SourceCache.from_url(url, prefix=prefix)  # the client a gateway builds; the bare GETs use it too
    client = cache.client
    assert client is not None
    plain = aioredis.Redis.from_url(url, max_connections=64)  # redis-py's own defaults otherwise
    memory = SourceCache.memory()
    src = source()
    workers = 32
    queries = [Query(number=f"T11010519900307{i:04d}") for i in range(workers)]  # one key per worker
    answers = {q.number: answer(src, q.number) for q in queries}

    def call_for(q: Query) -> Callable[[], Awaitable[SourceResult]]:
        async def call() -> SourceResult:
            return answers[q.number]

        return call

    calls = [call_for(q) for q in queries]
    try:
        for q, call in zip(queries, calls, strict=True):
            await cache.fetch(src, q, call)
            await memory.fetch(src, q, call)
        stored = await client.get(cache.key(src, queries[0]))
        assert stored is not None
        bare_keys = [f"{prefix}:bare:{i}" for i in range(workers)]
        for k in bare_keys:
            await client.set(k, b"x" * len(stored))

        async def hit(i: int) -> None:
            r = await cache.fetch(src, queries[i], calls[i])
            assert r.from_cache

        async def bare(i: int) -> None:
            await client.get(bare_keys[i])

        async def plain_bare(i: int) -> None:
            await plain.get(bare_keys[i])

        async def memory_hit(i: int) -> None:
            await memory.fetch(src, queries[i], calls[i])

        contenders: dict[str, Op] = {"bare": bare, "hit": hit, "plain": plain_bare, "memory": memory_hit}
        await interleaved(contenders, 2_000, 1, rounds=2)  # warm up connections and code paths
        seq = await wall_per_op(contenders, ops, 1)
        con = await wall_per_op(contenders, ops, workers)
        print(
            f"    value size {len(stored)} bytes (envelope JSON); {ops} ops per figure, median of 10 interleaved rounds"
        )
        for label, m in (("sequential", seq), (f"{workers} tasks", con)):
            print(
                f"    {label:11s} bare GET {us(m['bare'])}   fetch hit {us(m['hit'])}   ratio {m['hit'] / m['bare']:.2f}x"
                f"   (GET on a default client {us(m['plain'])}; memory backend hit {us(m['memory'])})"
            )
        stats = cache.stats()
        print(f"    redis cache: hits={stats['hits']} misses={stats['misses']} source calls={stats['calls']}")
    finally:
        await memory.close()
        await plain.aclose()
        await delete_prefix(client, prefix)
        await cache.close()


# --- (b) 1,000 concurrent cold lookups from 2 processes -----------------------------------------


async def worker_main(url: str, prefix: str, upstream: str, per_source: int) -> None:
    """One gateway process of part (b): fires `per_source` identical lookups per source at the go signal."""
    cache = SourceCache.from_url(url, prefix=prefix)
    client = cache.client
    assert client is not None
    query = Query(number="T110105199003071239")
    async with ClientSession() as http:

        def call_for(src: SourceConfig) -> Callable[[], Awaitable[SourceResult]]:
            async def call() -> SourceResult:
                async with http.get(f"{upstream}/lookup", params={"source": src.id}) as resp:
                    resp.raise_for_status()
                return answer(src, query.number)

            return call

        sources = [source(s) for s in SOURCE_IDS]
        await client.incr(f"{prefix}:ready")
        while not await client.exists(f"{prefix}:go"):
            await asyncio.sleep(0.001)
        started = time.perf_counter()
        results = await asyncio.gather(
            *(cache.fetch(src, query, call_for(src)) for src in sources for _ in range(per_source))
        )
        elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "elapsed_s": elapsed,
                "found": sum(r.outcome == Outcome.FOUND for r in results),
                "lookups": len(results),
                "stats": cache.stats(),
            }
        )
    )
    await cache.close()


async def bench_two_processes(url: str, total_per_source: int, delay_s: float) -> None:
    print(
        f"\n(b) {total_per_source} concurrent identical cold lookups per source from 2 processes"
        f" ({len(SOURCE_IDS)} sources at once, upstream takes {delay_s * 1000:.0f} ms)"
    )
    prefix = unique_prefix()
    client = aioredis.Redis.from_url(url)
    calls: Counter[str] = Counter()

    async def lookup(request: web.Request) -> web.Response:
        calls[request.query["source"]] += 1
        await asyncio.sleep(delay_s)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/lookup", lookup)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    upstream = f"http://127.0.0.1:{port}"
    per_process = total_per_source // 2
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--worker",
            url,
            prefix,
            upstream,
            str(per_process),
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        async with asyncio.timeout(60):
            while int(await client.get(f"{prefix}:ready") or 0) < 2:
                await asyncio.sleep(0.01)
        await client.set(f"{prefix}:go", 1)
        outputs = [await p.communicate() for p in procs]
        reports = [json.loads(out) for out, _ in outputs]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
        await runner.cleanup()
        await delete_prefix(client, prefix)
        await client.aclose()
    for i, r in enumerate(reports):
        s = r["stats"]
        print(
            f"    process {i + 1}: {r['lookups']} lookups, {r['found']} found, {r['elapsed_s'] * 1000:.0f} ms;"
            f" source calls {s['calls']}, coalesced in-process {s['coalesced_local']},"
            f" answered by the other process's lock holder {s['coalesced_remote']}"
        )
    for sid in SOURCE_IDS:
        print(f"    upstream calls for {sid:15s} {calls[sid]}   (without coalescing: {total_per_source})")
    verdict = "exactly 1 per source" if all(calls[s] == 1 for s in SOURCE_IDS) else "NOT 1 per source"
    print(f"    result: {verdict}")


# --- (c) Zipf workload --------------------------------------------------------------------------


def zipf_sample(n_items: int, s: float, k: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    cum = list(itertools.accumulate(1.0 / (rank**s) for rank in range(1, n_items + 1)))
    total = cum[-1]
    return [bisect.bisect_left(cum, rng.random() * total) for _ in range(k)]


async def run_zipf(cache: SourceCache, sample: list[int], concurrency: int) -> tuple[int, float]:
    src = source()
    calls = 0

    def call_for(number: str, found: bool) -> Callable[[], Awaitable[SourceResult]]:
        async def call() -> SourceResult:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0)
            return answer(src, number, found)

        return call

    it = iter(sample)

    async def worker() -> None:
        for i in it:
            number = f"T{110105199000000000 + i:018d}"
            await cache.fetch(src, Query(number=number), call_for(number, i % 5 != 0))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return calls, time.perf_counter() - started


async def bench_zipf(url: str, lookups: int, distinct: int, s: float, concurrency: int) -> None:
    print(f"\n(c) Zipf s={s} workload: {lookups} lookups over {distinct} numbers, {concurrency} concurrent")
    sample = zipf_sample(distinct, s, lookups, seed=20261125)
    requested = len(set(sample))
    print(f"    distinct numbers requested: {requested} (the fewest upstream calls any cache can make)")
    client = aioredis.Redis.from_url(url)
    prefix = unique_prefix()
    runs: list[tuple[str, SourceCache]] = [
        ("memory (max 100,000)", SourceCache.memory()),
        ("memory (max 2,000)", SourceCache.memory(max_entries=2_000)),
        ("redis", SourceCache.from_url(url, prefix=prefix)),
    ]
    try:
        for label, cache in runs:
            calls, elapsed = await run_zipf(cache, sample, concurrency)
            st = cache.stats()
            print(
                f"    {label:21s} hit ratio {(lookups - calls) / lookups:6.1%}  upstream calls {calls:6d}"
                f"  saved {lookups - calls:6d}  ({calls / requested:.2f}x the minimum)"
                f"  hits {st['hits']} coalesced {st['coalesced_local']}  {lookups / elapsed:8.0f} lookups/s"
            )
            await cache.close()
    finally:
        await delete_prefix(client, prefix)
        await client.aclose()


# --- main ---------------------------------------------------------------------------------------


async def main(args: argparse.Namespace, target: BenchRedis) -> None:
    url = target.url
    print(f"certq cache benchmark  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()},"
        f" redis-py {aioredis.__name__ and __import__('redis').__version__}, event loop {args.loop}; Redis {target}"
    )
    if "a" in args.only:
        await bench_hit_latency(url, args.ops)
    if "b" in args.only:
        await bench_two_processes(url, args.cold, args.upstream_ms / 1000)
    if "c" in args.only:
        await bench_zipf(url, args.lookups, args.distinct, args.zipf_s, args.concurrency)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis-url", default=None, help="default: CERTQ_BENCH_REDIS_URL, else a private redis-server")
    p.add_argument("--only", default="abc", help="which parts to run, e.g. 'ac'")
    p.add_argument("--ops", type=int, default=20_000, help="(a) operations per measurement")
    p.add_argument("--cold", type=int, default=1_000, help="(b) concurrent lookups per source, both processes")
    p.add_argument("--upstream-ms", type=float, default=200.0, help="(b) upstream latency")
    p.add_argument("--lookups", type=int, default=100_000, help="(c) lookups")
    p.add_argument("--distinct", type=int, default=20_000, help="(c) distinct numbers")
    p.add_argument("--zipf-s", type=float, default=1.1, help="(c) Zipf exponent")
    p.add_argument("--concurrency", type=int, default=32, help="(c) concurrent lookups")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    return p.parse_args()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _, _, w_url, w_prefix, w_upstream, w_n = sys.argv
        asyncio.run(worker_main(w_url, w_prefix, w_upstream, int(w_n)))
    else:
        parsed = parse_args()
        with bench_redis(parsed.redis_url) as target:
            run_loop(main(parsed, target), parsed.loop)
