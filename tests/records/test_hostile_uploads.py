"""Hostile uploads: workbooks that ask for 512 GiB, zip bombs, huge cells, 16,384 columns, corrupt files.

Every file here is made by the test, by hand (zipfile and a few lines of SpreadsheetML), small on disk. Each
must be a rejected upload with a clear reason, through `RecordStore.import_file`, the web upload endpoint and
`certq import` (exit 65), with nothing imported, a small report, no temporary file left behind, the
importing process's memory bounded, and the service still answering.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import IO, Any

import pytest
from click.testing import CliRunner

from aggregator.cli import main
from aggregator.models import Department
from aggregator.records.importer import default_department, open_upload
from aggregator.records.limits import ImportLimits
from aggregator.records.report import BatchStatus, RejectedRow, RowProblem, excerpt
from aggregator.records.workbook import SheetReader
from aggregator.web.multipart import receive_multipart, remove_stale_uploads
from tests.records_support import HEADER, ID_ZHANG, mem_row, write_csv, write_xlsx
from tests.web_support import MEM_NUMBER, WebEnv, build_env, quiet_config, web_client

MAX_REPORT_BYTES = 20_000  # a hostile file's whole report, as JSON

# --- Hostile workbooks, by hand -------------------------------------------------------------------------

NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PARTS = {
    "[Content_Types].xml": (
        '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        '<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
        "</Types>"
    ),
    "_rels/.rels": (
        '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{_REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
    ),
    "xl/workbook.xml": (
        f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{NS}" xmlns:r="{_REL}">'
        '<sheets><sheet name="数据" sheetId="1" r:id="rId1"/></sheets></workbook>'
    ),
    "xl/_rels/workbook.xml.rels": (
        '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{_REL}/worksheet" Target="worksheets/sheet1.xml"/>'
        f'<Relationship Id="rId2" Type="{_REL}/sharedStrings" Target="sharedStrings.xml"/></Relationships>'
    ),
}
SHEET_HEADER = HEADER[:3]  # 证书编号, 姓名, 身份证号


def column(n: int) -> str:
    letters = ""
    while n:
        n, r = divmod(n - 1, 26)
        letters = chr(65 + r) + letters
    return letters


def text_cell(ref: str, text: str) -> str:
    return f'<c r="{ref}" t="inlineStr"><is><t>{text}</t></is></c>'


def header_row() -> str:
    return '<row r="1">' + "".join(text_cell(f"{column(i + 1)}1", h) for i, h in enumerate(SHEET_HEADER)) + "</row>"


def sheet_xml(rows: str, dimension: str | None = None) -> str:
    dim = f'<dimension ref="{dimension}"/>' if dimension else ""
    return f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{NS}">{dim}<sheetData>{rows}</sheetData></worksheet>'


def shared_strings(*texts: str) -> str:
    items = "".join(f"<si><t>{t}</t></si>" for t in texts)
    return f'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="{NS}" count="{len(texts)}" uniqueCount="{len(texts)}">{items}</sst>'


def write_workbook(
    path: Path,
    sheet: str | Callable[[IO[bytes]], None],
    strings: str | None = None,
    *,
    stored_strings: bool = False,
) -> Path:
    """A one-sheet XLSX: `sheet` is the worksheet XML, or a function streaming it (for a large one)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, text in _PARTS.items():
            z.writestr(name, text)
        kind = zipfile.ZIP_STORED if stored_strings else zipfile.ZIP_DEFLATED
        z.writestr("xl/sharedStrings.xml", strings or shared_strings(), compress_type=kind)
        if callable(sheet):
            with z.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as out:
                sheet(out)
        else:
            z.writestr("xl/worksheets/sheet1.xml", sheet)
    return path


def corner_cell(path: Path, *, dimension: bool) -> Path:
    """A header and one cell at XFD1048576: calamine makes the sheet dense, 2**34 cells, 512 GiB."""
    rows = header_row() + '<row r="1048576">' + text_cell("XFD1048576", "x") + "</row>"
    return write_workbook(path, sheet_xml(rows, "A1:XFD1048576" if dimension else None))


