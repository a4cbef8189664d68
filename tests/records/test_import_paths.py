"""The fast paths of an import give what the slow ones give (issue 13).

- Columnar validation (records/columnar.py): a plain UTF-8 CSV read in blocks by polars and checked column by
  column, the flagged rows through the row-by-row rules, the rest of a file handed to the row-by-row reader at
  the first block that is not plain (a quote, a control character, a misaligned row, bad bytes): the same
  records, problems, rejected rows and refusal as one row per chunk, with blocks of 4 KiB and of 1 MiB.

- Validation: a chunk of 5,000 rows is validated column by column (C-level maps for the common case, the
  row-by-row rules only for the rows a fast check flags); the same file read one row per chunk (every row
  through the row-by-row rules alone) and seven rows per chunk must give the same records, problems, rejected
  rows and file-level refusal, on fuzzed hostile files.
- Storing: PostgreSQL's rows go through one streamed `COPY` (the next chunk validated meanwhile; into an empty
  table with its lookup indexes set aside until the end), SQLite's through `INSERT`s: the same
  file gives the same report and the same stored records on both, including a file that breaks part-way
  through the COPY.
"""

from __future__ import annotations

import random
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.models import Department
from aggregator.records import columnar
from aggregator.records.importer import load_departments, open_upload
from aggregator.records.limits import ImportLimits
from aggregator.records.report import UnreadableFile
from aggregator.records.schema import records
from tests.helpers import make_id
from tests.records_support import HEADER, open_store

_DEPTS = load_departments()
_REGIONS = ["110105", "440104", "310101", "510104", "110101"]
_ITEMS = [("电工作业", "低压电工作业"), ("焊接与热切割作业", "熔化焊接与热切割作业"), ("高处作业", "登高架设作业")]


def _good_row(rng: random.Random) -> list[str]:
    birth = f"{rng.randint(1960, 2004)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    id_number = make_id(rng.choice(_REGIONS), birth, f"{rng.randint(0, 999):03d}")
    category, item = rng.choice(_ITEMS)
    start = rng.randint(2015, 2025)
    return [
        "T" + id_number,
        rng.choice(["张三", "李四", "王小五", "赵六"]),
        id_number,
        category,
        item,
        rng.choice(["北京市应急管理局", "广东省应急管理厅"]),
        rng.choice([f"{start - 1}-03-04", f"{start - 1}/3/4", f"{start - 1}0304", ""]),
        f"{start}-01-02",
        rng.choice([f"{start + 6}-01-02", f"{start + 6}/1/2", ""]),
        rng.choice(["有效", "过期", "吊销", "暂扣", ""]),
    ]


# Ways a row goes wrong in real uploads (each keeps the row's line count unless it says otherwise).
def _mutate(row: list[str], how: int, rng: random.Random) -> list[str] | str:
    row = list(row)
    match how:
        case 0:  # a wrong check character
            row[2] = row[2][:17] + ("0" if row[2][17] != "0" else "1")
        case 1:  # a lower-case x, an ID with spaces, a 15-digit ID
            row[2] = rng.choice([row[2].lower(), " " + row[2] + " ", row[2][:6] + row[2][8:17]])
        case 2:  # an impossible or unreadable date
            row[rng.choice([6, 7, 8])] = rng.choice(["2023-02-30", "明年", "2023/13/1", "0000-00-00"])
        case 3:  # an empty name or number
            row[rng.choice([0, 1])] = ""
        case 4:  # a control character or an undecodable byte (written as raw bytes below)
            row[rng.choice([1, 3, 5])] += rng.choice(["\x07", "\x00", "\udcff"])
        case 5:  # valid_until before valid_from
            row[8] = "2001-01-01"
        case 6:  # the number's ID part contradicts the ID column; a foreign number; a garbled number
            row[0] = rng.choice(["T" + make_id("110105", "19900307", "555"), "京A123456789012", "T12", "???"])
        case 7:  # an unknown status or gender-like garbage
            row[9] = rng.choice(["作废了", "ok", "有 效"])
        case 8:  # too many / too few cells
            return rng.choice([row + ["extra"], row[:4], row + ["", ""]])
        case 9:  # a quoted cell spanning lines, or quotes inside
            row[5] = rng.choice(['"北京市\n应急管理局"', '"北京""市"', '"a,b"'])
            return ",".join(row)
        case 10:  # an overlong cell
            row[1] = "名" * 600
        case 11:  # a blank row
            return ",,,,"
        case 12:  # a blank row as wide as the header, an empty line, a row of spaces
            return rng.choice(["," * (len(row) - 1), "", " " + "," * (len(row) - 1)])
    return row


