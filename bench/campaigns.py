"""Spot-check campaigns (issue 14): drawing a stratified sample, and checking it at the sources' rate limits.

    .venv/bin/python bench/campaigns.py                              # SQLite; PostgreSQL too when configured
    CERTQ_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python bench/campaigns.py
    .venv/bin/python bench/campaigns.py --rows 200000 --only draw    # a smaller population, one part
    .venv/bin/python bench/campaigns.py --only draw --compare-with /tmp/before-draw   # A/B against an older tree

(a) draw: a stratified sample (by issuer and by province, proportional) of --sample (10,000) from --rows
    (1,000,000) current records, on SQLite and on PostgreSQL (a private schema, dropped afterwards). Baseline in
    the same run: one pass that reads the stratifying column of every current record (`SELECT issuer, count(*)
    ... GROUP BY issuer`), the least any stratified draw must do. Aim: < 2 s.
(b) checks: a campaign over the sandbox's data checked at the sources' configured rate limits (10/s, burst 20
    each). The ceiling is what the limits allow for the questions this sample asks: per source, (questions -
    burst) / rate seconds; the slowest source sets the pace. Reported: items/s achieved against items/s at the
    ceiling (aim >= 0.9).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

from aggregator.campaigns import CampaignStore, Design, Population  # noqa: E402
from aggregator.campaigns.sampling import draw  # noqa: E402
from aggregator.records import RecordStore  # noqa: E402
from aggregator.records.frame_key import frame_key, sub_key  # noqa: E402

TODAY = date(2026, 11, 25)
PROVINCES = ["11", "12", "13", "14", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41", "42", "43",
             "44", "45", "50", "51", "52", "53", "61", "62", "65"]  # fmt: skip
ABBR = {"11": "京", "12": "津", "13": "冀", "14": "晋", "21": "辽", "22": "吉", "23": "黑", "31": "沪", "32": "苏",
        "33": "浙", "34": "皖", "35": "闽", "36": "赣", "37": "鲁", "41": "豫", "42": "鄂", "43": "湘", "44": "粤",
        "45": "桂", "50": "渝", "51": "川", "52": "贵", "53": "云", "61": "陕", "62": "甘", "65": "新"}  # fmt: skip
COLUMNS = ("id", "batch_id", "department", "number", "holder_id_number", "kind", "issuer", "holder_name", "category",
           "operation_item", "issued_on", "valid_from", "valid_until", "status", "row_number", "is_current",
           "frame_key")  # fmt: skip


def rows(n: int, seed: int = 1) -> list[tuple[Any, ...]]:
    """n current records of the four departments' shapes, ~30 provinces, ~400 issuers."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = rng.choice(PROVINCES)
        holder = f"{p}{rng.randint(1, 20):02d}{rng.randint(1, 9):02d}{rng.randint(1960, 2004)}0{rng.randint(1, 9)}" \
                 f"{rng.randint(10, 28)}{i % 1000:03d}X"  # fmt: skip
        d = rng.random()
        issued, start, until = date(2020, 1, 2), date(2023, 1, 2), date(2029, 1, 1)
        if d < 0.45:
            dept, number, kind, cat, item = "mem", "T" + holder, "mem_special_operation", "电工作业", "低压电工作业"
        elif d < 0.65:
            dept, kind, cat, item = "mohurd", "mohurd_construction", "建筑电工", "建筑电工"
            number = f"{ABBR[p]}A01{rng.randint(2010, 2025)}{i % 1_000_000:06d}"
        elif d < 0.85:
            dept, number, kind, cat, item = "samr", holder, "samr_special_equipment", "叉车司机", "N1"
        else:
            dept, kind, cat, item, until = "mohrss", "mohrss_skill_level", "电工", None, None
            number = f"S{rng.randint(1, 9999):04d}{p}{rng.randint(1, 999999):06d}23{rng.randint(1, 5)}{i % 1_000_000:06d}"
        issuer = f"{p}省{dept}发证机关{rng.randint(1, 15):02d}"
        key = frame_key(dept, number, sub_key(dept, cat, item), holder)  # as the importer writes it
        out.append((i + 1, 1, dept, number, holder, kind, issuer, "张三", cat, item, issued, start, until, "valid",
                    i + 2, True, key))  # fmt: skip
    return out