def far_cell(path: Path, row: int, col: int) -> Path:
    """A header and one cell far below (no declared dimension): harmless under the default limits."""
    ref = f"{column(col)}{row}"
    return write_workbook(path, sheet_xml(header_row() + f'<row r="{row}">' + text_cell(ref, "x") + "</row>"))


def wide(path: Path, *, dimension: bool, columns: int = 16_384) -> Path:
    cells = "".join(text_cell(f"{column(i + 1)}1", SHEET_HEADER[i] if i < 3 else f"列{i + 1}") for i in range(columns))
    return write_workbook(path, sheet_xml(f'<row r="1">{cells}</row>', f"A1:{column(columns)}1" if dimension else None))


def huge_cell(path: Path, chars: int) -> Path:
    """A data row whose name (a shared string, stored uncompressed, so no ratio check catches it) is `chars` long."""
    text = os.urandom(chars // 2 + 1).hex()[:chars]
    row = (
        '<row r="2">' + text_cell("A2", "T" + ID_ZHANG) + '<c r="B2" t="s"><v>0</v></c>' + text_cell("C2", ID_ZHANG) + "</row>"
    )
    return write_workbook(path, sheet_xml(header_row() + row, "A1:C2"), shared_strings(text), stored_strings=True)


def zip_bomb(path: Path, inflated: int = 200 << 20) -> Path:
    """A worksheet padded with `inflated` bytes of spaces: well-formed XML, ~230:1 at compression level 1."""
    head = sheet_xml(header_row()).encode()
    cut = head.index(b"</sheetData>")
    block = b" " * (1 << 20)

    def fill(out: IO[bytes]) -> None:
        out.write(head[:cut])
        for _ in range(inflated // len(block)):
            out.write(block)
        out.write(head[cut:])

    return write_workbook(path, fill)


def corrupt_zip(path: Path) -> Path:
    data = bytearray(wide(path, dimension=True, columns=3).read_bytes())
    data[200:400] = os.urandom(200)
    path.write_bytes(bytes(data))
    return path


def garbage_xls(path: Path) -> Path:
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + os.urandom(4096))  # the OLE signature, then noise
    return path


# name -> (file name, builder, what the reason says)
HOSTILE: dict[str, tuple[str, Callable[[Path], Path], str]] = {
    "corner cell, declared": ("corner.xlsx", lambda p: corner_cell(p, dimension=True), "declares the range A1:XFD1048576: 16,384 columns"),
    "corner cell, undeclared": ("corner-nodim.xlsx", lambda p: corner_cell(p, dimension=False), "within the memory limit"),
    "zip bomb": ("bomb.xlsx", zip_bomb, "a zip bomb?"),
    "huge cell": ("cell.xlsx", lambda p: huge_cell(p, 20 << 20), "the cell holds 20,971,520 characters"),
    "16,384 columns, declared": ("wide.xlsx", lambda p: wide(p, dimension=True), "16,384 columns, more than the limit of 256"),
    "16,384 columns, undeclared": ("wide-nodim.xlsx", lambda p: wide(p, dimension=False), "line 1 has 16,384 columns"),
    "corrupt zip": ("corrupt.xlsx", corrupt_zip, "cannot read the workbook"),
    "garbage xls": ("garbage.xls", garbage_xls, "cannot read the workbook"),
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    return {name: build(folder / file) for name, (file, build, _) in HOSTILE.items()}


def reason_of(report: Any) -> str:
    return " | ".join(p.reason for p in report.problems)


def assert_refused(report: Any, says: str) -> None:
    assert report.status == BatchStatus.REJECTED and report.rows_imported == 0, report
    assert says in reason_of(report), reason_of(report)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in report.problems[0].reason)  # Chinese first
    assert len(report.model_dump_json()) < MAX_REPORT_BYTES


# --- Through the store ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_a_hostile_workbook_is_a_rejected_batch_with_a_clear_reason(sqlite_store, hostile, name) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    report = await sqlite_store.import_file(hostile[name], department="mem", quarter="2026Q1")

    assert_refused(report, HOSTILE[name][2])
    assert (await sqlite_store.get_batch(report.id)) == report  # recorded, its report as returned
    assert (await sqlite_store.find("mem", number="T" + ID_ZHANG)).certificates == []
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 150, f"the importing process grew by {grown_mb:.0f} MB"


async def test_a_huge_cell_is_a_problem_of_its_row_naming_the_column_with_an_excerpt(sqlite_store, hostile) -> None:
    report = await sqlite_store.import_file(hostile["huge cell"], department="mem", quarter="2026Q1")

    [problem] = report.problems
    assert (problem.line, problem.column) == (2, "姓名")
    assert problem.value.endswith("…(共 20,971,520 字 / 20,971,520 characters)") and len(problem.value) < 300
    [row] = report.rejected_rows
    assert row.line == 2 and row.cells["姓名"] == problem.value and row.cells["证书编号"] == "T" + ID_ZHANG


async def test_the_corner_cell_file_on_either_database(store, hostile) -> None:
    report = await store.import_file(hostile["corner cell, undeclared"], department="mem", quarter="2026Q1")

    assert_refused(report, "无法安全读取工作簿：超出内存限制")


async def test_a_native_allocation_failure_past_a_lowered_memory_limit_is_a_refused_file(
    sqlite_store, tmp_path, monkeypatch
) -> None:
    # L150000 makes calamine allocate a 150,000 x 12 grid (~58 MB): fine by default, past a 32 MiB limit.
    path = far_cell(tmp_path / "far.xlsx", 150_000, 12)
    monkeypatch.setenv("CERTQ_IMPORT_MEMORY_BYTES", "32M")

    report = await sqlite_store.import_file(path, department="mem", quarter="2026Q1")

    assert_refused(report, "the workbook could not be read within the memory limit of 32 MiB")
    monkeypatch.delenv("CERTQ_IMPORT_MEMORY_BYTES")
    report = await sqlite_store.import_file(path, department="mem", quarter="2026Q2")
    assert report.status == BatchStatus.REJECTED and "memory" not in reason_of(report)  # read; its rows are bad


async def test_a_reader_that_says_nothing_in_time_is_killed_and_the_file_refused(sqlite_store, tmp_path, monkeypatch) -> None:
    path = write_xlsx(tmp_path / "mem.xlsx", [mem_row()])
    monkeypatch.setenv("CERTQ_IMPORT_TIMEOUT_S", "0.001")

    report = await sqlite_store.import_file(path, department="mem", quarter="2026Q1")

    assert_refused(report, "within the time limit")


async def test_limits_on_rows_and_the_zip_directory_come_from_the_environment(sqlite_store, tmp_path, monkeypatch) -> None:
    rows = [mem_row(), mem_row(number="T" + ID_ZHANG[:-1] + "0")]
    xlsx = write_xlsx(tmp_path / "mem.xlsx", rows)
    csv_path = write_csv(tmp_path / "mem.csv", rows)
    monkeypatch.setenv("CERTQ_IMPORT_MAX_ROWS", "1")
    for path in (xlsx, csv_path):
        report = await sqlite_store.import_file(path, department="mem", quarter="2026Q1")
        assert_refused(report, "more than 1 data rows; nothing from line 3 on was read")
    monkeypatch.delenv("CERTQ_IMPORT_MAX_ROWS")
    monkeypatch.setenv("CERTQ_IMPORT_MAX_ZIP_ENTRIES", "8")
    monkeypatch.setenv("CERTQ_IMPORT_MAX_TOTAL_BYTES", "1M")
    report = await sqlite_store.import_file(xlsx, department="mem", quarter="2026Q2")
    assert_refused(report, "files, more than the limit of 8")  # openpyxl writes 9 or more
    monkeypatch.setenv("CERTQ_IMPORT_MAX_ZIP_ENTRIES", "100")
    monkeypatch.setenv("CERTQ_IMPORT_MAX_RATIO", "10000")  # 200,000 empty rows compress ~200:1
    big = write_workbook(tmp_path / "big.xlsx", sheet_xml(header_row() + "<row/>" * 200_000), stored_strings=True)
    report = await sqlite_store.import_file(big, department="mem", quarter="2026Q2")
    assert_refused(report, "bytes in all, more than the limit of 1,048,576")


def test_a_malformed_limit_names_the_variable() -> None:
    from aggregator.config import ConfigError

    with pytest.raises(ConfigError, match="CERTQ_IMPORT_MAX_ROWS"):
        ImportLimits.from_env({"CERTQ_IMPORT_MAX_ROWS": "many"})
    with pytest.raises(ConfigError, match="CERTQ_IMPORT_MAX_COLUMNS"):
        ImportLimits.from_env({"CERTQ_IMPORT_MAX_COLUMNS": "1"})
    limits = ImportLimits.from_env({"CERTQ_IMPORT_MEMORY_BYTES": "2G", "CERTQ_IMPORT_MAX_RATIO": "50"})
    assert (limits.memory_bytes, limits.max_ratio, limits.max_rows) == (2 << 30, 50.0, 2_000_000)


# --- CSV: the same limits, in process -------------------------------------------------------------------


async def test_csv_cells_columns_and_fields_have_limits_with_clear_reasons(sqlite_store, tmp_path) -> None:
    long_name = "张" * 40_000  # over the cell limit, under the csv module's 131,072
    path = write_csv(tmp_path / "long.csv", [mem_row(), mem_row(name=long_name)])
    report = await sqlite_store.import_file(path, department="mem", quarter="2026Q1")
    assert_refused(report, "the cell holds 40,000 characters, more than the limit of 32,767")
    assert [(p.line, p.column) for p in report.problems] == [(3, "姓名")]

    path = tmp_path / "wide.csv"
    path.write_text(",".join(HEADER) + "\n" + ",".join(mem_row() + ["x"] * 300) + "\n", encoding="utf-8")
    report = await sqlite_store.import_file(path, department="mem", quarter="2026Q1")
    assert_refused(report, "line 2 has 310 columns, more than the limit of 256")

    path = tmp_path / "quote.csv"  # an unclosed quote swallows the rest of the file into one field
    path.write_text(",".join(HEADER) + "\n" + '"' + "x" * 200_000 + "\n", encoding="utf-8")
    report = await sqlite_store.import_file(path, department="mem", quarter="2026Q1")
    assert_refused(report, "a field from line 2 on is longer than 131,072 characters, an unclosed quote?")

    path = tmp_path / "commas.csv"  # one line of commas would be a list of millions of cells
    path.write_text(",".join(HEADER) + "\n" + "," * 9_000_000 + "\n", encoding="utf-8")
    report = await sqlite_store.import_file(path, department="mem", quarter="2026Q1")
    assert_refused(report, "more than any row may be")


# --- Reports keep excerpts --------------------------------------------------------------------------------


def test_a_report_keeps_excerpts_of_long_values_in_one_place() -> None:
    value = "x" * 1_000_000
    problem = RowProblem(line=2, column="姓名", value=value, reason=f"不是日期：{value} (not a date: {value})")
    assert problem.value == "x" * 200 + "…(共 1,000,000 字 / 1,000,000 characters)"
    assert problem.reason == f"不是日期：{problem.value} (not a date: {problem.value})"
    assert RowProblem.model_validate(problem.model_dump()) == problem  # stored and read back: unchanged
    row = RejectedRow(line=2, cells={f"列{i}": value for i in range(300)})
    assert len(json.dumps(row.cells, ensure_ascii=False)) < 3000 and row.cells["…"].startswith("另有")
    assert RejectedRow.model_validate(row.model_dump()) == row
    assert excerpt("short") == "short" and excerpt("y" * 300) == "y" * 300


# --- The reader process ----------------------------------------------------------------------------------


def test_cells_keep_their_types_through_the_pipe(tmp_path) -> None:
    from python_calamine import CalamineWorkbook

    values = ["文本", 42, 1.5, 1.1010519900307124e17, 1511011001300012, 0.1 + 0.2, True, date(2024, 1, 2),
              datetime(2024, 1, 2, 9, 30, 15, 250000), clock(9, 30), timedelta(days=2, hours=3)]
    path = write_xlsx(tmp_path / "types.xlsx", [values], [f"c{i}" for i in range(len(values))])
    reader = SheetReader(path, "xlsx", ImportLimits())
    try:
        assert reader.start()["height"] == 2
        [(first, rows, long)] = list(reader.batches())
    finally:
        reader.close()
    assert first == 1 and long == []
    direct = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()  # what the importer used to see
    assert rows == direct and [type(v) for v in rows[1]] == [type(v) for v in direct[1]]
    assert {str, float, bool, date, datetime, clock, timedelta} <= {type(v) for v in rows[1]}


def test_the_reader_is_killed_and_reaped_when_the_importer_stops_early(tmp_path) -> None:
    path = write_xlsx(tmp_path / "mem.xlsx", [mem_row()] * 2500)  # more rows than the pipe holds
    upload = open_upload(path, default_department(Department.MEM))
    process = upload.source._reader._proc  # type: ignore[attr-defined]
    assert process.poll() is None  # blocked on the full pipe
    upload.close()
    assert process.returncode is not None and process.poll() is not None  # killed and waited for
    upload.close()  # twice is fine


FAKE_READERS = {  # stand-ins for the reader process, each failing one way
    "garbage": ("print('not json')", "the reader sent a message that is not JSON"),
    "a signal": ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "stopped unexpectedly: SIGSEGV"),
    "MemoryError": ("raise SystemExit(70)", "within the memory limit of 3 GiB"),
    "CPU time": (
        "import resource; resource.setrlimit(resource.RLIMIT_CPU, (1, 2))\nwhile True: pass",
        "within the CPU time limit of 120 s",
    ),
}