# The mutations that keep a file plain (no quotes, controls, bad bytes, odd widths or overlong lines): the
# columnar lane keeps reading such a file to its end, flagging rows for the row-by-row rules.
_PLAIN_MUTATIONS = (0, 1, 2, 3, 5, 6, 7, 12)


def _hostile_csv(
    path: Path, seed: int, rows: int, bad_share: float, mutations: tuple[int, ...] = tuple(range(12))
) -> Path:
    rng = random.Random(seed)
    lines = [",".join(HEADER)]
    taken: set[str] = set()
    lead = 0  # clean rows first, past the 64 KiB on which the encoding is detected (bad bytes come after)
    while rows:
        row: list[str] | str = _good_row(rng)
        while row[0] in taken:  # no accidental duplicates: a clean file must import whole
            row = _good_row(rng)
        taken.add(row[0])
        if lead < 65_536:
            lead += len(",".join(row).encode()) + 1
            lines.append(",".join(row))
            continue
        rows -= 1
        if rng.random() < bad_share:
            row = _mutate(row, rng.choice(mutations), rng)  # type: ignore[arg-type]
        lines.append(row if isinstance(row, str) else ",".join(row))
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
    return path


def _read(
    path: Path, size: int, *, columnar_min_bytes: int = 1 << 40
) -> tuple[list[Any], list[Any], list[Any], int, list[Any] | None]:
    """Everything the validation says about a file, read `size` rows per chunk (by the columnar lane where the
    file has `columnar_min_bytes`)."""
    upload = open_upload(path, _DEPTS[Department.MEM], ImportLimits(columnar_min_bytes=columnar_min_bytes))
    out_records: list[Any] = []
    problems: list[Any] = []
    rejected: list[Any] = []
    rows = 0
    refused = None
    try:
        for chunk in upload.chunks(size):
            out_records += chunk.all_records()
            problems += chunk.problems
            rejected += [(line, list(cells), upload.rejected_cells(cells)) for line, cells in chunk.rejected]
            rows += chunk.rows
    except UnreadableFile as e:
        refused = [p.model_dump() for p in e.problems]
    finally:
        upload.close()
    return out_records, sorted(problems, key=lambda p: p[0]), rejected, rows, refused


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), rows=st.integers(1, 60), bad_share=st.sampled_from([0.0, 0.05, 0.3, 1.0]))
def test_chunked_validation_says_what_row_by_row_validation_says(tmp_path_factory, seed, rows, bad_share) -> None:
    path = _hostile_csv(tmp_path_factory.mktemp("fuzz") / "mem.csv", seed, rows, bad_share)
    row_by_row = _read(path, 1)
    assert _read(path, 5000) == row_by_row
    assert _read(path, 7) == row_by_row


