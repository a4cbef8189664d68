"""The sources' health history: what counting one call costs a lookup, and what a flush costs the database.

    .venv/bin/python -m bench.source_health [--n 200000]

- record: `HealthLog.record` (the hook the runner calls when a source call ends), per call, against the runner's
  own in-process statistics (`SourceStats.record`, which every call already paid before the history existed) and
  an empty function call, measured in the same run, interleaved (A B C A B C ...).
- flush: one flush of a busy process's five minutes (every source, one bucket each, plus a backlog of 288
  buckets after an outage of the database) on SQLite, and what 8 "instances" flushing the same buckets in turn
  cost, per upsert.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aggregator.models import Department, ErrorKind, Mode, Outcome, SourceResult  # noqa: E402
from aggregator.resilience import SourceStats  # noqa: E402

SOURCES = ["mem_api", "samr_api", "mohurd_api", "mohrss_html", "mem_records", "samr_records", "mohurd_records",
           "mohrss_records"]  # fmt: skip


def _results(n: int) -> list[SourceResult]:
    rng = random.Random(1)
    out = []
    for i in range(n):
        kind = rng.choice([None] * 18 + [ErrorKind.TIMEOUT, ErrorKind.CIRCUIT_OPEN])
        out.append(
            SourceResult(
                source=SOURCES[i % len(SOURCES)],
                department=Department.MEM,
                mode=Mode.API,
                outcome=Outcome.UNAVAILABLE if kind else Outcome.FOUND,
                error_kind=kind,
                elapsed_ms=rng.lognormvariate(5, 0.6),
            )
        )
    return out


def bench_record(n: int, rounds: int = 7) -> None:
    from aggregator.records.source_health import HealthLog

    results = _results(n)
    log = HealthLog(engine=None)  # type: ignore[arg-type] # record() never touches the engine
    stats = SourceStats()

    def nothing(_r: SourceResult) -> None:
        return None

    contenders = {
        "empty call": nothing,
        "SourceStats.record (baseline)": stats.record,
        "HealthLog.record": log.record,
    }
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            started = time.perf_counter()
            for r in results:
                fn(r)
            samples[name].append((time.perf_counter() - started) / n * 1e6)
    base = statistics.median(samples["SourceStats.record (baseline)"])
    print(f"record, {n:,} calls x {rounds} rounds (median us per call)")
    for name, values in samples.items():
        us = statistics.median(values)
        print(f"  {name:32s} {us:6.3f} us   {us / base:5.2f}x baseline")
    print(f"  buckets held in memory: {len(log._pending)}")


async def bench_flush() -> None:
    from aggregator.records import RecordStore
    from aggregator.records.source_health import BUCKET_S, HealthLog

    with tempfile.TemporaryDirectory() as tmp:
        store = await RecordStore.open(f"sqlite+aiosqlite:///{Path(tmp) / 'h.sqlite3'}")
        try:
            now = [time.time()]
            results = _results(20_000)
            timings = []
            for instance in range(8):  # eight instances, the same buckets: each flush adds into existing rows
                log = HealthLog(store.engine, clock=lambda: now[0])
                for r in results:
                    log.record(r)
                started = time.perf_counter()
                rows = await log.flush()
                timings.append((time.perf_counter() - started) * 1000)
            print(f"flush of one busy bucket per source ({rows} upserts), 8 instances in turn: "
                  f"median {statistics.median(timings):.2f} ms per flush")
            log = HealthLog(store.engine, clock=lambda: now[0])
            for i in range(288):  # a day of backlog after a database outage
                now[0] -= BUCKET_S
                for r in results[:50]:
                    log.record(r)
            backlog = len(log._pending)
            started = time.perf_counter()
            await log.flush()
            took = (time.perf_counter() - started) * 1000
            print(f"flush of a backlog of {backlog} buckets: {took:.1f} ms ({took / backlog * 1000:.0f} us per upsert)")
            # the status page's reads over a full history: 90 days of 8 sources, a bucket every 5 minutes
            from aggregator.records.source_health import HealthHistory

            full = HealthLog(store.engine, clock=lambda: now[0])
            end = now[0] = time.time()
            now[0] = end - 90 * 86400
            while now[0] < end:
                for r in results[:16]:
                    full.record(r)
                now[0] += BUCKET_S
                if len(full._pending) >= 5000:
                    await full.flush()
            await full.flush()
            history = HealthHistory(store.engine)
            reads = []
            for _ in range(5):
                started = time.perf_counter()
                await history.overview(SOURCES, now=end)
                reads.append((time.perf_counter() - started) * 1000)
            print(f"status page reads over 90 days x {len(SOURCES)} sources ({90 * 288 * len(SOURCES):,} buckets): "
                  f"median {statistics.median(reads):.0f} ms")
        finally:
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    args = parser.parse_args()
    bench_record(args.n)
    asyncio.run(bench_flush())


if __name__ == "__main__":
    main()