@pytest.mark.parametrize("how", list(FAKE_READERS))
def test_every_way_the_reader_fails_is_a_refused_file(tmp_path, monkeypatch, how) -> None:
    from aggregator.records import workbook
    from aggregator.records.report import UnreadableFile

    script, says = FAKE_READERS[how]
    fake = tmp_path / "reader.py"
    fake.write_text(script)
    monkeypatch.setattr(workbook, "READER", fake)
    path = write_xlsx(tmp_path / "mem.xlsx", [mem_row()])

    with pytest.raises(UnreadableFile) as caught:
        open_upload(path, default_department(Department.MEM))
    assert says in caught.value.problems[0].reason and caught.value.problems[0].reason.startswith("无法安全读取工作簿")


def test_a_chunk_of_unusually_large_rows_ends_early(tmp_path, monkeypatch) -> None:
    from aggregator.records import importer

    monkeypatch.setattr(importer, "CHUNK_VOLUME", 2000)
    path = write_csv(tmp_path / "mem.csv", [mem_row(name="张" * 400)] * 30)
    upload = open_upload(path, default_department(Department.MEM))
    try:
        sizes = [chunk.rows for chunk in upload.chunks(5000)]
    finally:
        upload.close()
    assert sum(sizes) == 30 and max(sizes[1:]) <= 6 and sizes[0] <= 10 + 6  # the first: + rows read for the header