async def load_sqlite(path: Path, data: list[tuple[Any, ...]]) -> str:
    import sqlite3

    url = f"sqlite+aiosqlite:///{path}"
    await (await RecordStore.open(url)).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO batches(id, department, quarter, file_name, sha256, uploaded_at, uploaded_by, status) "
                 "VALUES (1, 'mem', '2026Q3', 'bench.csv', 'x', '2026-10-01 00:00:00', 'bench', 'imported')")  # fmt: skip
    conn.executemany(
        f"INSERT INTO records({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
        ((*r[:10], *(d.isoformat() if d else None for d in r[10:13]), *r[13:15], 1, r[16]) for r in data),
    )
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()
    return url


async def load_postgres(url: str, schema: str, data: list[tuple[Any, ...]]) -> RecordStore:
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    store = await RecordStore.open(url, connect_args={"server_settings": {"search_path": schema}})
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        await conn.execute("INSERT INTO batches(id, department, quarter, file_name, sha256, uploaded_at, uploaded_by, "
                           "status) VALUES (1, 'mem', '2026Q3', 'bench.csv', 'x', now(), 'bench', 'imported')")  # fmt: skip
        await conn.copy_records_to_table("records", records=data, columns=list(COLUMNS))
        await conn.execute("ANALYZE records")
    finally:
        await conn.close()
    return store


