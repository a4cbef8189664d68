"""The name-check budget on the database alone (no Redis): calls decided per second and CPU per call, with many
callers at once, this tree against a copy of the repository made before a change, in the same run.

    python bench/name_budget.py --compare-with /tmp/before             # SQLite file, 1/50/200 callers, 2 rounds
    python bench/name_budget.py --compare-with /tmp/before --database-url postgresql://postgres@127.0.0.1:5432/test

What runs: for each tree (this one, and the --compare-with copy), a database of its own brought to the newest
migration (SQLite: a temporary file; PostgreSQL: a schema of its own, dropped at the end), and for each mode and
number of callers one child process (uvloop, as `certq serve`) running that tree's `NameBudget` (no Redis client:
the embedded default, and what every instance falls back to while Redis is down). `--callers` tasks each await
one `admit` after another (what a lookup with a name waits for) for `--duration` seconds. Modes:

- new: every call tries a name not tried before (each caller moves to a fresh caller id every 5 names, so all
  are admitted): every call writes one row, the path of a first check;
- repeat: one caller's 16 (number, name) pairs, tried once at the start, then asked again and again: the path
  of a re-check and of bench_web.py's employer row (which cycles 16 numbers with their names). Where the tree
  keeps the day's decisions in process (`NameBudget`, see namebudget.py), this measures that, not the database.

Reported per row: calls per second, the child's CPU time per call (user + system, all threads: the aiosqlite
thread included), and after/before. The trees alternate (after, before; then before, after ...) round by round;
each figure is the best of the rounds. At the end every "new" run's rows are counted: they must equal the calls
admitted (exactly one row per new name, none lost, none doubled).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MAX_CALLS = 1_000_000  # per caller task, on top of the duration
BUDGET = 5


# --- the child: one tree, one mode, one number of callers ---------------------------------------------------


async def child(spec: dict[str, Any]) -> dict[str, Any]:
    from aggregator.records.database import create_engine
    from aggregator.web.namebudget import NameBudget

    connect_args = {"server_settings": {"search_path": spec["schema"]}} if spec["schema"] else None
    engine = create_engine(spec["url"], connect_args=connect_args)
    budget = NameBudget(engine, None, per_certificate=BUDGET, salt="bench")
    run, numbers = spec["run"], spec["numbers"]
    admitted = refused = 0
    try:
        if spec["mode"] == "repeat":
            pairs = [(n, f"持证人{i}") for i, n in enumerate(numbers)]
            await budget.admit_many(f"key:{run}", pairs)

        stop = time.perf_counter() + spec["duration"]

        async def caller(w: int) -> None:
            nonlocal admitted, refused
            for i in range(MAX_CALLS):
                if time.perf_counter() >= stop:
                    return
                if spec["mode"] == "repeat":
                    j = (w + i) % len(numbers)
                    ok = await budget.admit(f"key:{run}", numbers[j], f"持证人{j}")
                else:
                    ok = await budget.admit(f"key:{run}-{w}-{i // BUDGET}", numbers[w % len(numbers)], f"名{i}")
                admitted += ok
                refused += not ok

        cpu, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(caller(w) for w in range(spec["callers"])))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu
    finally:
        await engine.dispose()
    calls = admitted + refused
    return {"calls": calls, "admitted": admitted, "refused": refused, "wall": wall, "cpu": cpu}


def child_main(spec: dict[str, Any]) -> None:
    sys.path.insert(0, spec["tree"])  # that tree's aggregator
    try:
        import uvloop

        result = uvloop.run(child(spec))
    except ImportError:  # pragma: no cover
        result = asyncio.run(child(spec))
    print(json.dumps(result))


# --- the parent ----------------------------------------------------------------------------------------------


def migrate(tree: str, url: str, schema: str) -> None:
    """The tree's own migrations, in a child (each tree imports its own aggregator)."""
    code = (
        "import asyncio, sys; sys.path.insert(0, sys.argv[1])\n"
        "from aggregator.records import RecordStore\n"
        "async def main():\n"
        "    kw = {'connect_args': {'server_settings': {'search_path': sys.argv[3]}}} if sys.argv[3] else {}\n"
        "    store = await RecordStore.open(sys.argv[2], **kw)\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", code, tree, url, schema], check=True, cwd=tree, timeout=120)


def rows_of(url: str, schema: str, run: str) -> int:
    """Rows the runs named `run` left in name_checks (through this tree's engine: the table is the same)."""
    sys.path.insert(0, str(ROOT))
    import sqlalchemy as sa

    from aggregator.records.database import create_engine

    async def count() -> int:
        engine = create_engine(url, connect_args={"server_settings": {"search_path": schema}} if schema else None)
        try:
            async with engine.connect() as conn:
                stmt = sa.text("SELECT count(*) FROM name_checks WHERE caller LIKE :p")
                return int((await conn.execute(stmt, {"p": f"key:{run}-%"})).scalar_one())
        finally:
            await engine.dispose()

    return asyncio.run(count())


def pg_schema(url: str, schema: str, *, drop: bool = False) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE' if drop else f'CREATE SCHEMA "{schema}"')
        finally:
            await conn.close()

    asyncio.run(go())