# --- The web upload ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, WebEnv, Path]]:
    root = tmp_path_factory.mktemp("web")
    env = build_env(root)
    spool = root / "spool"
    spool.mkdir()
    leftover = spool / "certq-upload-999999999-abc.xlsx"  # a process that crashed mid-import left it
    leftover.write_bytes(b"PK")
    mine = spool / f"certq-upload-{os.getpid()}-def.csv"  # a running process's upload in progress
    mine.write_bytes(b"x")
    with web_client(env, quiet_config(upload_dir=str(spool))) as client:
        assert not leftover.exists() and mine.exists()  # removed at start-up, the live one kept
        mine.unlink()
        yield client, env, spool


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_upload_is_a_422_problem_and_the_service_carries_on(web, hostile, name) -> None:
    client, env, spool = web
    path = hostile[name]

    r = client.post(
        "/api/v1/uploads",
        headers=env.auth("department-mem"),
        data={"quarter": "2026Q3"},
        files={"file": (path.name, path.read_bytes(), "application/octet-stream")},
    )

    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json"), r.text[:500]
    body = r.json()
    assert body["title"] == "import-rejected" and body["report"]["status"] == "rejected"
    assert HOSTILE[name][2] in json.dumps(body, ensure_ascii=False)
    assert len(r.content) < MAX_REPORT_BYTES
    assert list(spool.iterdir()) == []  # no temporary file left
    assert client.get(f"/api/v1/certificates/{MEM_NUMBER}").json()["verdict"] == "valid"  # still answering