async def drop_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def load_draw(tree: Path) -> Any:
    """`draw` of the sampling module of another tree (a copy from before a change), for a same-process A/B; the rest
    of `aggregator` comes from this tree."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("before_sampling", tree / "aggregator/campaigns/sampling.py")
    assert spec and spec.loader, tree
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module.draw


async def time_draws(store: RecordStore, sample: int, repeat: int, draws: dict[str, Any]) -> dict[str, Any]:
    """Each round: the baseline pass, then each stratifier drawn by each of `draws` in turn (A/B alternated)."""
    baseline_q = sa.text("SELECT issuer, count(*) FROM records WHERE is_current GROUP BY issuer")
    out: dict[str, Any] = {"baseline": []}
    first: dict[str, Any] = {}
    for _ in range(repeat):
        t = time.perf_counter()
        async with store.engine.connect() as conn:
            (await conn.execute(baseline_q)).all()
        out["baseline"].append(time.perf_counter() - t)
        for by in ("issuer", "province"):
            design = Design(n=sample, method="stratified", stratify_by=by, allocation="proportional", seed=2026)
            for name, fn in draws.items():
                t = time.perf_counter()
                drawn = await fn(store.engine, Population(), design)
                out.setdefault((name, by), []).append(time.perf_counter() - t)
                first.setdefault((name, by), (drawn.population, len(drawn.items), len(drawn.strata),
                                              drawn.frame_digest))  # fmt: skip
    out["shape"] = first
    return out


def report_draws(name: str, timed: dict[str, Any], draws: dict[str, Any]) -> None:
    base = min(timed["baseline"])
    print(f"  {name}: baseline pass (issuer GROUP BY) {base:.2f} s (best of {len(timed['baseline'])})")
    for by in ("issuer", "province"):
        for which in draws:
            best = min(timed[(which, by)])
            population, n, strata, digest = timed["shape"][(which, by)]
            label = f" [{which}]" if len(draws) > 1 else ""
            print(
                f"  {name}: stratified by {by}{label}: {best:.2f} s best, {max(timed[(which, by)]):.2f} s worst; "
                f"{n:,} of {population:,} in {strata} strata; {best / base:.1f}x the baseline pass; "
                f"digest {digest[:12]}"
            )
        if len(draws) > 1:
            a, b = (min(timed[(w, by)]) for w in draws)
            same = len({timed["shape"][(w, by)] for w in draws}) == 1
            print(f"  {name}: by {by}: {'/'.join(draws)} = {a / b:.2f} (best to best); the same sample: {same}")


async def part_draw(args: argparse.Namespace) -> None:
    print(f"(a) draw: {args.sample:,} from {args.rows:,} records")
    draws = {"this": draw}
    if args.compare_with:
        draws["before"] = load_draw(Path(args.compare_with))
        print(f"  A/B: this tree's draw and {args.compare_with}'s, alternated in each round")
    t = time.perf_counter()
    data = rows(args.rows)
    print(f"  generated in {time.perf_counter() - t:.1f} s")
    with tempfile.TemporaryDirectory(prefix="certq-bench-campaigns-") as tmp:
        url = await load_sqlite(Path(tmp) / "records.sqlite3", data)
        store = await RecordStore.open(url)
        try:
            sqlite = await time_draws(store, args.sample, args.repeat, draws)
        finally:
            await store.close()
        report_draws("SQLite", sqlite, draws)
    pg = os.environ.get("CERTQ_BENCH_DATABASE_URL") or os.environ.get("CERTQ_TEST_DATABASE_URL")
    if pg and not args.skip_pg:
        pg = pg.replace("postgresql://", "postgresql+asyncpg://", 1) if pg.startswith("postgresql://") else pg
        schema = f"certq_bench_{uuid.uuid4().hex[:10]}"
        try:
            store = await load_postgres(pg, schema, data)
            try:
                timed = await time_draws(store, args.sample, args.repeat, draws)
            finally:
                await store.close()
            report_draws("PostgreSQL", timed, draws)
            same = timed["shape"] == sqlite["shape"]
            print(f"  the same sample on both (population, size, strata, digest): {same}")
        finally:
            await drop_schema(pg, schema)
    else:
        print("  PostgreSQL: skipped (set CERTQ_BENCH_DATABASE_URL)")


async def part_checks(args: argparse.Namespace) -> None:
    from aggregator.campaigns.run import CampaignRuns
    from aggregator.config import Settings
    from aggregator.gateway import Gateway
    from aggregator.jobs import JobStore
    from aggregator.models import Department
    from aggregator.sandbox import Sandbox, generate
    from aggregator.sandbox.dataset import write_upload_csv

    dataset = generate(seed=2026, holders=args.holders, today=TODAY)
    print(f"(b) checks: {args.checks} items of {sum(len(v) for v in dataset.uploaded.values())} uploads, "
          "at the sources' configured rate limits")
    with tempfile.TemporaryDirectory(prefix="certq-bench-checks-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'certq.sqlite3'}"
        store = await RecordStore.open(url)
        for dept in Department:
            path = write_upload_csv(dataset, dept, Path(tmp) / f"{dept.value}.csv")
            await store.import_file(path, department=dept, quarter=dataset.upload_quarter, uploaded_by="bench")
        await store.close()
        async with Sandbox(dataset) as sb:
            settings = Settings.load().with_endpoints(sb.urls)
            limits = {s.id: (s.rate_limit.per_second, s.rate_limit.burst) for s in settings.sources}
            async with await Gateway.open(settings, database_url=url, redis_url="", today=lambda: TODAY) as gw:
                cs = CampaignStore(gw.store.engine)
                campaign = await cs.create("bench", Population(), Design(n=args.checks, seed=7), organisation="",
                                           created_by="bench", created_role="regulator")  # fmt: skip
                jobs = JobStore(gw.store.engine, lease_s=60)
                job = await jobs.create("campaign_run", organisation="", created_by="bench", subject=campaign.id)
                lease = await jobs.claim(job.id, worker="bench")
                assert lease is not None
                t = time.perf_counter()
                counts = await CampaignRuns(gw, cs).run(lease)
                elapsed = time.perf_counter() - t
                items = await cs.items(campaign.id)
    asked: Counter[str] = Counter(s["source"] for i in items for s in (i.result or {}).get("sources", []))
    pace = {src: max(q - limits[src][1], 0) / limits[src][0] for src, q in asked.items()}
    slowest = max(pace, key=lambda s: pace[s])
    ceiling = len(items) / pace[slowest] if pace[slowest] else float("inf")
    achieved = len(items) / elapsed
    print(f"  outcomes {counts}")
    print("  questions per source: " + ", ".join(f"{s} {q} ({limits[s][0]:g}/s, burst {limits[s][1]})"
                                                  for s, q in sorted(asked.items())))  # fmt: skip
    print(f"  {len(items)} items in {elapsed:.1f} s = {achieved:.2f} items/s; ceiling {ceiling:.2f} items/s "
          f"(set by {slowest}: {pace[slowest]:.1f} s of slots); ratio {achieved / ceiling:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--sample", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--checks", type=int, default=300, help="items checked in (b)")
    p.add_argument("--holders", type=int, default=400, help="sandbox holders in (b)")
    p.add_argument("--only", choices=("draw", "checks"))
    p.add_argument("--skip-pg", action="store_true")
    p.add_argument("--compare-with", metavar="TREE", help="(a): also draw with TREE/aggregator/campaigns/sampling.py "
                   "(a copy from before a change), alternated with this tree's in each round")  # fmt: skip
    args = p.parse_args()
    if args.only in (None, "draw"):
        asyncio.run(part_draw(args))
    if args.only in (None, "checks"):
        asyncio.run(part_checks(args))


if __name__ == "__main__":
    main()
