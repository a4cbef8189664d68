"""The cost of one cached lookup in-process, by part: the gateway lookup, masking and serialising (no HTTP).

    python bench/bench_hit_path.py                      # memory cache, the numbers bench_web.py asks
    python bench/bench_hit_path.py --redis              # the cache on Redis (a private redis-server by default)
    python bench/bench_hit_path.py --profile hit.prof    # cProfile the gateway lookups too

Setup as bench_web.py's certq server: the synthetic data set's uploads of all four departments in a fresh
SQLite file, records sources only, 4 valid certificate numbers per department, each asked twice first (the
second answer must come from the cache for every source). Then, for each part, the best of --repeats runs of
--lookups operations cycling through the numbers, in µs per operation:

- `Gateway.lookup` (public: no name), with `Gateway.lookup` and `?name=` (employer);
- `mask_answer` for the public role and `AnswerResponse.render` of that view;
- all three back to back, as `Services.lookup_for` + the route do for a public request (no audit, no HTTP).

On Redis (--redis; its URL: --redis-url, else CERTQ_BENCH_REDIS_URL, else a private redis-server started for the
run) the keys live under a unique prefix, deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: bench.common, aggregator

from aggregator.cache import SourceCache  # noqa: E402
from aggregator.config import Settings  # noqa: E402
from aggregator.gateway import Gateway  # noqa: E402
from aggregator.models import Mode  # noqa: E402
from aggregator.records.store import RecordStore  # noqa: E402
from aggregator.resilience import ResilienceState  # noqa: E402
from aggregator.web.api import AnswerResponse  # noqa: E402
from aggregator.web.masking import mask_answer  # noqa: E402
from aggregator.web.roles import Role  # noqa: E402
from bench.common import BenchRedis, Env, bench_redis, build_env, delete_prefix_sync, unique_prefix  # noqa: E402


async def best(op, numbers: list[tuple[str, str]], lookups: int, repeats: int) -> float:  # type: ignore[no-untyped-def]
    """Best (smallest) µs per operation over `repeats` runs of `lookups` sequential operations."""
    times = []
    n = len(numbers)
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(lookups):
            await op(*numbers[i % n])
        times.append((time.perf_counter() - started) / lookups * 1e6)
    return min(times)


async def run(args: argparse.Namespace, env: Env, redis: BenchRedis | None, prefix: str) -> None:
    settings = Settings.load()
    settings = settings.with_sources([s for s in settings.sources if s.mode == Mode.RECORDS])
    store = await RecordStore.open(env.database_url)
    if redis:
        cache = SourceCache.from_url(redis.url, prefix=prefix)
        resilience = ResilienceState.redis(cache.client, prefix=prefix)
        gw = Gateway(settings, store, cache=cache, resilience=resilience, redis_client=cache.client)
    else:
        gw = Gateway(settings, store)
    try:
        for number, name in env.numbers:
            for who in (None, name):
                await gw.lookup(number, name=who)
                answer = await gw.lookup(number, name=who)
                assert all(s.from_cache for s in answer.sources), [s.model_dump() for s in answer.sources]

        async def lookup_public(number: str, name: str) -> None:
            await gw.lookup(number)

        async def lookup_employer(number: str, name: str) -> None:
            await gw.lookup(number, name=name)

        answers = {n: await gw.lookup(n) for n, _ in env.numbers}
        views = {n: mask_answer(a, Role.PUBLIC, {n}) for n, a in answers.items()}
        render = AnswerResponse.render.__get__(AnswerResponse.__new__(AnswerResponse))

        async def mask(number: str, name: str) -> None:
            mask_answer(answers[number], Role.PUBLIC, {number})

        async def serialise(number: str, name: str) -> None:
            render(views[number])

        async def whole(number: str, name: str) -> None:
            answer = await gw.lookup(number)
            render(mask_answer(answer, Role.PUBLIC, {number}))

        parts = {
            "gateway lookup, public": lookup_public,
            "gateway lookup, with name": lookup_employer,
            "mask_answer, public": mask,
            "serialise (pydantic-core)": serialise,
            "lookup + mask + serialise": whole,
        }
        print(f"cache: {f'Redis {redis}' if redis else 'memory'}; {len(env.numbers)} numbers; "
              f"best of {args.repeats} x {args.lookups} operations")
        for label, op in parts.items():
            await best(op, env.numbers, args.lookups // 4, 1)  # warm
            print(f"  {label:30s} {await best(op, env.numbers, args.lookups, args.repeats):8.1f} µs")
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            await best(lookup_public, env.numbers, args.lookups, 1)
            prof.disable()
            prof.dump_stats(args.profile)
            pstats.Stats(args.profile).sort_stats("cumulative").print_stats(30)
    finally:
        await gw.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis", action="store_true", help="the cache on Redis (default: the in-process cache)")
    p.add_argument("--redis-url", default=None,
                   help="implies --redis: this Redis (default: CERTQ_BENCH_REDIS_URL, else a private redis-server)")
    p.add_argument("--lookups", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--profile", default=None, metavar="FILE", help="also cProfile the public lookups into FILE")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="certq-hit-") as tmp:
        env = build_env(Path(tmp), per_department=4, holders=3000)
        if not (args.redis or args.redis_url):
            asyncio.run(run(args, env, None, ""))
            return
        prefix = unique_prefix()
        with bench_redis(args.redis_url) as redis:
            try:
                asyncio.run(run(args, env, redis, prefix))
            finally:
                delete_prefix_sync(redis.url, prefix)


if __name__ == "__main__":
    main()