def test_a_file_level_refusal_is_said_in_the_problem_detail(web, hostile) -> None:
    client, env, _ = web
    path = hostile["corner cell, undeclared"]
    r = client.post("/api/v1/uploads", headers=env.auth("department-mem"), data={"quarter": "2026Q4"},
                    files={"file": ("mem.xlsx", path.read_bytes())})
    body = r.json()
    assert "超出内存限制" in body["detail_zh"] and "within the memory limit" in body["detail_en"]


async def test_a_client_that_goes_away_mid_upload_leaves_no_file(tmp_path) -> None:
    from starlette.requests import ClientDisconnect, Request

    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="mem.xlsx"\r\n\r\n'
    ).encode() + b"PK" * 1000
    messages = [{"type": "http.request", "body": head, "more_body": True}, {"type": "http.disconnect"}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [
        (b"content-type", f"multipart/form-data; boundary={boundary}".encode())]}
    with pytest.raises(ClientDisconnect):
        await receive_multipart(Request(scope, receive), dest_dir=str(tmp_path), file_limit=1 << 20)
    assert list(tmp_path.iterdir()) == []


def test_stale_uploads_are_removed_and_live_ones_kept(tmp_path) -> None:
    dead = tmp_path / "certq-upload-999999999-x.csv"
    live = tmp_path / f"certq-upload-{os.getpid()}-y.csv"
    old = tmp_path / "certq-upload-zzz.csv"  # named before names carried the pid
    other = tmp_path / "notes.txt"
    for p in (dead, live, old, other):
        p.write_text("x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))

    assert remove_stale_uploads(str(tmp_path)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])


