"""Audit search by certificate number on a large log, and what the hash chain costs an append (issue 14).

    .venv/bin/python bench/audit_search.py --rows 1000000 --backend postgres --db postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/audit_search.py --rows 1000000 --backend sqlite

1. Fill `audit_log` with N rows (PostgreSQL: COPY; SQLite: executemany in 50,000-row transactions), numbers
   drawn from N/8 certificates (about 8 lookups each), 5 % of the rows made by jobs. The bulk rows carry no
   chain (seq NULL: as rows from before migration 0007): the search never reads the chain columns. The search
   indexes of migration 0007 are dropped for the load and built after it (as a restore would).
2. Search: `aggregator.audit.search` (what the API and the page call: the newest id, the page of entries, the
   job groups) for a random known number, limit 50, `--queries` times; p50 / p99 against the baseline of the
   same run: one row read by primary key (`SELECT ... WHERE id = ?`) on the same connection pool.
3. Append: entries written one per transaction, chained (`AuditLog.write`: append lock, read the head, hash,
   insert) against a plain INSERT of the same rows (no lock, no head, no hash); and 200 concurrent writers
   group-committed, chained.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile  # noqa: E402


def _rows(n: int, seed: int = 14):
    rng = random.Random(seed)
    numbers = max(1, n // 8)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(n):
        job = f"roster-{i // 5000}" if rng.random() < 0.05 else None
        yield (
            start + timedelta(seconds=i * 3), f"k{rng.randrange(200):011d}", "employer", "入职核验", "lookup",
            f"T{rng.randrange(numbers):018d}", False, False, "valid", "10.0.0.1", None, None, job,
        )  # fmt: skip


COLUMNS = ("at", "key_id", "role", "purpose", "action", "number", "name_given", "id_number_given", "verdict",
           "client_ip", "name_check", "holder_id_number", "job_id")  # fmt: skip
SEARCH_INDEXES = ("ix_audit_log_number_id", "ix_audit_log_holder_id", "ix_audit_log_job_id", "ix_audit_log_action_id",
                  "ix_audit_log_at", "ix_audit_log_key_id_at")  # fmt: skip


async def _load(engine, backend: str, n: int) -> float:
    import sqlalchemy as sa

    from aggregator.records.schema import audit_log

    defs = {ix.name: ix for ix in audit_log.indexes if ix.name in SEARCH_INDEXES}
    t0 = time.perf_counter()
    async with engine.begin() as conn:
        for name in SEARCH_INDEXES:
            await conn.execute(sa.text(f"DROP INDEX IF EXISTS {name}"))
    if backend == "postgres":
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            pg = raw.driver_connection
            batch: list[tuple] = []
            for row in _rows(n):
                batch.append(row)
                if len(batch) == 200_000:
                    await pg.copy_records_to_table("audit_log", records=batch, columns=COLUMNS)
                    batch = []
            if batch:
                await pg.copy_records_to_table("audit_log", records=batch, columns=COLUMNS)
    else:
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            sql = f"INSERT INTO audit_log ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
            batch = []
            for at, *rest in _rows(n):
                batch.append((at.strftime("%Y-%m-%d %H:%M:%S.%f"), *rest))
                if len(batch) == 50_000:
                    await raw.executemany(sql, batch)
                    await raw.commit()
                    batch = []
            if batch:
                await raw.executemany(sql, batch)
                await raw.commit()
    loaded = time.perf_counter() - t0
    async with engine.begin() as conn:
        for name in SEARCH_INDEXES:
            await conn.run_sync(lambda c, ix=defs[name]: ix.create(c))
        if backend == "postgres":
            await conn.execute(sa.text("ANALYZE audit_log"))
        else:
            await conn.execute(sa.text("ANALYZE"))
    print(f"loaded {n:,} rows in {loaded:.1f} s, indexes built in {time.perf_counter() - t0 - loaded:.1f} s")
    return loaded


async def _search(engine, n: int, queries: int) -> None:
    import sqlalchemy as sa

    from aggregator.audit import AuditQuery, search
    from aggregator.records.schema import audit_log

    rng = random.Random(7)
    numbers = max(1, n // 8)
    wanted = [f"T{rng.randrange(numbers):018d}" for _ in range(queries)]
    ids = [rng.randrange(1, n) for _ in range(queries)]
    for number in wanted[:20]:  # warm
        await search(engine, AuditQuery(number=number))
    base, timed, hits = [], [], 0
    for number, rid in zip(wanted, ids, strict=True):
        t0 = time.perf_counter()
        async with engine.connect() as conn:
            (await conn.execute(sa.select(audit_log).where(audit_log.c.id == rid))).first()
        base.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        page = await search(engine, AuditQuery(number=number, limit=50))
        timed.append(time.perf_counter() - t0)
        hits += len(page.items)
    p50, p99 = percentile(timed, 50), percentile(timed, 99)
    b50, b99 = percentile(base, 50), percentile(base, 99)
    print(f"search by number ({queries} queries, {hits / queries:.1f} lines a page): p50 {p50 * 1e3:.2f} ms, "
          f"p99 {p99 * 1e3:.2f} ms  | baseline (row by id) p50 {b50 * 1e3:.2f} ms, p99 {b99 * 1e3:.2f} ms  "
          f"| ratio p50 {p50 / b50:.1f}x, p99 {p99 / b99:.1f}x")  # fmt: skip


async def _append(engine, count: int) -> None:
    import sqlalchemy as sa

    from aggregator.audit import AuditEntry, AuditLog
    from aggregator.records.database import write_transaction
    from aggregator.records.schema import audit_log
    from aggregator.web.roles import Principal, Role

    who = Principal(Role.EMPLOYER, key_id="kbench000001")

    def entry(i: int) -> AuditEntry:
        return AuditEntry.now(who, action="lookup", number=f"B{i:018d}", name_given=False, id_number_given=False,
                              verdict="valid", purpose="bench", client_ip="10.0.0.1")  # fmt: skip

    log = AuditLog(engine)
    plain, chained = [], []
    for i in range(count):  # interleaved, so both see the same machine
        row = entry(i).row()
        t0 = time.perf_counter()
        async with write_transaction(engine) as conn:
            await conn.execute(sa.insert(audit_log), [row])
        plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await log.write([entry(i)])
        chained.append(time.perf_counter() - t0)
    p, c = percentile(plain, 50), percentile(chained, 50)
    print(f"append one entry a transaction ({count} each): plain insert p50 {p * 1e3:.2f} ms, "
          f"chained p50 {c * 1e3:.2f} ms, ratio {c / p:.2f}x; p99 {percentile(plain, 99) * 1e3:.2f} / "
          f"{percentile(chained, 99) * 1e3:.2f} ms")  # fmt: skip
    t0 = time.perf_counter()
    await asyncio.gather(*(log.write([entry(10_000 + i)]) for i in range(2000)))
    print(f"2,000 concurrent chained writes (group-committed): {2000 / (time.perf_counter() - t0):,.0f} entries/s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--appends", type=int, default=300)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--keep", action="store_true", help="keep the schema / file (re-use with --reuse)")
    args = parser.parse_args()

    import asyncpg

    from aggregator.records import RecordStore

    print(f"audit search bench: {args.backend}, {args.rows:,} rows")
    if args.backend == "postgres":
        schema = f"bench_audit_{uuid.uuid4().hex[:8]}"
        dsn = args.db.replace("postgresql+asyncpg://", "postgresql://")
        admin = await asyncpg.connect(dsn)
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        store = await RecordStore.open(args.db, connect_args={"server_settings": {"search_path": schema}})
    else:
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="bench-audit-"))
        store = await RecordStore.open(f"sqlite+aiosqlite:///{folder / 'audit.sqlite3'}")
    try:
        await _load(store.engine, args.backend, args.rows)
        await _search(store.engine, args.rows, args.queries)
        await _append(store.engine, args.appends)
    finally:
        await store.close()
        if args.backend == "postgres":
            if not args.keep:
                await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await admin.close()
        elif not args.keep:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
