"""Fan-out overhead of the gateway (issue 3): answer latency minus the slowest source's latency.

    python bench/bench_fanout.py                         # 1,000 lookups at concurrency 50, then sequential
    python bench/bench_fanout.py --live-only             # the four live sources only (records and links off)
    python bench/bench_fanout.py --lookups 300 --sequential-lookups 0 --profile fanout.prof

The four sandbox department sites (aggregator/sandbox) serve the data set with a fixed latency per request
(the `latency_ms` fault switch, no jitter): samr_api 50 ms, mem_api 100 ms, mohrss_html 150 ms, mohurd_api
200 ms (change with --latency SOURCE=MS). SAMR's flow is two requests (the person, then their licences) when
the person exists, so SAMR takes 50 or 100 ms; MOHURD, at 200 ms, is the slowest live source. By default the
sandbox runs in a separate process (the machine has 2 cores: one for the gateway, one for the
"departments"), so that the sites' own work is not billed to the gateway's event loop; --sandbox-in-process
puts it in the gateway's loop instead.

Every lookup is a real holder's ID number (with the holder's name) from the data set the sandbox serves, so
every live source is asked (they all answer ID numbers) and its parser does real work (found, or the site's
own not-found message). By default the uploaded records (imported into a fresh SQLite file, as the tests
do) and the four link-out sources are asked too, as in production; --live-only disables them.

Nothing is served from the cache: every source's TTLs (found, not found, stale) are 0, so no answer is
stored, and the numbers are distinct, so no two lookups are coalesced. Per-source rate limits and
concurrency caps are raised (1,000,000/s, burst 1,000,000; max_concurrency >= the benchmark's concurrency)
so that certq's own throttles never delay a request.

Reported, per lookup: answer latency (wall clock around `Gateway.lookup`) minus
  - the slowest source's own latency as its runner measured it (`SourceResult.elapsed_ms`, shown in the
    answer's `sources[].elapsed_ms`): the gateway's own cost (routing, tasks, cache path, merge, answer);
  - the slowest source's fixed latency (200 ms): that plus HTTP on loopback, the site's work and parsing.
Also this process's CPU time per lookup (all its threads) and the garbage collector's pauses during the run:
at concurrency 50 and ~200 ms a lookup, 250 lookups/s arrive, and the event loop keeps up only while a
lookup costs well under 4 ms of CPU. Then the same lookups asked one source after another (the same
sources, the same concurrency), and the ratio of the two runs' total time and mean latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: bench.common, aggregator

from aggregator.config import CacheTtl, RateLimit, Settings  # noqa: E402
from aggregator.gateway import Gateway  # noqa: E402
from aggregator.merge import build_answer  # noqa: E402
from aggregator.models import Answer, Mode, Outcome, Query  # noqa: E402
from aggregator.numbers import parse_number  # noqa: E402
from aggregator.sandbox.dataset import Dataset, generate  # noqa: E402
from aggregator.sandbox.server import Sandbox  # noqa: E402
from aggregator.selection import select_sources  # noqa: E402
from bench.common import ROOT, import_uploads, percentile, pick_holders, run_loop  # noqa: E402

TODAY = date(2026, 12, 1)
LIVE = ("mem_api", "samr_api", "mohrss_html", "mohurd_api")
DEFAULT_LATENCY_MS = {"samr_api": 50.0, "mem_api": 100.0, "mohrss_html": 150.0, "mohurd_api": 200.0}
AIM_P50_MS, AIM_P99_MS = 5.0, 20.0


# --- data and set-up ----------------------------------------------------------------------------


def bench_settings(urls: dict[str, str], concurrency: int, live_only: bool) -> Settings:
    """config/sources with the live sources on the sandbox, no caching and no throttling."""
    settings = Settings.load().with_endpoints(urls)
    no_cache = CacheTtl(found_s=0, not_found_s=0, max_stale_s=0)
    sources = []
    for s in settings.sources:
        update: dict[str, Any] = {"cache": no_cache}
        if s.mode in (Mode.API, Mode.HTML):
            update |= {
                "rate_limit": RateLimit(per_second=1_000_000.0, burst=1_000_000),
                "max_concurrency": max(64, concurrency + 14),
            }
        if live_only and s.id not in LIVE:
            update["enabled"] = False
        sources.append(s.model_copy(update=update))
    return settings.with_sources(sources)


def sandbox_faults(latency_ms: dict[str, float]) -> dict[str, dict[str, Any]]:
    return {sid: {"latency_ms": ms, "latency_jitter_ms": 0.0} for sid, ms in latency_ms.items()}


async def serve_sandbox(seed: int, holders: int, latency_ms: dict[str, float]) -> None:
    """The sandbox process: print the sites' URLs as one JSON line, serve until stdin closes, then print
    the requests each site served."""
    dataset = generate(seed=seed, holders=holders, today=TODAY)
    async with Sandbox(dataset, faults=sandbox_faults(latency_ms)) as sb:
        print(json.dumps(sb.urls), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        stats: dict[str, Any] = {sid: sb.stats(sid) for sid in LIVE}
        stats["cpu_s"] = time.process_time()
        print(json.dumps(stats), flush=True)


class SandboxProcess:
    """The sandbox in a child process (this script with --serve-sandbox)."""

    def __init__(self, seed: int, holders: int, latency_ms: dict[str, float]) -> None:
        self.args = ["--serve-sandbox", "--seed", str(seed), "--holders", str(holders)]
        for sid, ms in latency_ms.items():
            self.args += ["--latency", f"{sid}={ms:g}"]
        self.proc: asyncio.subprocess.Process | None = None
        self.urls: dict[str, str] = {}

    async def __aenter__(self) -> SandboxProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, *self.args,
            cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if not line:
            raise SystemExit("the sandbox process did not start")
        self.urls = json.loads(line)
        return self

    async def stats(self) -> dict[str, Any]:
        """Close the sandbox and return what each site served."""
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        await self.proc.wait()
        return json.loads(line)

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            if self.proc.stdin is not None and not self.proc.stdin.is_closing():
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# --- the two ways of asking ---------------------------------------------------------------------


async def lookup_sequential(gw: Gateway, number: str, name: str | None) -> Answer:
    """`Gateway.lookup`, except that the routed sources are asked one after another instead of at once
    (the same per-source path: `Gateway._ask`, i.e. cache, runner or records store, deadlines)."""
    started = time.monotonic()
    classification = parse_number(number)
    query = Query(number=classification.number, name=(name or "").strip() or None)
    deadline = started + gw.deadline_s
    ask, skipped = select_sources(gw.settings.sources, classification, query)
    results = [await gw._ask(s, query, classification, deadline) for s in ask] + skipped
    order = {s.id: i for i, s in enumerate(gw.settings.sources)}
    results.sort(key=lambda r: order.get(r.source, 0))
    return build_answer(
        query, classification, results, gw.settings.recognition, gw.today(),
        elapsed_ms=(time.monotonic() - started) * 1000,
    )  # fmt: skip


Lookup = Callable[[Gateway, str, str | None], Awaitable[Answer]]


async def fanout(gw: Gateway, number: str, name: str | None) -> Answer:
    return await gw.lookup(number, name=name)


class Sample:
    __slots__ = ("wall_ms", "slowest_ms", "slowest_source", "outcomes")

    def __init__(self, wall_ms: float, answer: Answer) -> None:
        asked = [s for s in answer.sources if s.outcome != Outcome.SKIPPED]
        slowest = max(asked, key=lambda s: s.elapsed_ms)
        self.wall_ms = wall_ms
        self.slowest_ms = slowest.elapsed_ms
        self.slowest_source = slowest.source
        self.outcomes = {s.source: (s.error_kind.value if s.error_kind else s.outcome.value) for s in asked}


async def run(
    gw: Gateway, how: Lookup, work: Sequence[tuple[str, str]], concurrency: int, stagger_s: float = 0.0
) -> tuple[list[Sample], float, float]:
    """Every lookup of `work` through `how`, `concurrency` at a time: the samples, the total wall time and
    this process's CPU time (all threads) per lookup. Worker i starts i x `stagger_s` after the first."""
    samples: list[Sample] = []
    it = iter(work)

    async def worker(i: int) -> None:
        await asyncio.sleep(i * stagger_s)
        for number, name in it:
            t0 = time.perf_counter()
            answer = await how(gw, number, name)
            samples.append(Sample((time.perf_counter() - t0) * 1000, answer))

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return samples, time.perf_counter() - started, (time.process_time() - cpu) / max(len(samples), 1)


