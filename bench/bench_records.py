"""Benchmarks for the records store (aggregator/records): import and lookup, each beside a baseline from the same run.

    python bench/bench_records.py                       # 1,000,000 rows: generate, import, look up (a few minutes)
    python bench/bench_records.py --rows 100000         # a smaller file to try things out
    CERTQ_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test python bench/bench_records.py --postgres

Setup (not measured): a deterministic (seeded) MEM upload CSV under bench/out/: Chinese headers as departments
write them, T+ID certificate numbers whose ID numbers carry correct GB 11643 check characters, names, issuers,
operation items, terms and statuses drawn like real ones (about 10 % of holders hold two or three cards under
one number, a few percent of dates in other spellings, a lower-case x now and then).

(1) import: the sqlite3 shell's `.mode csv` + `.import FILE records_raw` of the same file into a fresh
    database (the baseline: no validation, no typing, no indexes), the same plus the two lookup indexes built
    afterwards, and certq's `RecordStore.import_file` into a fresh SQLite file in a child process, in
    interleaved rounds: wall time (perf_counter) and CPU time (rusage) of each, rows/s, the ratio against each
    baseline (aim >= 0.25 against the bare `.import`) and the child's peak RSS (VmHWM; aim < 300 MB), beside
    the peak RSS of a bare interpreter that only imports the certq modules;
(2) lookup on the store just imported: p50/p99/max of `RecordStore.find` by certificate number and by ID
    number, existing and missing numbers (aim p99 < 5 ms), and of a whole `Gateway.lookup` with the four
    records sources only and the in-process cache, every lookup a distinct number (so a cache miss);
(3) optional, with --postgres (or --only-postgres): the same import into PostgreSQL (fresh schemas, dropped
    afterwards) against psql's `\\copy ... (FORMAT csv)` of the file into a 12-column text table (the baseline:
    aim >= 0.5x) and asyncpg's `COPY ... FROM STDIN`, in interleaved rounds (with --compare-with, the other
    code's import too), with the importing child's client CPU and peak RSS; then `find` latencies there.

--compare-with DIR runs (1) and (2) also on another copy of the code (e.g. the last commit's), for before/after
figures from the same run. Only loopback is used. The PostgreSQL URL is --database-url, else
CERTQ_BENCH_DATABASE_URL, else CERTQ_TEST_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

# The repository root, for bench.common and aggregator; last in a --compare-with child, which must import
# aggregator from the other tree (its PYTHONPATH, CERTQ_BENCH_CODE) and only bench.common from here.
sys.path.insert(len(sys.path) if "CERTQ_BENCH_CODE" in os.environ else 0, str(Path(__file__).resolve().parent.parent))

from aggregator.numbers import id_check_character  # noqa: E402
from aggregator.sandbox import tables as t  # noqa: E402
from bench.common import ROOT, percentile  # noqa: E402

OUT = ROOT / "bench" / "out"
SQLITE3 = "/usr/bin/sqlite3"
HEADER = ["证书编号", "姓名", "身份证号", "性别", "作业类别", "操作项目", "发证机关", "初领日期", "有效期起", "有效期至", "复审日期", "证书状态"]
QUARTER = "2026Q3"
TODAY = date(2026, 12, 1)
MODULES = (  # what a gateway process imports: the bare-interpreter baseline imports exactly these
    "aggregator.records.store",
    "aggregator.records.importer",
    "aggregator.gateway",
    "aggregator.config",
)

# --- Generating the upload (setup, not measured) ---------------------------------------------------

# MEM 特种作业: (category, operation item, weight)
MEM_ITEMS: list[tuple[str, str, int]] = [
    ("电工作业", "低压电工作业", 34),
    ("电工作业", "高压电工作业", 9),
    ("电工作业", "防爆电气作业", 2),
    ("焊接与热切割作业", "熔化焊接与热切割作业", 22),
    ("焊接与热切割作业", "压力焊作业", 2),
    ("焊接与热切割作业", "钎焊作业", 1),
    ("高处作业", "登高架设作业", 8),
    ("高处作业", "高处安装、维护、拆除作业", 7),
    ("制冷与空调作业", "制冷与空调设备运行操作作业", 3),
    ("制冷与空调作业", "制冷与空调设备安装修理作业", 4),
    ("危险化学品安全作业", "化工自动化控制仪表作业", 2),
    ("危险化学品安全作业", "氯化工艺作业", 1),
    ("金属非金属矿山安全作业", "金属非金属矿山井下电气作业", 1),
    ("烟花爆竹安全作业", "烟火药制造作业", 1),
    ("煤矿安全作业", "煤矿井下电气作业", 1),
]
STATUSES: list[tuple[str, int]] = [("有效", 86), ("过期", 7), ("暂扣", 3), ("吊销", 2), ("注销", 1), ("已失效", 1)]


def _fmt_tables(first: date, last: date) -> tuple[int, list[str], list[str], list[str]]:
    """ISO, 2024/1/2 and 20240102 spellings of every day in [first, last], indexed by ordinal - base."""
    base = first.toordinal()
    iso, slash, compact = [], [], []
    d = first
    while d <= last:
        iso.append(d.isoformat())
        slash.append(f"{d.year}/{d.month}/{d.day}")
        compact.append(f"{d.year}{d.month:02d}{d.day:02d}")
        d += timedelta(days=1)
    return base, iso, slash, compact


def generate_csv(path: Path, rows: int, seed: int) -> dict[str, Any]:
    """Write a MEM upload of exactly `rows` data rows (UTF-8, no BOM, LF); returns a few facts about it."""
    rng = random.Random(seed)
    regions = [code for code, _ in t.REGIONS]
    provinces = t.PROVINCES
    hubs = t.WORK_HUBS
    first_birth, last_birth = date(1960, 1, 1).toordinal(), date(2004, 12, 31).toordinal()
    birth_text = {o: date.fromordinal(o).strftime("%Y%m%d") for o in range(first_birth, last_birth + 1)}
    base, iso, slash, compact = _fmt_tables(date(2005, 1, 1), date(2040, 12, 31))
    first_issue, last_issue = date(2008, 1, 1).toordinal(), date(2026, 9, 30).toordinal()
    today = TODAY.toordinal()
    items = [(c, i) for c, i, _ in MEM_ITEMS]
    item_weights = [w for _, _, w in MEM_ITEMS]
    status_texts = [s for s, _ in STATUSES]
    status_weights = [w for _, w in STATUSES]
    surnames, compound = t.SURNAMES, t.COMPOUND_SURNAMES
    male, female = t.MALE_GIVEN, t.FEMALE_GIVEN
    seen: set[str] = set()
    written = holders = multi = lower_x = other_dates = 0
    six_years = 2191  # days in six years, near enough for drawing terms (the dates themselves are exact)

    def spell(ordinal: int) -> str:
        nonlocal other_dates
        r = rng.random()
        if r < 0.97:
            return iso[ordinal - base]
        other_dates += 1
        return slash[ordinal - base] if r < 0.99 else compact[ordinal - base]

    def add_years(ordinal: int, years: int) -> int:
        d = date.fromordinal(ordinal)
        try:
            return d.replace(year=d.year + years).toordinal()
        except ValueError:  # 29 February
            return d.replace(year=d.year + years, day=28).toordinal()

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write(",".join(HEADER) + "\n")
        buf: list[str] = []
        while written < rows:
            woman = rng.random() < 0.05
            while True:
                region = rng.choice(regions)
                birth = birth_text[rng.randint(first_birth, last_birth)]
                seq = rng.randrange(0, 1000, 2) + (0 if woman else 1)  # 17th digit: odd for men, even for women
                first17 = f"{region}{birth}{seq:03d}"
                if first17 not in seen:
                    seen.add(first17)
                    break
            id_number = first17 + id_check_character(first17)
            if id_number[17] == "X" and rng.random() < 0.05:
                id_number = id_number[:17] + "x"  # as typed by someone: the importer normalises it
                lower_x += 1
            gender = "女" if woman else "男"
            if rng.random() < 0.01:
                name = rng.choice(compound) + rng.choice(female if woman else male)
            else:
                pool = female if woman else male
                name = rng.choice(surnames) + "".join(rng.choice(pool) for _ in range(1 if rng.random() < 0.35 else 2))
            province = provinces[region[:2]]
            if rng.random() < 0.15:  # works away from home
                province = provinces[rng.choice(hubs)]
            issuer = province.mem_issuer
            cards = 1 if rng.random() < 0.9 else (2 if rng.random() < 0.8 else 3)
            cards = min(cards, rows - written)
            holders += 1
            multi += cards > 1
            chosen: list[tuple[str, str]] = []
            while len(chosen) < cards:
                pick = rng.choices(items, item_weights)[0]
                if pick not in chosen:
                    chosen.append(pick)
            number = "T" + id_number
            for category, item in chosen:
                issued = rng.randint(first_issue, last_issue)
                status = rng.choices(status_texts, status_weights)[0]
                # renewed every six years while valid; an expired card stopped at its last term
                terms = (today - issued) // six_years
                if status in ("过期", "已失效"):
                    terms = max(0, terms - 1)
                valid_from = add_years(issued, 6 * terms)
                valid_until = add_years(valid_from, 6) - 1
                review = "" if rng.random() < 0.3 else spell(add_years(valid_from, 3))
                buf.append(
                    f"{number},{name},{id_number},{gender},{category},{item},{issuer},{spell(issued)},"
                    f"{spell(valid_from)},{spell(valid_until)},{review},{status}\n"
                )
                written += 1
            if len(buf) >= 20_000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))
    return {
        "rows": written,
        "holders": holders,
        "multi_card_holders": multi,
        "lower_case_x": lower_x,
        "other_date_spellings": other_dates,
        "bytes": path.stat().st_size,
    }


def missing_ids(count: int, exists: Callable[[str], bool], seed: int) -> list[str]:
    """`count` distinct well-formed ID numbers (good check characters, real regions) that the file does not hold."""
    rng = random.Random(seed)
    regions = [code for code, _ in t.REGIONS]
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < count:
        birth = date(1960, 1, 1) + timedelta(days=rng.randrange(16436))
        first17 = f"{rng.choice(regions)}{birth:%Y%m%d}{rng.randrange(1000):03d}"
        id_number = first17 + id_check_character(first17)
        if id_number not in seen and not exists(id_number):
            seen.add(id_number)
            out.append(id_number)
    return out


# --- Child processes: peak RSS per process ---------------------------------------------------------


def vm_hwm_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class Ran:
    """What a child process took: wall time and CPU time (user + system, all its threads).

    Peak memory is the child's own VmHWM, which it reads just before it exits: wait4's ru_maxrss is no use
    here, because Linux carries the pre-exec high-water mark over exec, and before exec a child is a copy of
    this (larger) process."""

    def __init__(self, wall: float, usage: Any, output: bytes) -> None:
        self.wall = wall
        self.cpu = usage.ru_utime + usage.ru_stime
        self.output = output


def spawn(argv: list[str], *, stdin: str = "", env: dict[str, str] | None = None) -> Ran:
    """Run a program, timed with perf_counter around it; its CPU time comes from wait4's rusage, so it is the
    child's alone (RUSAGE_CHILDREN would add up every child this process ever had)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(stdin.encode())  # a few commands at most: cannot fill the pipe
    proc.stdin.close()
    out = proc.stdout.read()
    proc.stdout.close()
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed with exit code {proc.returncode}")
    return Ran(wall, usage, out)