class _LaneSpy:
    """Counts the blocks the columnar lane validated and the hand-overs to the row-by-row reader."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, block_bytes: int) -> None:
        self.blocks = 0
        self.handed_over = 0
        validate, chunks = columnar.ColumnarLane._validate, columnar.ColumnarLane.chunks
        spy = self

        def counted_validate(lane: Any, *args: Any) -> Any:
            spy.blocks += 1
            return validate(lane, *args)

        def counted_chunks(lane: Any, *args: Any) -> Any:
            resume = yield from chunks(lane, *args)
            spy.handed_over += resume is not None
            return resume

        monkeypatch.setattr(columnar, "BLOCK_BYTES", block_bytes)
        monkeypatch.setattr(columnar.ColumnarLane, "_validate", counted_validate)
        monkeypatch.setattr(columnar.ColumnarLane, "chunks", counted_chunks)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32),
    rows=st.integers(1, 400),
    bad_share=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
    plain=st.booleans(),
    block_bytes=st.sampled_from([4096, 1 << 20]),
)
def test_columnar_validation_says_what_row_by_row_validation_says(
    tmp_path_factory, monkeypatch, seed, rows, bad_share, plain, block_bytes
) -> None:
    path = _hostile_csv(
        tmp_path_factory.mktemp("fuzz") / "mem.csv", seed, rows, bad_share,
        _PLAIN_MUTATIONS if plain else tuple(range(12)),
    )
    row_by_row = _read(path, 1)
    with monkeypatch.context() as patch:
        spy = _LaneSpy(patch, block_bytes)
        assert _read(path, 5000, columnar_min_bytes=0) == row_by_row
    if plain:  # the lane read the whole file
        assert spy.blocks >= 1 and spy.handed_over == 0
    elif block_bytes == 4096:  # the first 64 KiB are always clean: the lane read some blocks of them
        assert spy.blocks >= 1


def test_the_columnar_lane_reads_a_plain_file_to_its_end_and_hands_the_rest_of_a_quoted_one_over(
    tmp_path, monkeypatch
) -> None:
    """Not vacuous: a plain file with bad rows stays in the lane (its rows flagged, the same problems); a quote
    half-way hands the rest of the file over; below `columnar_min_bytes` the lane is not used at all."""
    plain = _hostile_csv(tmp_path / "plain.csv", 11, 3_000, 0.1, _PLAIN_MUTATIONS)
    spy = _LaneSpy(monkeypatch, 16_384)
    said = _read(plain, 5000, columnar_min_bytes=0)
    assert said == _read(plain, 1)
    assert spy.blocks > 10 and spy.handed_over == 0
    reasons = " ".join(p[3] for p in said[1])
    for reason in ("ID check character", "name is empty", "is before valid_from", "no such date", "unknown status",
                   "differs from the ID column", "certificate number is empty"):
        assert reason in reasons, reason

    quoted = tmp_path / "quoted.csv"
    text = plain.read_bytes()
    half = text.index(b"\n", len(text) // 2) + 1
    quoted.write_bytes(text[:half] + b'T1,"\xe5\xbc\xa0,\n\xe4\xb8\x89",1,2\n' + text[half:])
    spy.blocks = spy.handed_over = 0
    assert _read(quoted, 5000, columnar_min_bytes=0) == _read(quoted, 1)
    assert spy.blocks >= 2 and spy.handed_over == 1

    spy.blocks = 0
    _read(plain, 5000, columnar_min_bytes=len(text) + 1)
    assert spy.blocks == 0


def test_the_fuzzed_files_do_hit_every_kind_of_problem(tmp_path) -> None:
    """The generator above is not vacuous: its files draw problems of many kinds, and clean rows pass."""
    _records, problems, rejected, rows, refused = _read(_hostile_csv(tmp_path / "m.csv", 7, 600, 0.3), 5000)
    reasons = " ".join(p[3] for p in problems)
    for said in ("ID check character", "name is empty", "control characters", "is before valid_from", "misaligned",
                 "longer than 500", "differs from the ID column", "are not valid utf-8", "no such date", "not a date",
                 "unknown status", "certificate number is empty", "is issued by mohurd"):
        assert said in reasons, said
    assert refused is None and rows > 1000 and 50 < len(rejected) < 200


# --- SQLite and PostgreSQL store the same -------------------------------------------------------------------


def _normal(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else bool(value) if isinstance(value, bool) else value


async def _imported(store: Any, path: Path, *, partial: bool) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    report = await store.import_file(path, department="mem", quarter="2026Q1", partial=partial)
    said = report.model_dump(mode="json", exclude={"id", "uploaded_at"})
    columns = [c for c in records.c if c.name not in ("id", "batch_id")]
    async with store.engine.connect() as conn:
        rows = (await conn.execute(sa.select(*columns).order_by(records.c.row_number, records.c.number))).all()
    return said, [tuple(_normal(v) for v in row) for row in rows]


@pytest.mark.postgres
@pytest.mark.parametrize("lane", ["row by row", "columnar"])
async def test_sqlite_inserts_and_postgresql_copy_store_the_same(tmp_path, request, monkeypatch, lane) -> None:
    if lane == "columnar":  # every file through the columnar lane, in 64 KiB blocks
        monkeypatch.setenv("CERTQ_IMPORT_COLUMNAR_MIN_BYTES", "0")
        monkeypatch.setattr(columnar, "BLOCK_BYTES", 65_536)
    clean = _hostile_csv(tmp_path / "clean.csv", 1, 12_000, 0.0)  # three chunks through one COPY
    dirty = _hostile_csv(tmp_path / "dirty.csv", 2, 11_000, 0.02)
    # ~6,000 good rows (past the first chunk, so the COPY has begun), then an unclosed quote swallowing more
    # than the csv module's field limit: the file is refused part-way
    broken = tmp_path / "broken.csv"
    text = clean.read_bytes()
    broken.write_bytes(text[: text.index(b"\n", len(text) // 2) + 1] + b'"' + (b"y" * 100 + b"\n") * 1400)
    seen: dict[str, list[Any]] = {}
    for kind in ("sqlite", "postgres"):
        (tmp_path / kind).mkdir()
        async with open_store(kind, tmp_path / kind, request) as store:
            seen[kind] = [
                await _imported(store, broken, partial=True),  # refused: nothing stored, the store still usable
                await _imported(store, dirty, partial=False),  # rejected whole
                await _imported(store, dirty, partial=True),  # into the empty table: the bulk load
                await _imported(store, clean, partial=False),  # into a table that has rows
            ]
            if kind == "postgres":  # what the bulk load set aside is back, the foreign key kept
                async with store.engine.connect() as conn:
                    names = (await conn.exec_driver_sql(
                        "SELECT conname FROM pg_constraint WHERE conrelid = 'records'::regclass AND contype = 'f'"
                        " UNION ALL SELECT indexname FROM pg_indexes WHERE tablename = 'records'"
                        " AND schemaname = current_schema() ORDER BY 1"
                    )).scalars().all()
                assert names == ["ix_records_current_holder", "ix_records_current_number", "records_batch_id_fkey",
                                 "records_pkey"]
    sqlite, postgres = seen["sqlite"], seen["postgres"]
    assert [r["status"] for r, _ in sqlite] == ["rejected", "rejected", "partial", "imported"]
    assert "unclosed quote" in sqlite[0][0]["problems"][0]["reason"]
    assert sqlite[2][0]["rows_rejected"] > 100 and len(sqlite[3][1]) > 20_000
    for (s_report, s_rows), (p_report, p_rows) in zip(sqlite, postgres, strict=True):
        assert p_report == s_report
        assert p_rows == s_rows


@pytest.mark.postgres
async def test_two_departments_importing_into_an_empty_postgresql_store_at_once_both_land(tmp_path, request) -> None:
    """The first import into an empty table sets the lookup indexes aside: a second department's import at the
    same moment waits for it (no deadlock between the two) and both are stored, indexes in place."""
    import asyncio

    mem = _hostile_csv(tmp_path / "mem.csv", 3, 3_000, 0.0)
    samr = tmp_path / "samr.csv"  # SAMR numbers are the holder's ID number itself
    samr.write_text(
        "证书编号,姓名,身份证号,作业类别,操作项目,发证机关,初领日期,有效期起,有效期至,证书状态\n"
        + "".join(f"{line.split(',')[2]},{','.join(line.split(',')[1:])}\n" for line in
                  mem.read_text(encoding="utf-8").splitlines()[1:2_001]),
        encoding="utf-8",
    )
    async with open_store("postgres", tmp_path, request) as store:
        reports = await asyncio.gather(
            store.import_file(mem, department="mem", quarter="2026Q1"),
            store.import_file(samr, department="samr", quarter="2026Q1"),
        )
        mem_rows = len(mem.read_text(encoding="utf-8").splitlines()) - 1
        assert [(r.status.value, r.rows_imported) for r in reports] == [("imported", mem_rows), ("imported", 2_000)]
        async with store.engine.connect() as conn:
            indexes = (await conn.exec_driver_sql(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'records' AND schemaname = current_schema()"
                " ORDER BY 1"
            )).scalars().all()
        assert indexes == ["ix_records_current_holder", "ix_records_current_number", "records_pkey"]