# --- reporting ----------------------------------------------------------------------------------


def dist(values: Sequence[float]) -> str:
    """p50, p95, p99 (nearest rank: bench/common.py `percentile`), max and mean of a non-empty sample."""
    p50, p95, p99 = (percentile(values, p, 0.0) for p in (50, 95, 99))
    return (
        f"p50 {p50:7.2f}  p95 {p95:7.2f}  p99 {p99:7.2f}"
        f"  max {max(values):7.2f}  mean {statistics.fmean(values):7.2f} ms"
    )


def check_outcomes(label: str, samples: list[Sample]) -> None:
    counts: Counter[str] = Counter()
    for s in samples:
        for source, outcome in s.outcomes.items():
            counts[f"{source}={outcome}"] += 1
    bad = {k: v for k, v in counts.items() if k.split("=")[1] not in ("found", "not_found", "manual")}
    live = {k: v for k, v in sorted(counts.items()) if k.split("=")[0] in LIVE}
    print(f"    outcomes ({label}): {live}")
    if bad:
        print(f"    WARNING: sources that did not answer: {bad}")


def report_fanout(samples: list[Sample], total_s: float, cpu_s: float, slowest_fixed_ms: float) -> dict[str, float]:
    wall = [s.wall_ms for s in samples]
    over_runner = [s.wall_ms - s.slowest_ms for s in samples]
    over_fixed = [s.wall_ms - slowest_fixed_ms for s in samples]
    slowest = [s.slowest_ms - slowest_fixed_ms for s in samples]
    which = Counter(s.slowest_source for s in samples)
    print(f"    answer latency                        {dist(wall)}")
    print(f"    overhead vs slowest source (runner)   {dist(over_runner)}")
    print(f"    overhead vs slowest fixed latency     {dist(over_fixed)}")
    print(f"    slowest source's elapsed - fixed      {dist(slowest)}")
    print(f"    slowest source: {dict(which.most_common())}")
    p50, p99 = percentile(over_runner, 50, 0.0), percentile(over_runner, 99, 0.0)
    met = "met" if p50 <= AIM_P50_MS and p99 <= AIM_P99_MS else "NOT met"
    print(
        f"    aim p50 <= {AIM_P50_MS:g} ms, p99 <= {AIM_P99_MS:g} ms (vs the runner's figure): {met}"
        f"   |   {len(samples)} lookups in {total_s:.2f} s, {len(samples) / total_s:.0f} lookups/s,"
        f" gateway process CPU {cpu_s * 1000:.2f} ms per lookup"
    )
    return {"total_s": total_s, "mean_ms": statistics.fmean(wall)}


