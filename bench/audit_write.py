"""The audit log's writer alone: entries committed per second and CPU per entry with many concurrent writers.

    python bench/audit_write.py                                   # SQLite file, 50 writers, 3 s, best of 3
    python bench/audit_write.py --database-url postgresql://postgres@127.0.0.1:5432/test --writers 200

What runs: one process, one event loop (uvloop when installed, as `certq serve`), a fresh database brought to
the newest migration (SQLite: a temporary file; PostgreSQL: a schema of its own, dropped at the end).
`--writers` tasks each write one lookup entry after another (`AuditLog.write`, which returns once its entry is
committed: what an employer lookup waits for) for `--duration` seconds. Reported: entries committed per second,
the process's CPU time per entry (user + system, all threads: the aiosqlite thread included), and the mean
group size (entries per transaction). The baseline in the same run is the bare cost of the same kind of database
(a second one, so that the chain stays whole): the same writers each doing one INSERT of an equal row in its own
write transaction through an engine made the same way (no chain, no grouping).
The chain is verified at the end (`chain.verify`): the figures count only if it holds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402

from aggregator.audit import AuditEntry, AuditLog  # noqa: E402
from aggregator.audit.chain import verify  # noqa: E402
from aggregator.records.database import open_engine, write_transaction  # noqa: E402
from aggregator.records.schema import audit_log  # noqa: E402
from aggregator.web.roles import Principal, Role  # noqa: E402

WHO = Principal(Role.EMPLOYER, key_id="bench0000001", label="bench")


def entry(i: int) -> AuditEntry:
    return AuditEntry.now(
        WHO, action="lookup", number=f"T{i:018d}", name_given=True, id_number_given=False, verdict="valid",
        purpose=None, client_ip="127.0.0.1", name_check="match", holder_id_number="110105199003071239",
    )  # fmt: skip


class Counting(AuditLog):
    """Counts the transactions the writer makes (to report the group size); writes as AuditLog does."""

    transactions = 0

    async def _insert(self, rows):  # type: ignore[no-untyped-def]
        self.transactions += 1
        return await super()._insert(rows)


async def run(kind: str, engine: sa.ext.asyncio.AsyncEngine, writers: int, duration: float) -> tuple[int, float, int]:
    log = Counting(engine)
    stop = time.perf_counter() + duration
    done = 0

    async def audited(w: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < stop:
            await log.write([entry(w * 1_000_000 + i)])
            i += 1
            done += 1

    async def bare(w: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < stop:
            row = entry(w * 1_000_000 + i).row()
            async with write_transaction(engine) as conn:
                await conn.execute(sa.insert(audit_log), [row])
            i += 1
            done += 1

    cpu0 = time.process_time()
    await asyncio.gather(*((audited if kind == "audit" else bare)(w) for w in range(writers)))
    return done, (time.process_time() - cpu0) / max(1, done) * 1e6, log.transactions


async def open_database(args: argparse.Namespace, tmp: Path, name: str) -> tuple[sa.ext.asyncio.AsyncEngine, str]:
    if not args.database_url:
        return await open_engine(f"sqlite+aiosqlite:///{tmp / (name + '.db')}"), ""
    schema = f"bench_audit_{name}_{uuid.uuid4().hex[:8]}"
    url = args.database_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    admin = await open_engine(url)
    async with admin.begin() as conn:
        await conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    await admin.dispose()
    return await open_engine(url, connect_args={"server_settings": {"search_path": schema}}), schema


async def main(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="certq-bench-audit-"))
    engines = {kind: await open_database(args, tmp, kind) for kind in ("bare", "audit")}  # one database each
    print(f"audit writer benchmark: {engines['audit'][0].dialect.name}, {args.writers} writers, {args.duration} s"
          f" a round, best of {args.rounds}; load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    try:
        best: dict[str, tuple[float, float, float]] = {}
        for _ in range(args.rounds):
            for kind in ("bare", "audit"):
                t0 = time.perf_counter()
                n, cpu_us, tx = await run(kind, engines[kind][0], args.writers, args.duration)
                rate = n / (time.perf_counter() - t0)
                group = n / tx if tx else 1.0
                print(f"    {kind:5s} {rate:8.0f} entries/s  CPU {cpu_us:6.1f} µs/entry  {group:5.1f} a transaction")
                if kind not in best or rate > best[kind][0]:
                    best[kind] = (rate, cpu_us, group)
        report = await verify(engines["audit"][0])
        ok = report.ok and report.checked > 0
        print(f"chain verified: {report.checked} entries, {'ok' if ok else report.problem}")
        (br, bc, _), (ar, ac, ag) = best["bare"], best["audit"]
        print(f"| database | writers | bare insert, entries/s | audit writer, entries/s | ratio |"
              f" CPU µs/entry, bare / audit | entries/transaction |\n| {engines['audit'][0].dialect.name} |"
              f" {args.writers} | {br:,.0f} | {ar:,.0f} | {ar / br:.2f} | {bc:.0f} / {ac:.0f} | {ag:.1f} |")
        print(f"load average at end {os.getloadavg()[0]:.2f}")
        return 0 if ok else 1
    finally:
        for engine, schema in engines.values():
            if schema:
                async with engine.begin() as conn:
                    await conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
            await engine.dispose()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", default=None, help="PostgreSQL (default: a temporary SQLite file)")
    p.add_argument("--writers", type=int, default=50, help="concurrent writers (requests waiting on their entry)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds a round")
    p.add_argument("--rounds", type=int, default=3, help="rounds (bare and audit alternated); best reported")
    args = p.parse_args()
    if not (1 <= args.writers <= 2000 and 0.5 <= args.duration <= 60 and 1 <= args.rounds <= 9):
        p.error("--writers 1..2000, --duration 0.5..60, --rounds 1..9")
    return args


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        uvloop = None
    runner = uvloop.run if uvloop is not None else asyncio.run
    sys.exit(runner(main(parse_args())))