def main(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="certq-bench-names-"))
    trees = {"after": str(ROOT), "before": args.compare_with}
    databases: dict[str, tuple[str, str]] = {}  # tree -> (url, schema)
    for name, tree in trees.items():
        if args.database_url:
            schema = f"bench_names_{name}_{uuid.uuid4().hex[:8]}"
            pg_schema(args.database_url, schema)
            databases[name] = (args.database_url.replace("postgresql://", "postgresql+asyncpg://", 1), schema)
        else:
            databases[name] = (f"sqlite+aiosqlite:///{tmp / (name + '.sqlite3')}", "")
        migrate(tree, *databases[name])
    kind = "PostgreSQL" if args.database_url else "SQLite"
    print(f"name-check budget on the database alone: {kind}, callers {args.callers}, {args.duration} s a run,"
          f" best of {args.rounds} rounds; before = {args.compare_with};"
          f" load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    numbers = [f"T1101051990030712{i:02d}" for i in range(16)]
    best: dict[tuple[str, str, int], dict[str, Any]] = {}
    runs: dict[str, tuple[str, int]] = {}  # run id -> (tree, admitted) for the "new" runs
    ok = True
    try:
        for rnd in range(args.rounds):
            for mode in args.modes:
                for callers in args.callers:
                    order = ["after", "before"] if rnd % 2 == 0 else ["before", "after"]
                    for name in order:
                        run = uuid.uuid4().hex[:10]
                        url, schema = databases[name]
                        spec = {"tree": trees[name], "url": url, "schema": schema, "mode": mode, "run": run,
                                "callers": callers, "duration": args.duration, "numbers": numbers}  # fmt: skip
                        out = subprocess.run(
                            [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                            cwd=trees[name], timeout=args.duration + 120,
                        )  # fmt: skip
                        if out.returncode != 0:
                            print(out.stderr[-2000:], file=sys.stderr)
                            return 1
                        r = json.loads(out.stdout.strip().splitlines()[-1])
                        r["rate"] = r["calls"] / r["wall"]
                        r["cpu_us"] = r["cpu"] / max(1, r["calls"]) * 1e6
                        if mode == "new":
                            runs[run] = (name, r["admitted"])
                            ok &= r["refused"] == 0
                        print(f"    round {rnd + 1} {mode:6s} {callers:4d} callers {name:6s} {r['rate']:9.0f} calls/s"
                              f"  CPU {r['cpu_us']:7.1f} µs/call")  # fmt: skip
                        key = (mode, name, callers)
                        if key not in best or r["rate"] > best[key]["rate"]:
                            best[key] = r
        for run, (name, admitted) in runs.items():
            stored = rows_of(*databases[name], run)
            if stored != admitted:
                print(f"ROWS DIFFER: run {run} ({name}) admitted {admitted}, stored {stored}")
                ok = False
        print(f"\nrows stored = names admitted in every 'new' run ({len(runs)} runs): {'yes' if ok else 'NO'}")
        print("| mode | callers | before, calls/s | after, calls/s | after / before | CPU µs/call, before / after |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for mode in args.modes:
            for callers in args.callers:
                b, a = best[(mode, "before", callers)], best[(mode, "after", callers)]
                print(f"| {mode} | {callers} | {b['rate']:,.0f} | {a['rate']:,.0f} | {a['rate'] / b['rate']:.2f} |"
                      f" {b['cpu_us']:.0f} / {a['cpu_us']:.0f} |")  # fmt: skip
        print(f"load average at end {os.getloadavg()[0]:.2f}")
        return 0 if ok else 1
    finally:
        if args.database_url:
            for _, schema in databases.values():
                pg_schema(args.database_url, schema, drop=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare-with", required=True, metavar="DIR", help="a copy of the repository (before)")
    p.add_argument("--database-url", default=None, help="PostgreSQL (default: a temporary SQLite file per tree)")
    p.add_argument("--callers", type=lambda v: [int(x) for x in v.split(",")], default=[1, 50, 200],
                   help="concurrent callers, comma-separated (default 1,50,200)")  # fmt: skip
    p.add_argument("--modes", type=lambda v: v.split(","), default=["new", "repeat"], help="new, repeat or both")
    p.add_argument("--duration", type=float, default=2.0, help="seconds a run")
    p.add_argument("--rounds", type=int, default=2, help="rounds (trees alternated); best reported")
    args = p.parse_args()
    if not all(1 <= c <= 2000 for c in args.callers) or not (0.5 <= args.duration <= 60 and 1 <= args.rounds <= 9):
        p.error("--callers 1..2000 each, --duration 0.5..60, --rounds 1..9")
    if set(args.modes) - {"new", "repeat"}:
        p.error("--modes takes new, repeat or new,repeat")
    tree = Path(args.compare_with).resolve()
    if not (tree / "aggregator" / "web" / "namebudget.py").is_file():
        p.error(f"--compare-with {tree}: not a copy of the repository (aggregator/web/namebudget.py)")
    args.compare_with = str(tree)
    return args


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child_main(json.loads(sys.argv[2]))
    else:
        sys.exit(main(parse_args()))
