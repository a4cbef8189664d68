"""A cached lookup through the whole gateway against a bare Redis GET round trip, in the same run (issue 4 (a)).

    python bench/bench_gateway_cache.py                              # on a private redis-server
    CERTQ_BENCH_REDIS_URL=redis://127.0.0.1:6379/0 python bench/bench_gateway_cache.py   # on the machine's Redis
    python bench/bench_gateway_cache.py --sources records --lookups 2000 --loop uvloop
    python bench/bench_gateway_cache.py --profile hit.prof          # cProfile the hit path, print the top

bench_cache.py (a) measures one `SourceCache.fetch` hit. This measures what a caller of `Gateway.lookup` gets
once every source's answer is in Redis: normalise and classify the number, route, one cache hit per source
(in its own task: key hash, Redis GET, envelope parse and validation, copy), link-out sources built, merge,
verdict, conflicts and recognitions, the Answer model. The gateway is built the way `Gateway.open(settings,
redis_url=...)` builds it (`SourceCache.from_url` and `ResilienceState.redis` on the same client, records in
SQLite), except that its keys live under a unique prefix, deleted at the end, instead of `certq:`. Redis:
--redis-url, else CERTQ_BENCH_REDIS_URL, else a private redis-server started for the run (bench/common.py).

Sources: `all` (default) is config/sources: the four records sources (the data set's uploads imported into a
fresh SQLite file), the four live sources pointed at the sandbox sites (in this process; only the warm-up
reaches them) and the four link-out sources; `records` keeps the records sources only. Each lookup is a real
holder's ID number with the holder's name, which every source answers, each from its own cache entry.

Baselines, measured in the same run and interleaved with the lookups (A B C A B C ..., median of 10 rounds,
as bench_cache.py (a)):
  - one bare redis.asyncio GET of a value the size of a cached answer, on the gateway's own client;
  - as many bare GETs as the lookup makes cache reads, issued at once (asyncio.gather): the Redis I/O the
    lookup cannot avoid.
Per-lookup time is wall time / operations with `concurrency` workers running back to back (at 32 workers,
each on its own number), as in bench_cache.py.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import platform
import pstats
import sys
import tempfile
from datetime import date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: bench.common, aggregator

import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from aggregator.cache import SourceCache  # noqa: E402
from aggregator.config import Settings  # noqa: E402
from aggregator.gateway import Gateway  # noqa: E402
from aggregator.models import Mode, Outcome  # noqa: E402
from aggregator.records.store import RecordStore  # noqa: E402
from aggregator.resilience import ResilienceState  # noqa: E402
from aggregator.sandbox.dataset import generate  # noqa: E402
from aggregator.sandbox.server import Sandbox  # noqa: E402
from bench.common import (  # noqa: E402
    BenchRedis,
    Op,
    bench_redis,
    delete_prefix,
    import_uploads,
    interleaved,
    per_op,
    pick_holders,
    run_loop,
    unique_prefix,
)

TODAY = date(2026, 12, 1)
WORKERS = 32


async def open_gateway(settings: Settings, db_url: str, redis_url: str, prefix: str) -> Gateway:
    """What `Gateway.open(settings, database_url=db_url, redis_url=redis_url)` builds, with `prefix` for keys."""
    store = await RecordStore.open(db_url)
    cache = SourceCache.from_url(redis_url, prefix=prefix)
    resilience = ResilienceState.redis(cache.client, prefix=prefix)
    return Gateway(settings, store, cache=cache, resilience=resilience, redis_client=cache.client, today=lambda: TODAY)


async def main(args: argparse.Namespace, target: BenchRedis) -> None:
    url = target.url
    print(f"certq gateway cache-hit benchmark  {datetime.now():%Y-%m-%d %H:%M}")
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()},"
        f" redis-py {redis.__version__}, event loop {args.loop}; Redis {target}"
    )
    dataset = generate(seed=2026, holders=3000, today=TODAY)
    holders = pick_holders(dataset, WORKERS, uploaded=True)
    prefix = unique_prefix()
    with tempfile.TemporaryDirectory(prefix="certq-bench-") as tmp:
        db_url = await import_uploads(dataset, Path(tmp))
        async with Sandbox(dataset) as sandbox:
            settings = Settings.load().with_endpoints(sandbox.urls)
            if args.sources == "records":
                settings = settings.with_sources([s for s in settings.sources if s.mode == Mode.RECORDS])
            gw = await open_gateway(settings, db_url, url, prefix)
            client = gw.cache.client
            assert client is not None
            try:
                await run(args, gw, client, holders, prefix)
            finally:
                await delete_prefix(client, prefix)
                left = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
                await gw.close()
                print(f"\nkeys under {prefix}: deleted ({len(left)} left)")


async def run(
    args: argparse.Namespace, gw: Gateway, client: aioredis.Redis, holders: list[tuple[str, str]], prefix: str
) -> None:
    # Warm: every number once (every source asked and stored), then check that a second lookup is all hits.
    for number, name in holders:
        await gw.lookup(number, name=name)
    cached_reads = 0
    sizes: list[int] = []
    for number, name in holders:
        a = await gw.lookup(number, name=name)
        cacheable = [s for s in a.sources if s.outcome in (Outcome.FOUND, Outcome.NOT_FOUND)]
        misses = [s.source for s in cacheable if not s.from_cache]
        if misses or any(s.outcome == Outcome.UNAVAILABLE for s in a.sources):
            raise SystemExit(f"warm-up failed for {number}: not from cache {misses}; {a.sources}")
        cached_reads = max(cached_reads, len(cacheable))
    async for key in client.scan_iter(match=f"{prefix}:v*:src:*", count=1000):
        if b":lock" not in key and b":done:" not in key:
            sizes.append(len(await client.get(key) or b""))
    value_size = sorted(sizes)[len(sizes) // 2]
    example = await gw.lookup(holders[0][0], name=holders[0][1])
    links = sum(s.outcome == Outcome.MANUAL for s in example.sources)
    print(
        f"sources asked per lookup: {cached_reads + links} ({cached_reads} answered from Redis"
        + (f", {links} link-outs built in place" if links else "")
        + f"); {len(sizes)} cached answers, median {value_size} bytes; {len(holders)} numbers, one per worker"
    )
    bare_keys = [f"{prefix}:bare:{i}" for i in range(WORKERS)]
    for k in bare_keys:
        await client.set(k, b"x" * value_size)
    hits_before = gw.cache.stats()["hits"]

    async def lookup(i: int) -> None:
        await gw.lookup(holders[i][0], name=holders[i][1])

    async def bare(i: int) -> None:
        await client.get(bare_keys[i])

    async def bare_n(i: int) -> None:
        await asyncio.gather(*(client.get(bare_keys[(i + j) % WORKERS]) for j in range(cached_reads)))

    contenders: dict[str, Op] = {"lookup": lookup, "bare": bare, "bare_n": bare_n}
    await interleaved(contenders, 1_000, 1, rounds=2)  # warm connections and code paths
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        await per_op(lookup, args.lookups, 1)
        profiler.disable()
        profiler.dump_stats(args.profile)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    rows = []
    for concurrency in (1, WORKERS):
        m = await interleaved(contenders, args.lookups, concurrency)
        rows.append((concurrency, m))
    source_hits = gw.cache.stats()["hits"] - hits_before
    print(f"\n{args.lookups} operations per figure, median of 10 interleaved rounds; loop {args.loop}")
    print(
        f"| concurrency | bare GET | {cached_reads} GETs at once | cached `Gateway.lookup` | ratio to 1 GET"
        f" | ratio to {cached_reads} GETs | CPU: 1 GET | CPU: lookup |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for concurrency, m in rows:
        label = "1" if concurrency == 1 else f"{concurrency} tasks"
        (bare, bare_cpu), (bare_n, _), (hit, hit_cpu) = m["bare"], m["bare_n"], m["lookup"]
        print(
            f"| {label} | {bare * 1e6:.1f} µs | {bare_n * 1e6:.1f} µs | {hit * 1e6:.1f} µs"
            f" | **{hit / bare:.1f}x** | {hit / bare_n:.1f}x | {bare_cpu * 1e6:.1f} µs | {hit_cpu * 1e6:.1f} µs |"
        )
    st = gw.cache.stats()
    print(
        f"\ncache: {source_hits} fresh source hits during the measurements, misses {st['misses']} (all in the warm-up),"
        f" source calls {st['calls']}, backend errors {st['backend_errors']}"
    )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis-url", default=None, help="default: CERTQ_BENCH_REDIS_URL, else a private redis-server")
    p.add_argument("--sources", choices=["all", "records"], default="all", help="which sources the gateway has")
    p.add_argument("--lookups", type=int, default=2_000, help="operations per figure (default 2000)")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    p.add_argument("--profile", metavar="FILE", help="cProfile --lookups sequential cached lookups into FILE")
    return p.parse_args()


if __name__ == "__main__":
    parsed = parse_args()
    with bench_redis(parsed.redis_url) as target:
        run_loop(main(parsed, target), parsed.loop)