ROW_BY_ROW = {"CERTQ_IMPORT_COLUMNAR_MIN_BYTES": "1024G"}  # the "rowwise" contender: no file is read by polars


def run_child(
    args: list[str], *, code: Path | None = None, env_extra: dict[str, str] | None = None
) -> tuple[dict[str, Any], Ran]:
    """Run this script with `args` in a child (on the certq tree `code` if given); returns its JSON output and
    what it took."""
    env = {**os.environ, **(env_extra or {})}
    if code is not None:
        env["PYTHONPATH"] = str(code)
        env["CERTQ_BENCH_CODE"] = str(code)
    ran = spawn([sys.executable, __file__, *args], env=env)
    return json.loads(ran.output), ran


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def child_bare() -> None:
    for name in MODULES:
        __import__(name)
    print(json.dumps({"vm_hwm_kb": vm_hwm_kb()}))


async def child_import(csv_path: str, url: str, schema: str | None) -> None:
    """Open a fresh store (migrations) and import the file: what `certq import` does."""
    import aggregator
    from aggregator.records.store import RecordStore

    tag = f"certq_bench_{os.getpid()}"  # PostgreSQL: this child's server processes, for their CPU time
    connect_args = {"server_settings": {"search_path": schema, "application_name": tag}} if schema else None
    after_imports = vm_hwm_kb()
    started = time.perf_counter()
    store = await RecordStore.open(url, connect_args=connect_args)
    server_before = await server_cpu(store, tag) if schema else {}
    opened, cpu = time.perf_counter(), process_cpu()
    try:
        report = await store.import_file(csv_path, department="mem", quarter=QUARTER, uploaded_by="bench")
        imported, cpu = time.perf_counter(), process_cpu() - cpu
        server_after = await server_cpu(store, tag) if schema else {}
    finally:
        await store.close()
    server_s = sum(v - server_before.get(pid, 0.0) for pid, v in server_after.items())
    print(
        json.dumps(
            {
                "code": str(Path(aggregator.__file__).resolve().parent.parent),
                "open_s": opened - started,
                "import_s": imported - opened,
                "import_cpu_s": cpu,
                "server_cpu_s": server_s,
                "status": report.status.value,
                "rows_total": report.rows_total,
                "rows_imported": report.rows_imported,
                "rows_rejected": report.rows_rejected,
                "problems": [p.model_dump(mode="json") for p in report.problems[:5]],
                "warnings": report.warnings,
                "vm_hwm_kb_after_module_imports": after_imports,
                "vm_hwm_kb": vm_hwm_kb(),
            }
        )
    )