# --- main ---------------------------------------------------------------------------------------


class LoopLag:
    """How late a 10 ms ticker wakes up while active: how long a ready callback waits for the event loop."""

    def __init__(self, period_s: float = 0.01) -> None:
        self.period_s = period_s
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(self.period_s)
            self.lags_ms.append((time.perf_counter() - t0 - self.period_s) * 1000)

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def summary(self) -> str:
        return dist(self.lags_ms) if self.lags_ms else "no samples"


class GcPauses:
    """Garbage-collector pauses while active (gc.callbacks): count, total and longest per generation."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append((time.perf_counter() - self._started) * 1000)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> str:
        return ", ".join(
            f"gen{g} {len(p)} x, {sum(p):.0f} ms, max {max(p, default=0):.1f} ms" for g, p in self.pauses.items()
        )


async def main(args: argparse.Namespace) -> None:
    latency = {**DEFAULT_LATENCY_MS, **args.latency}
    slowest_fixed = max(latency.values())
    # Workers start spread over one lookup's duration, as independent callers would be; released together
    # (--burst), 50 lookups that all take the slowest source's 200 ms stay in step for the whole run, and
    # each wave's 50 answers are parsed and merged in one burst of event-loop work.
    stagger = 0.0 if args.burst else slowest_fixed / 1000 / args.concurrency
    print(f"certq fan-out benchmark  {datetime.now():%Y-%m-%d %H:%M}")
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()},"
        f" event loop {args.loop}"
    )
    print(
        f"latencies: {', '.join(f'{k} {v:g} ms' for k, v in latency.items())};"
        f" sandbox {'in this process' if args.sandbox_in_process else 'in its own process'};"
        f" {'live sources only' if args.live_only else 'live + records + link sources'};"
        f" gc {'frozen after warm-up' if args.gc_freeze else 'as is'};"
        f" workers {'released together' if args.burst else f'started {stagger * 1000:g} ms apart'}"
    )
    dataset: Dataset | None = generate(seed=args.seed, holders=args.holders, today=TODAY)
    assert dataset is not None
    need = args.warmup + max(args.lookups, args.sequential_lookups)
    holders = pick_holders(dataset, need)
    warm, work = holders[: args.warmup], holders[args.warmup :]

    with tempfile.TemporaryDirectory(prefix="certq-bench-") as tmp:
        db_url = await import_uploads(dataset, Path(tmp))
        if args.sandbox_in_process:
            sandbox_cm: Any = Sandbox(dataset, faults=sandbox_faults(latency))
        else:
            sandbox_cm = SandboxProcess(args.seed, args.holders, latency)
            dataset = None  # a gateway holds no data set: do not make the garbage collector walk it
        async with sandbox_cm as sb:
            settings = bench_settings(sb.urls, args.concurrency, args.live_only)
            asked = [s.id for s in settings.sources if s.enabled]
            print(f"sources asked per lookup (an ID number fits them all): {len(asked)}: {', '.join(asked)}")
            async with await Gateway.open(settings, database_url=db_url, redis_url="", today=lambda: TODAY) as gw:
                await run(gw, fanout, warm, args.concurrency)  # connections, code paths
                gc.collect()
                if args.gc_freeze:
                    gc.freeze()
                print(f"\n(1) fan-out: {args.lookups} lookups through Gateway.lookup, concurrency {args.concurrency}")
                profiler = cProfile.Profile() if args.profile else None
                if profiler:
                    profiler.enable()
                with GcPauses() as pauses:
                    async with LoopLag() as lag:
                        samples, total, cpu = await run(gw, fanout, work[: args.lookups], args.concurrency, stagger)
                if profiler:
                    profiler.disable()
                    profiler.dump_stats(args.profile)
                    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
                check_outcomes("fan-out", samples)
                report_fanout(samples, total, cpu, slowest_fixed)
                stats = gw.cache.stats()
                print(f"    event-loop lag (10 ms ticker)         {lag.summary()}")
                print(f"    gc pauses: {pauses.summary()}")
                print(
                    f"    cache: hits {stats['hits']}, stores {stats['stores']},"
                    f" coalesced {stats['coalesced_local']}"
                )

                if args.sequential_lookups:
                    n = args.sequential_lookups
                    ideal = sum(latency.values()) / slowest_fixed
                    print(f"\n(2) sequential: the first {n} of those lookups, sources asked one after another")
                    with GcPauses() as pauses:
                        seq, seq_total, seq_cpu = await run(
                            gw, lookup_sequential, work[:n], args.concurrency, stagger * ideal
                        )
                    check_outcomes("sequential", seq)
                    seq_wall = [s.wall_ms for s in seq]
                    print(f"    answer latency                        {dist(seq_wall)}")
                    print(
                        f"    {n} lookups in {seq_total:.2f} s, {n / seq_total:.0f} lookups/s,"
                        f" gateway process CPU {seq_cpu * 1000:.2f} ms per lookup"
                    )
                    print(f"    gc pauses: {pauses.summary()}")
                    fan_n = samples[:n]
                    ratio_total = (seq_total / n) / (total / len(samples))
                    ratio_mean = statistics.fmean(seq_wall) / statistics.fmean(s.wall_ms for s in fan_n)
                    print(
                        f"    ratio sequential / fan-out: time per lookup (total / lookups) {ratio_total:.2f}x,"
                        f" mean latency {ratio_mean:.2f}x"
                        f" (ideal: sum of the fixed latencies / the slowest = {ideal:.2f}x,"
                        f" more when SAMR makes its second request)"
                    )
            if isinstance(sb, SandboxProcess):
                served = await sb.stats()
                cpu_s = served.pop("cpu_s")
                total_served = sum(v["total"] for v in served.values())
                print(
                    "\nrequests served by the sandbox: " + ", ".join(f"{k} {v['total']}" for k, v in served.items())
                    + f"; its process's CPU {cpu_s * 1e6 / total_served:.0f} µs per request (start-up included)"
                )


def parse_latency(text: str) -> tuple[str, float]:
    sid, sep, ms = text.partition("=")
    if not sep or sid not in LIVE:
        raise argparse.ArgumentTypeError(f"expected SOURCE=MS with SOURCE one of {', '.join(LIVE)}")
    return sid, float(ms)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lookups", type=int, default=1000, help="fan-out lookups measured (default 1000)")
    p.add_argument("--concurrency", type=int, default=50, help="lookups in flight at once (default 50)")
    p.add_argument("--warmup", type=int, default=100, help="lookups before measuring, other numbers (default 100)")
    p.add_argument(
        "--sequential-lookups", type=int, default=1000,
        help="lookups of the sequential run, the first N of the fan-out ones (default 1000; 0: skip)",
    )  # fmt: skip
    p.add_argument(
        "--latency", type=parse_latency, action="append", default=[], metavar="SOURCE=MS",
        help="a live source's fixed latency per request (default samr_api=50 mem_api=100 mohrss_html=150"
        " mohurd_api=200)",
    )  # fmt: skip
    p.add_argument("--live-only", action="store_true", help="disable the records and link sources")
    p.add_argument(
        "--burst", action="store_true",
        help="release all workers at once (default: started one lookup's duration / concurrency apart)",
    )  # fmt: skip
    p.add_argument("--gc-freeze", action="store_true", help="gc.collect() and gc.freeze() after the warm-up")
    p.add_argument("--sandbox-in-process", action="store_true", help="run the sandbox in the gateway's event loop")
    p.add_argument("--seed", type=int, default=2026, help="data set seed (default 2026)")
    p.add_argument("--holders", type=int, default=3000, help="holders in the data set (default 3000)")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    p.add_argument("--profile", metavar="FILE", help="cProfile the fan-out run into FILE and print the top 25")
    p.add_argument("--serve-sandbox", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.latency = dict(args.latency)
    return args


if __name__ == "__main__":
    parsed = parse_args()
    if parsed.serve_sandbox:
        asyncio.run(serve_sandbox(parsed.seed, parsed.holders, {**DEFAULT_LATENCY_MS, **parsed.latency}))
    else:
        run_loop(main(parsed), parsed.loop)