# --- certq import --------------------------------------------------------------------------------------------


def test_certq_import_of_each_hostile_file_exits_65_with_the_reason(hostile, tmp_path) -> None:
    db = f"sqlite:///{tmp_path / 'certq.sqlite3'}"
    for name, (_file, _build, says) in HOSTILE.items():
        result = CliRunner().invoke(
            main,
            ["import", str(hostile[name]), "-d", "mem", "-q", "2026Q1", "--json", "--db", db],
            env={"CERTQ_DATABASE_URL": None, "CERTQ_CONFIG_DIR": None},
        )
        assert result.exit_code == 65, (name, result.output[-2000:])
        assert says in result.stdout, (name, result.stdout[-2000:])


def test_certq_import_of_a_50_mb_cell_stays_small_in_memory(tmp_path) -> None:
    path = huge_cell(tmp_path / "cell.xlsx", 50 << 20)
    code = (
        "import atexit, sys\n"
        "def peak():\n"
        "    status = open('/proc/self/status').read()\n"
        "    print([l for l in status.splitlines() if l.startswith('VmHWM')][0], file=sys.stderr)\n"
        "atexit.register(peak)\n"
        "from aggregator.cli import main\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTQ_")}
    ran = subprocess.run(
        [sys.executable, "-c", code, "import", str(path), "-d", "mem", "-q", "2026Q1", "--db",
         f"sqlite:///{tmp_path / 'certq.sqlite3'}"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert ran.returncode == 65, ran.stderr[-2000:]
    peak_mb = int(ran.stderr.rsplit("VmHWM:", 1)[1].split()[0]) / 1024
    assert peak_mb < 250, f"certq import peaked at {peak_mb:.0f} MB"  # the 50 MB cell stayed in the reader
    assert "50,000,000" not in ran.stdout and "52,428,800" in ran.stdout

