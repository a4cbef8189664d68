"""Roster runs on the job engine: members/s with one and two `certq worker` processes against the ceiling the
sources' rate limits set, peak memory per worker, time until the first results show; and monitoring's scheduler
on a million members (the time to spread one day's cycle, and the plan of the per-tick query).

    .venv/bin/python bench/rosters.py [--members 20000] [--rate 300] [--monitor 1000000] [--pg URL] [--redis-url URL]

Every member has a distinct MEM number (T + a valid ID number) that the sandbox does not hold: each is one live
call to mem_api (answered "not found"), so the ceiling is mem_api's rate limit, raised here to --rate per second
(a copy of config/ with that limit; the shipped 10/s would make a 100,000-member roster take 2.8 hours, which is
exactly what the limit is for). The workers share the limit through Redis (a private redis-server unless given).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, bench_redis, start, stop  # noqa: E402


def member_numbers(n: int, start: int = 0) -> list[str]:
    """`n` distinct MEM numbers (T + a valid ID number), the `start`-th onwards."""
    from aggregator.numbers import id_check_character

    out = []
    for i in range(start, start + n):
        first = f"6501{i % 100:02d}19{60 + i // 1_000_000 % 40:02d}{1 + i // 10_000 % 12:02d}{1 + i // 400 % 25:02d}{i % 400:03d}"
        out.append("T" + first + id_check_character(first))
    return out


def config_copy(rate: float, directory: Path) -> Path:
    target = directory / "config"
    shutil.copytree(ROOT / "config", target)
    path = target / "sources" / "mem_api.toml"
    text = path.read_text(encoding="utf-8")
    text = text.replace("per_second = 10.0", f"per_second = {rate}").replace("burst = 20", "burst = 50")
    path.write_text(text, encoding="utf-8")
    return target


def vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def create_database(admin_url: str) -> str:
    import asyncpg
    import sqlalchemy as sa

    name = f"certq_bench_{uuid.uuid4().hex[:8]}"
    u = sa.engine.make_url(admin_url)
    conn = await asyncpg.connect(user=u.username, host=u.host, port=u.port, database=u.database)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return u.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)


async def drop_database(url: str) -> None:
    import asyncpg
    import sqlalchemy as sa

    u = sa.engine.make_url(url)
    conn = await asyncpg.connect(user=u.username, host=u.host, port=u.port, database="postgres")
    await conn.execute(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)')
    await conn.close()


async def add_roster(engine, roster_id: str, numbers: list[str], *, monitor: bool = False) -> None:
    import sqlalchemy as sa

    from aggregator.records.schema import rosters

    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(rosters).values(
                id=roster_id, organisation="bench", name=roster_id, created_by="bench", created_at=now,
                expiry_warn_days=[90, 30, 7], monitor=monitor,
            )
        )
        raw = await conn.get_raw_connection()
        records = [(roster_id, f"E{i:07d}", n, "测试", now) for i, n in enumerate(numbers)]
        await raw.driver_connection.copy_records_to_table(
            "roster_members", records=records, columns=["roster_id", "ref", "number", "name", "added_at"]
        )


async def run_roster(engine, job_store, submit, roster_id: str, n: int, workers: list, window: float = 0) -> dict:
    import sqlalchemy as sa

    from aggregator.records.schema import roster_results

    job = await job_store.create("roster_verify", organisation="bench", created_by="bench", subject=roster_id, total=n)
    t0 = time.monotonic()
    await submit(job.id)
    first = None
    peak = {w.pid: 0.0 for w in workers}
    while True:
        await asyncio.sleep(0.25)
        for w in workers:
            peak[w.pid] = max(peak[w.pid], vm_hwm_mb(w.pid) or 0.0)
        if first is None:
            async with engine.connect() as conn:
                if (await conn.execute(sa.select(roster_results.c.member_id).where(roster_results.c.job_id == job.id).limit(1))).first():
                    first = time.monotonic() - t0
        j = await job_store.get(job.id)
        if j.status in ("finished", "failed", "cancelled"):
            break
        if window and j.started_at and (datetime.now(UTC) - j.started_at).total_seconds() >= window:
            j = await job_store.get(job.id)
            await job_store.cancel(job.id)
            cut = datetime.now(UTC)
            elapsed = (cut - j.started_at).total_seconds()
            return {"status": f"cut after {window:g} s", "error": None, "members": j.done, "seconds": elapsed,
                    "rate": j.done / elapsed, "first_s": first, "peak_mb": peak, "counts": None}
    async with engine.connect() as conn:
        reason = roster_results.c.result["verdict_reason"].as_string()
        reasons = (await conn.execute(
            sa.select(reason, sa.func.count())
            .where(roster_results.c.job_id == job.id, roster_results.c.outcome != "definitive")
            .group_by(reason).order_by(sa.func.count().desc()).limit(3)
        )).all()
    for reason, count in reasons:
        print(f"    {count} not definitive: {reason}")
    return {"status": j.status, "error": j.error, "members": j.done, "seconds": elapsed, "rate": j.done / elapsed,
            "first_s": first, "peak_mb": peak, "counts": j.counts}


async def monitoring_bench(engine, n: int) -> None:
    import sqlalchemy as sa

    from aggregator.rosters.schedule import due_query, start_monitoring

    numbers = member_numbers(n)
    t = time.perf_counter()
    await add_roster(engine, "monitored", numbers)
    print(f"  {n:,} members inserted (COPY) in {time.perf_counter() - t:.1f} s")
    async with engine.begin() as conn:
        await conn.execute(sa.text("ANALYZE roster_members"))
    t = time.perf_counter()
    await start_monitoring(engine, "monitored", every_h=24, now=time.time())
    spread = time.perf_counter() - t
    async with engine.begin() as conn:
        await conn.execute(sa.text("ANALYZE roster_members"))
        q = due_query(time.time(), 2000).compile(engine.sync_engine, compile_kwargs={"literal_binds": True})
        plan = (await conn.execute(sa.text(f"EXPLAIN ANALYZE {q}"))).scalars().all()
    print(f"  scheduling one day's cycle of {n:,} members: {spread:.1f} s (aim < 60 s)")
    print("  per-tick query plan:")
    for line in plan:
        print("    " + line)


async def main(args: argparse.Namespace) -> None:
    from aggregator.jobs import JobEngine, JobStore
    from aggregator.records import RecordStore
    from aggregator.sandbox.dataset import generate
    from aggregator.sandbox.server import Sandbox

    url = await create_database(args.pg)
    tmp = Path(tempfile.mkdtemp(prefix="certq-bench-rosters-"))
    store = await RecordStore.open(url)
    try:
        job_store = JobStore(store.engine)
        engine = JobEngine(job_store, database_url=url)
        await engine.open()
        dataset = generate(seed=5, holders=50)
        with bench_redis(args.redis_url) as redis:
            async with Sandbox(dataset) as sb:
                env = {
                    **os.environ,
                    "CERTQ_HOME": str(tmp / "home"),
                    "CERTQ_CONFIG_DIR": str(config_copy(args.rate, tmp)),
                    "CERTQ_DATABASE_URL": url,
                    "CERTQ_REDIS_URL": redis.url,
                    "CERTQ_WEB_NAMES_PER_CERTIFICATE": "0",
                    **{f"CERTQ_{s.upper()}_URL": sb.urls[sb.site(s).source_id] for s in ("mem", "samr", "mohrss", "mohurd")},
                }
                print(f"ceiling: mem_api {args.rate:g}/s (shared through Redis {redis}); {args.members:,} members a run")
                for n_workers in args.workers:
                    roster = f"r{n_workers}"
                    numbers = member_numbers(args.members, start=n_workers * 2_000_000)
                    await add_roster(store.engine, roster, numbers)
                    workers = [
                        start([sys.executable, "-m", "aggregator.cli", "worker", "--concurrency", "1"],
                              tmp / f"worker{n_workers}-{i}.log", env=env)
                        for i in range(n_workers)
                    ]
                    spy = None
                    if args.profile:
                        import subprocess

                        spy = subprocess.Popen(["py-spy", "record", "-p", str(workers[0].pid), "-o",
                                                str(ROOT / "bench" / f"rosters-worker{n_workers}.svg"), "-r", "50"])
                    await asyncio.sleep(3)  # start-up
                    try:
                        r = await run_roster(store.engine, job_store, engine.submit, roster, args.members, workers, args.window)
                    finally:
                        for w in workers:
                            stop(w)
                        if spy is not None:
                            spy.wait(30)
                    peak = ", ".join(f"{v:.0f}" for v in r["peak_mb"].values())
                    print(
                        f"{n_workers} worker(s): {r['status']} {r['members']:,} members in {r['seconds']:.1f} s = "
                        f"{r['rate']:.1f}/s = {r['rate'] / args.rate:.2f} of the ceiling; first results after "
                        f"{r['first_s']:.2f} s; peak RSS per worker {peak} MB; {r['counts']}"
                    )
        if args.monitor:
            await monitoring_bench(store.engine, args.monitor)
        await engine.close()
    finally:
        await store.close()
        await drop_database(url)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--monitor", type=int, default=1_000_000)
    parser.add_argument("--pg", default=os.environ.get("CERTQ_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--window", type=float, default=0, help="cancel a run after this many seconds (0: run to the end)")
    parser.add_argument("--workers", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2],
                        help="worker counts to run, e.g. 1,2")
    parser.add_argument("--profile", action="store_true", help="py-spy record the first worker (needs py-spy)")
    asyncio.run(main(parser.parse_args()))