async def server_cpu(store: Any, tag: str) -> dict[int, float]:
    """PostgreSQL on this machine: CPU seconds (user + system) so far of each server process of the store's
    connections (found by their application_name), from /proc."""
    async with store.engine.connect() as conn:
        query = f"SELECT pid FROM pg_stat_activity WHERE application_name = '{tag}'"
        pids = (await conn.exec_driver_sql(query)).scalars().all()
        out: dict[int, float] = {}
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:  # not on this machine
                continue
            out[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return out


# --- (1) import ------------------------------------------------------------------------------------


def sqlite_shell(db: Path, script: str) -> Ran:
    """The sqlite3 shell running `script` on a fresh database file."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return spawn([SQLITE3, str(db)], stdin=script)


def fresh_sqlite(path: Path) -> str:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite+aiosqlite:///{path}"


def rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:>9,.0f} rows/s"


def bench_import_sqlite(csv_path: Path, rows: int, repeat: int, before: Path | None) -> dict[str, Any]:
    print(f"\n(1) import of {rows:,} rows into a fresh SQLite file ({repeat} interleaved round(s), medians)")
    raw_db = OUT / "baseline.sqlite3"
    shell_import = f".mode csv\n.import {csv_path} records_raw\n"
    shell_indexed = shell_import + (
        'CREATE INDEX ix_raw_number ON records_raw ("证书编号");\n'
        'CREATE INDEX ix_raw_holder ON records_raw ("身份证号");\n'
    )
    bare, _ = run_child(["--child", "bare"])
    certq_db = OUT / "certq.sqlite3"
    contenders = ["shell", "shell_indexed", "certq", "rowwise"] + (["before"] if before else [])
    wall: dict[str, list[float]] = {k: [] for k in contenders}
    cpu: dict[str, list[float]] = {k: [] for k in contenders}
    whole: dict[str, list[float]] = {"certq": [], "rowwise": [], "before": []}
    peak: dict[str, list[int]] = {"certq": [], "rowwise": [], "before": []}  # VmHWM, KiB
    child: dict[str, Any] = {}
    for _ in range(repeat):  # interleaved, so that a busy moment on the machine hurts every contender alike
        for name in contenders:
            if name.startswith("shell"):
                ran = sqlite_shell(raw_db, shell_import if name == "shell" else shell_indexed)
                wall[name].append(ran.wall)
                cpu[name].append(ran.cpu)
                continue
            out, ran = run_child(
                ["--child", "import", str(csv_path), fresh_sqlite(certq_db)],
                code=before if name == "before" else None,
                env_extra=ROW_BY_ROW if name == "rowwise" else None,
            )
            if out["status"] != "imported" or out["rows_imported"] != rows:
                raise SystemExit(f"{name} import did not import every row: {json.dumps(out, ensure_ascii=False)}")
            wall[name].append(out["import_s"])
            cpu[name].append(out["import_cpu_s"])
            whole[name].append(ran.wall)
            peak[name].append(out["vm_hwm_kb"])
            if name == "certq":
                child = out
    with sqlite3.connect(raw_db) as c:
        raw_rows = c.execute("SELECT count(*) FROM records_raw").fetchone()[0]
    assert raw_rows == rows, (raw_rows, rows)
    w = {k: statistics.median(v) for k, v in wall.items()}
    u = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"    {'':46s} {'wall':>8s} {'rows/s':>12s} {'CPU':>8s}   ratio (wall)  ratio (CPU)")
    labels = {
        "shell": "sqlite3 .import (baseline)",
        "shell_indexed": "sqlite3 .import + the 2 lookup indexes",
        "certq": "certq RecordStore.import_file",
        "rowwise": "the same, every row row by row",
        "before": f"certq import_file, code in {before}",
    }
    for name in contenders:
        ratio = "" if name == "shell" else f"   {w['shell'] / w[name]:10.3f}  {u['shell'] / u[name]:11.3f}"
        print(f"    {labels[name]:46s} {w[name]:7.2f}s {rows / w[name]:12,.0f} {u[name]:7.2f}s{ratio}")
    print(
        f"    ratio certq / (.import + indexes): {w['shell_indexed'] / w['certq']:.3f} (wall),"
        f" {u['shell_indexed'] / u['certq']:.3f} (CPU);  aim: >= 0.25 against the bare .import (wall):"
        f" {'met' if w['shell'] / w['certq'] >= 0.25 else 'NOT met'}"
    )
    print(
        f"    whole certq child process (start, imports, open with migrations, import, close):"
        f" {statistics.median(whole['certq']):.2f} s; store open {child['open_s'] * 1000:.0f} ms"
    )
    peak_mb = max(peak["certq"]) / 1024
    print(
        f"    peak RSS (VmHWM) of the importing process: {peak_mb:.0f} MB, the highest of {repeat} round(s)"
        f" (aim < 300 MB: {'met' if peak_mb < 300 else 'NOT met'});"
        f" {child['vm_hwm_kb_after_module_imports'] / 1024:.0f} MB before"
        f" it opened the store; a bare interpreter importing the certq modules: {bare['vm_hwm_kb'] / 1024:.0f} MB"
    )
    print(f"    peak RSS row by row: {max(peak['rowwise']) / 1024:.0f} MB")
    if before:
        print(f"    peak RSS with the code in {before}: {max(peak['before']) / 1024:.0f} MB")
    if repeat > 1:
        print("    certq import_file wall per round: " + ", ".join(f"{x:.2f}" for x in wall["certq"]) + " s")
    sizes = {p.name: p.stat().st_size for p in (raw_db, certq_db)}
    print(f"    database files: baseline {sizes[raw_db.name] / 1e6:.0f} MB, certq {sizes[certq_db.name] / 1e6:.0f} MB")
    return {"wall": w, "cpu": u, "peak_mb": peak_mb, "bare_mb": bare["vm_hwm_kb"] / 1024, "db": certq_db}


# --- (2) lookups -----------------------------------------------------------------------------------


async def timed(calls: list[Callable[[], Awaitable[Any]]]) -> list[float]:
    out: list[float] = []
    clock = time.perf_counter
    for call in calls:
        started = clock()
        await call()
        out.append(clock() - started)
    return out


def lookup_sample(db: Path, count: int, seed: int) -> tuple[list[tuple[str, str]], list[str]]:
    """`count` distinct existing (number, ID number) pairs drawn at random from the store, and `count`
    well-formed ID numbers it does not hold."""
    rng = random.Random(seed)
    with sqlite3.connect(db) as c:
        high = c.execute("SELECT max(id) FROM records").fetchone()[0]
        ids = rng.sample(range(1, high + 1), min(count + count // 5, high))
        pairs: dict[str, str] = {}  # number -> ID number: a holder with several cards is drawn once
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            pairs.update(
                c.execute(
                    f"SELECT number, holder_id_number FROM records WHERE id IN ({','.join('?' * len(part))})", part
                ).fetchall()
            )
        existing = sorted(pairs.items())
        rng.shuffle(existing)

        def exists(id_number: str) -> bool:
            q = "SELECT 1 FROM records WHERE department = 'mem' AND holder_id_number = ? AND is_current = 1"
            return c.execute(q, (id_number,)).fetchone() is not None

        return existing[:count], missing_ids(count, exists, seed + 1)


async def bench_lookups(
    url: str, existing: list[tuple[str, str]], missing: list[str], warmup: int, gateway: bool
) -> dict[str, list[float]]:
    from aggregator.cache import SourceCache
    from aggregator.config import Settings
    from aggregator.gateway import Gateway
    from aggregator.models import Department, Mode
    from aggregator.records.store import RecordStore

    results: dict[str, list[float]] = {}
    store = await RecordStore.open(url)
    try:
        find = store.find
        mem = Department.MEM
        warm = [lambda n=n: find(mem, number=n) for n, _ in existing[:warmup]]
        warm += [lambda i=i: find(mem, id_number=i) for i in missing[:warmup]]
        await timed(warm)
        hit = await find(mem, number=existing[0][0])
        assert hit.certificates, existing[0]
        assert not (await find(mem, id_number=missing[0])).certificates
        results["find by number, existing"] = await timed([lambda n=n: find(mem, number=n) for n, _ in existing])
        results["find by number, missing"] = await timed([lambda i=i: find(mem, number="T" + i) for i in missing])
        results["find by ID number, existing"] = await timed([lambda i=i: find(mem, id_number=i) for _, i in existing])
        results["find by ID number, missing"] = await timed([lambda i=i: find(mem, id_number=i) for i in missing])
        results["find by number + ID (as the gateway asks), existing"] = await timed(
            [lambda n=n, i=i: find(mem, number=n, id_number=i) for n, i in existing]
        )
    finally:
        await store.close()
    if gateway:
        settings = Settings.load()
        settings = settings.with_sources([s for s in settings.sources if s.mode == Mode.RECORDS])
        store = await RecordStore.open(url)
        gw = Gateway(settings, store, cache=SourceCache.memory())
        try:
            half = len(existing) // 2
            # every number is asked once only, so every lookup misses the cache; the warm-up uses others
            asked = {i for _, i in existing} | set(missing)
            warm_numbers = [f"T{i}" for i in missing_ids(warmup, asked.__contains__, 99)]
            await timed([lambda n=n: gw.lookup(n) for n in warm_numbers])
            answer = await gw.lookup(existing[0][0])
            assert answer.certificates and answer.verdict.value != "not_found", answer.verdict
            ok_numbers = [n for n, _ in existing[1:half]]
            results["gateway lookup T+ID, existing"] = await timed([lambda n=n: gw.lookup(n) for n in ok_numbers])
            results["gateway lookup T+ID, missing"] = await timed(
                [lambda i=i: gw.lookup("T" + i) for i in missing[:half]]
            )
            results["gateway lookup ID number, existing"] = await timed(
                [lambda i=i: gw.lookup(i) for _, i in existing[half:]]
            )
            results["gateway lookup ID number, missing"] = await timed(
                [lambda i=i: gw.lookup(i) for i in missing[half:]]
            )
            stats = gw.cache.stats()
            assert stats["hits"] == 0, stats
        finally:
            await gw.close()
    return results


def summary(results: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    def figures(v: list[float]) -> dict[str, float]:  # percentiles by nearest rank (bench/common.py)
        return {"n": len(v), "p50": percentile(v, 50, 0.0), "p99": percentile(v, 99, 0.0), "max": max(v)}

    out = {label: figures(v) for label, v in results.items()}
    out["all finds"] = figures([x for label, v in results.items() if label.startswith("find") for x in v])
    return out


async def child_lookups(sample: str, url: str, warmup: int, gateway: bool) -> None:
    data = json.loads(Path(sample).read_text())
    existing = [tuple(pair) for pair in data["existing"]]
    results = await bench_lookups(url, existing, data["missing"], warmup, gateway)  # type: ignore[arg-type]
    import aggregator

    print(json.dumps({"code": str(Path(aggregator.__file__).resolve().parent.parent), "samples": results}))


def print_lookups(
    figures: dict[str, dict[str, float]], store_rows: int, before: dict[str, dict[str, float]] | None = None
) -> None:
    def f(x: float) -> str:
        return f"{x * 1000:7.3f}"

    extra = "   before: p50 ms  p99 ms" if before else ""
    print(f"    {'':52s} {'lookups':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'max ms':>8s}{extra}")
    for label, v in figures.items():
        line = f"    {label:52s} {v['n']:8,.0f} {f(v['p50'])} {f(v['p99'])} {f(v['max'])}"
        if before and label in before:
            line += f"           {f(before[label]['p50'])} {f(before[label]['p99'])}"
        print(line)
    p99 = figures["all finds"]["p99"]
    verdict = "met" if p99 < 0.005 else "NOT met"
    print(f"    find p99 on {store_rows:,} records: {p99 * 1000:.3f} ms (aim < 5 ms: {verdict})")


# --- (3) PostgreSQL (optional) -----------------------------------------------------------------------


def pg_url_from_env() -> str:
    return (
        os.environ.get("CERTQ_BENCH_DATABASE_URL")
        or os.environ.get("CERTQ_TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/test"
    )


async def bench_postgres(
    url: str,
    csv_path: Path,
    rows: int,
    existing: list[tuple[str, str]],
    missing: list[str],
    warmup: int,
    *,
    repeat: int = 1,
    before: Path | None = None,
) -> None:
    import asyncpg

    from aggregator.records.store import normalise_database_url

    plain = url.replace("postgresql+asyncpg://", "postgresql://")
    schema = f"certq_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(plain)
    version = await conn.fetchval("SHOW server_version")
    print(
        f"\n(3) PostgreSQL {version}: import of {rows:,} rows into a fresh schema {schema}"
        f" ({repeat} interleaved round(s), medians)"
    )
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        columns = ", ".join(f'"{h}" text' for h in HEADER)
        contenders = ["psql", "copy", "certq", "rowwise"] + (["before"] if before else [])
        wall: dict[str, list[float]] = {k: [] for k in contenders}
        index_s: list[float] = []
        child: dict[str, dict[str, Any]] = {}
        for _ in range(repeat):  # interleaved, so that a busy moment on the machine hurts every contender alike
            for name in contenders:
                if name in ("psql", "copy"):
                    await conn.execute(f"DROP TABLE IF EXISTS {schema}.records_raw")
                    await conn.execute(f"CREATE TABLE {schema}.records_raw ({columns})")
                if name == "psql":  # psql's \copy: the client reads the file and streams it (the issue's baseline)
                    copy = f"\\copy {schema}.records_raw FROM '{csv_path}' WITH (FORMAT csv, HEADER true)"
                    wall[name].append(spawn(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", plain, "-c", copy]).wall)
                elif name == "copy":  # asyncpg's COPY FROM STDIN of the file
                    started = time.perf_counter()
                    await conn.copy_to_table(
                        "records_raw", schema_name=schema, source=str(csv_path), format="csv", header=True
                    )
                    wall[name].append(time.perf_counter() - started)
                    started = time.perf_counter()
                    await conn.execute(f'CREATE INDEX ON {schema}.records_raw ("证书编号")')
                    await conn.execute(f'CREATE INDEX ON {schema}.records_raw ("身份证号")')
                    index_s.append(time.perf_counter() - started)
                else:
                    own = f"{schema}_{name}"
                    await conn.execute(f"DROP SCHEMA IF EXISTS {own} CASCADE")
                    await conn.execute(f"CREATE SCHEMA {own}")
                    out, _ = run_child(
                        ["--child", "import", str(csv_path), normalise_database_url(url), own],
                        code=before if name == "before" else None,
                        env_extra=ROW_BY_ROW if name == "rowwise" else None,
                    )
                    if out["status"] != "imported" or out["rows_imported"] != rows:
                        said = json.dumps(out, ensure_ascii=False)
                        raise SystemExit(f"certq import did not import every row: {said}")
                    wall[name].append(out["import_s"])
                    child.setdefault(name, out)
                    child[name].setdefault("peaks", []).append(out["vm_hwm_kb"])
                    child[name].setdefault("cpus", []).append(out["import_cpu_s"])
                    child[name].setdefault("server", []).append(out["server_cpu_s"])
        w = {k: statistics.median(v) for k, v in wall.items()}
        idx = statistics.median(index_s)
        labels = {
            "psql": "psql \\copy (FORMAT csv) (baseline)",
            "copy": "asyncpg COPY FROM STDIN (FORMAT csv)",
            "certq": "certq import_file",
            "rowwise": "the same, every row row by row",
            "before": f"certq import_file, code in {before}",
        }
        print(f"    {'':44s} {'wall':>9s} {'rows/s':>14s}  ratio to psql \\copy")
        for name in contenders:
            extra = ""
            if name in child:
                extra = (
                    f"   (client CPU {statistics.median(child[name]['cpus']):.2f} s,"
                    f" server CPU {statistics.median(child[name]['server']):.2f} s,"
                    f" peak RSS {max(child[name]['peaks']) / 1024:.0f} MB)"
                )
            print(f"    {labels[name]:44s} {w[name]:7.2f} s  {rate(rows, w[name])}  {w['psql'] / w[name]:8.3f}{extra}")
        print(f"    {'COPY + the 2 lookup indexes':44s} {w['copy'] + idx:7.2f} s  {rate(rows, w['copy'] + idx)}")
        ratio = w["psql"] / w["certq"]
        print(f"    aim: certq >= 0.5x psql \\copy: {'met' if ratio >= 0.5 else 'NOT met'} ({ratio:.3f})")
        if repeat > 1:
            for name in contenders:
                print(f"    {name} wall per round: " + ", ".join(f"{x:.2f}" for x in wall[name]) + " s")
        if not existing:
            return
        from aggregator.models import Department
        from aggregator.records.store import RecordStore

        store = await RecordStore.open(url, connect_args={"server_settings": {"search_path": f"{schema}_certq"}})
        try:
            mem = Department.MEM
            await timed([lambda n=n: store.find(mem, number=n) for n, _ in existing[:warmup]])
            find = store.find
            res = {
                "find by number, existing": await timed([lambda n=n: find(mem, number=n) for n, _ in existing]),
                "find by number, missing": await timed([lambda i=i: find(mem, number="T" + i) for i in missing]),
                "find by ID number, existing": await timed([lambda i=i: find(mem, id_number=i) for _, i in existing]),
                "find by ID number, missing": await timed([lambda i=i: find(mem, id_number=i) for i in missing]),
            }
        finally:
            await store.close()
        print_lookups(summary(res), rows)
    finally:
        for name in (schema, f"{schema}_certq", f"{schema}_rowwise", f"{schema}_before"):
            await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        await conn.close()


# --- main ------------------------------------------------------------------------------------------


def lookups_part(args: argparse.Namespace, db: Path, rows: int) -> tuple[list[tuple[str, str]], list[str]]:
    existing, missing = lookup_sample(db, args.lookups // 2, args.seed)
    print(
        f"\n(2) lookups on the {rows:,}-record store just imported: {len(existing):,} existing and {len(missing):,}"
        f" missing numbers each, one at a time, after {args.warmup:,} warm-up lookups (in a child process)"
    )
    sample = OUT / "lookup-sample.json"
    sample.write_text(json.dumps({"existing": existing, "missing": missing}))
    argv = ["--child", "lookups", str(sample), fresh_url(db), str(args.warmup), "0" if args.no_gateway else "1"]
    # With --compare-with: before, after, after, before (each the whole sample), so that a drift in the machine's
    # load during the run hurts both alike; the samples of a tree's two runs are pooled.
    order = [True, False, False, True] if args.compare_with else [False]
    pooled: dict[bool, dict[str, list[float]]] = {False: {}, True: {}}
    for is_before in order:
        out = run_child(argv, code=args.compare_with if is_before else None)[0]
        for label, samples in out["samples"].items():
            pooled[is_before].setdefault(label, []).extend(samples)
    before = summary(pooled[True]) if args.compare_with else None
    print_lookups(summary(pooled[False]), rows, before)
    if before:
        print(f"    (before: the code in {args.compare_with}; runs in the order before, after, after, before, pooled)")
    return existing, missing


def fresh_url(db: Path) -> str:
    return f"sqlite+aiosqlite:///{db}"


def main(args: argparse.Namespace) -> None:
    import aiosqlite
    import sqlalchemy

    OUT.mkdir(parents=True, exist_ok=True)
    shell_version = subprocess.run([SQLITE3, "--version"], capture_output=True, text=True, check=True).stdout.split()[0]
    print(f"certq records benchmark  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()},"
        f" SQLite {sqlite3.sqlite_version} (Python module) / {shell_version} (sqlite3 shell),"
        f" SQLAlchemy {sqlalchemy.__version__}, aiosqlite {aiosqlite.__version__}"
    )
    csv_path = OUT / f"mem-{args.rows}-seed{args.seed}.csv"
    started = time.perf_counter()
    facts = generate_csv(csv_path, args.rows, args.seed)
    print(
        f"setup: {csv_path.relative_to(ROOT)} {facts['bytes'] / 1e6:.0f} MB, {facts['rows']:,} rows,"
        f" {facts['holders']:,}"
        f" holders ({facts['multi_card_holders']:,} with 2-3 cards), {facts['other_date_spellings']:,} dates spelled"
        f" 2024/1/2 or 20240102, {facts['lower_case_x']:,} lower-case x;"
        f" generated in {time.perf_counter() - started:.1f} s"
    )
    rows = facts["rows"]
    existing: list[tuple[str, str]] = []
    missing: list[str] = []
    if not args.only_postgres:
        part = time.perf_counter()
        db = bench_import_sqlite(csv_path, rows, args.repeat, args.compare_with)["db"]
        print(f"    (part 1 took {time.perf_counter() - part:.0f} s)")
        part = time.perf_counter()
        existing, missing = lookups_part(args, db, rows)
        print(f"    (part 2 took {time.perf_counter() - part:.0f} s)")
    if args.postgres or args.only_postgres:
        part = time.perf_counter()
        url = args.database_url or pg_url_from_env()
        asyncio.run(
            bench_postgres(
                url, csv_path, rows, existing, missing, args.warmup, repeat=args.repeat, before=args.compare_with
            )
        )
        print(f"    (part 3 took {time.perf_counter() - part:.0f} s)")
    if not args.keep:
        for p in [*OUT.glob("*.sqlite3*"), OUT / "lookup-sample.json", csv_path]:
            p.unlink(missing_ok=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="data rows in the generated CSV (default 1,000,000)")
    p.add_argument("--seed", type=int, default=20261201, help="seed of the generated file and the lookup sample")
    p.add_argument("--repeat", type=int, default=3, help="(1) interleaved import rounds, medians reported (default 3)")
    p.add_argument(
        "--compare-with",
        type=Path,
        default=None,
        metavar="DIR",
        help="also import (1) and look up (2) with the certq code in DIR (a copy of an older tree holding"
        " aggregator/, adapters/ and config/), in the same run: before/after figures",
    )
    p.add_argument("--lookups", type=int, default=10_000, help="(2) lookups per figure: half existing, half missing")
    p.add_argument("--warmup", type=int, default=1_000, help="(2) warm-up lookups before measuring")
    p.add_argument("--no-gateway", action="store_true", help="(2) skip the whole-gateway lookups")
    p.add_argument(
        "--postgres",
        action="store_true",
        help="(3) OPTIONAL: also import into PostgreSQL (a fresh schema, dropped afterwards)",
    )
    p.add_argument(
        "--only-postgres", action="store_true", help="(3) only: the PostgreSQL import, no lookups (skips (1) and (2))"
    )
    p.add_argument("--database-url", default=None, help="(3) PostgreSQL URL (default: CERTQ_BENCH_DATABASE_URL, ...)")
    p.add_argument("--keep", action="store_true", help="keep the CSV and the database files in bench/out/")
    return p.parse_args()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        if sys.argv[2] == "bare":
            child_bare()
        elif sys.argv[2] == "import":
            asyncio.run(child_import(sys.argv[3], sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else None))
        elif sys.argv[2] == "lookups":
            asyncio.run(child_lookups(sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6] == "1"))
    else:
        main(parse_args())
