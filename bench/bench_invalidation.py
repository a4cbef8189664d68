"""How soon another instance answers from new data after an import is announced, and a near-tier hit against a
Redis GET (issue 13).

    python bench/bench_invalidation.py                 # a private redis-server; 200 announcements
    python bench/bench_invalidation.py --rounds 500

Two gateways (A and B), each with its own Redis client and subscription, on one SQLite file holding MEM's
uploads, records sources only. B has looked the number up (cached, generation memo fresh). Each round: A
announces an import of MEM (`Gateway.imported`, what the upload endpoint calls after an import); the time is
taken until B has dropped MEM's generation AND a lookup on B has read the generation again and answered (a
records miss: the store asked again). Baseline in the same run: one Redis PING round trip on A's client.
B runs in a child process so that the announcement crosses processes as it does between instances.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: bench.common, aggregator

from bench.common import bench_redis, build_env, percentile, unique_prefix  # noqa: E402


async def gateway(database_url: str, redis_url: str, prefix: str):  # type: ignore[no-untyped-def]
    from aggregator.cache import SourceCache
    from aggregator.config import Settings
    from aggregator.gateway import Gateway
    from aggregator.models import Mode
    from aggregator.records.store import RecordStore

    settings = Settings.load()
    settings = settings.with_sources([s for s in settings.sources if s.mode == Mode.RECORDS])
    cache = SourceCache.from_url(redis_url, prefix=prefix)
    gw = Gateway(settings, await RecordStore.open(database_url), cache=cache, redis_client=cache.client)
    assert await cache.start(), "no subscription"
    return gw


async def child(database_url: str, redis_url: str, prefix: str, number: str) -> None:
    """Instance B: on each `go` line, note when MEM's generation is dropped, then look up and report."""
    from aggregator.models import Department

    gw = await gateway(database_url, redis_url, prefix)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        await gw.lookup(number)
        print("ready", flush=True)
        while line := await reader.readline():
            if line.strip() != b"go":
                break
            await gw.lookup(number)  # cached, generation memo fresh
            print("armed", flush=True)
            while Department.MEM in gw._generations:
                await asyncio.sleep(0.0005)
            answer = await gw.lookup(number)
            mem = next(s for s in answer.sources if s.source == "mem_records")
            print(json.dumps({"t": time.time(), "from_cache": mem.from_cache}), flush=True)
    finally:
        await gw.close()


async def run(args: argparse.Namespace, database_url: str, redis_url: str, number: str) -> None:
    from aggregator.models import Department

    prefix = unique_prefix()
    a = await gateway(database_url, redis_url, prefix)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", json.dumps([database_url, redis_url, prefix, number]),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin and proc.stdout
    try:
        assert (await proc.stdout.readline()).strip() == b"ready"
        lat, misses = [], 0
        for _ in range(args.rounds):
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
            assert (await proc.stdout.readline()).strip() == b"armed"
            t0 = time.time()
            await a.imported(Department.MEM)
            got = json.loads(await proc.stdout.readline())
            lat.append((got["t"] - t0) * 1000)
            misses += not got["from_cache"]
        client = a.cache.client
        pings = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            await client.ping()
            pings.append((time.perf_counter() - t) * 1000)
        p = {q: percentile(lat, q) for q in (50, 90, 99)}
        print(f"{args.rounds} announcements (no data changed, so B's answers came from the cache after it read "
              f"the generation again; {misses} records misses)")
        print(f"  announcement -> B answering from the new generation: p50 {p[50]:.2f} ms, p90 {p[90]:.2f} ms, "
              f"p99 {p[99]:.2f} ms, max {max(lat):.2f} ms (aim p99 < 100 ms)")
        print(f"  baseline, one Redis PING: p50 {percentile(pings, 50):.3f} ms, p99 {percentile(pings, 99):.3f} ms")
    finally:
        proc.stdin.close()
        await proc.wait()
        await a.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--redis-url", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        asyncio.run(child(*json.loads(args.child)))
        return
    with tempfile.TemporaryDirectory(prefix="certq-inval-") as tmp:
        env = build_env(Path(tmp), per_department=1, holders=500)
        number = env.numbers[0][0]  # MEM's first
        with bench_redis(args.redis_url) as redis:
            asyncio.run(run(args, env.database_url, redis.url, number))


if __name__ == "__main__":
    main()
