"""`certq import` and `certq uploads list|show`, run as a department would, against a SQLite file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from rich.cells import cell_len

from aggregator.cli import main
from aggregator.records import RecordStore
from tests.records_support import ID_LI, ID_WANG, ID_ZHANG, mem_row, write_csv

BAD_CHECK = ID_WANG[:17] + ("0" if ID_WANG[17] != "0" else "1")


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'certq.sqlite3'}"


def certq(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"CERTQ_DATABASE_URL": None, "CERTQ_CONFIG_DIR": None})


def import_file(path: Path, db: str, *extra: str, quarter: str = "2026Q1") -> Result:
    return certq("import", str(path), "--department", "mem", "--quarter", quarter, "--db", db, *extra)


def batches(db: str) -> list[dict]:
    result = certq("uploads", "list", "--json", "--db", db)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def numbers_in_store(db: str, *numbers: str) -> set[str]:
    async def run() -> set[str]:
        store = await RecordStore.open(db)
        try:
            found = set()
            for n in numbers:
                found |= {c.number for c in (await store.find("mem", number=n)).certificates}
            return found
        finally:
            await store.close()

    return asyncio.run(run())


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "mem-2026Q1.csv", [mem_row(), mem_row(ID_LI, "李四")])


@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "mem-bad.csv", [mem_row(), mem_row(BAD_CHECK, "王五")])


def test_import_of_a_good_file_exits_0_and_its_records_can_be_looked_up(good_file, db) -> None:
    result = import_file(good_file, db, "--by", "北京市应急管理局")

    assert result.exit_code == 0, result.output
    assert "imported" in result.stdout
    [batch] = batches(db)
    assert (batch["status"], batch["rows_imported"], batch["uploaded_by"]) == ("imported", 2, "北京市应急管理局")
    assert numbers_in_store(db, "T" + ID_ZHANG, "T" + ID_LI) == {"T" + ID_ZHANG, "T" + ID_LI}


def test_importing_the_same_file_again_exits_0_says_already_imported_and_adds_nothing(good_file, db) -> None:
    assert import_file(good_file, db).exit_code == 0

    again = import_file(good_file, db, quarter="2026Q1")  # a newer quarter: tests/records/test_upload_freshness.py

    assert again.exit_code == 0
    assert "already imported" in again.stdout and "batch 1" in again.stdout
    assert [b["quarter"] for b in batches(db)] == ["2026Q1"]


def test_importing_the_same_file_again_with_json_names_the_existing_batch(good_file, db) -> None:
    import_file(good_file, db)

    again = import_file(good_file, db, "--json")

    assert again.exit_code == 0
    assert json.loads(again.stdout) == {"already_imported": True, "batch_id": 1}


def test_a_file_with_a_bad_row_exits_65_imports_nothing_and_prints_line_column_value_and_reason(bad_file, db) -> None:
    result = import_file(bad_file, db)

    assert result.exit_code == 65
    out = result.stdout
    assert "rejected" in out and "│ 3 " in out and "身份证号" in out and BAD_CHECK in out
    assert "身份证号校验位应为" in out  # the reason (its start: the table wraps long cells)
    assert numbers_in_store(db, "T" + ID_ZHANG) == set()
    assert [b["status"] for b in batches(db)] == ["rejected"]


def test_a_partial_import_with_rejected_rows_exits_1_and_keeps_the_good_rows(bad_file, db) -> None:
    result = import_file(bad_file, db, "--partial")

    assert result.exit_code == 1, result.output
    assert numbers_in_store(db, "T" + ID_ZHANG) == {"T" + ID_ZHANG}
    [batch] = batches(db)
    assert (batch["status"], batch["rows_imported"], batch["rows_rejected"]) == ("partial", 1, 1)


def test_import_json_prints_the_whole_report(bad_file, db) -> None:
    result = import_file(bad_file, db, "--json")

    assert result.exit_code == 65
    report = json.loads(result.stdout)
    assert report["status"] == "rejected"
    assert [(p["line"], p["column"], p["value"]) for p in report["problems"]] == [(3, "身份证号", BAD_CHECK)]


def test_an_unreadable_file_exits_65_with_its_problem(tmp_path, db) -> None:
    path = tmp_path / "mem.docx"
    path.write_bytes(b"not a table")

    result = import_file(path, db)

    assert result.exit_code == 65
    assert "unsupported file type .docx" in result.stdout.replace("\n", " ")


@pytest.mark.parametrize("quarter", ["2026Q5", "26Q1", "2026-1", ""])
def test_a_malformed_quarter_exits_2_and_records_nothing(good_file, db, quarter) -> None:
    result = import_file(good_file, db, quarter=quarter)

    assert result.exit_code == 2
    assert "2026Q1" in result.output  # says what a quarter looks like
    assert batches(db) == []


def test_a_lower_case_quarter_is_accepted(good_file, db) -> None:
    assert import_file(good_file, db, quarter="2026q3").exit_code == 0
    assert [b["quarter"] for b in batches(db)] == ["2026Q3"]


def test_an_unknown_department_exits_2(good_file, db) -> None:
    result = certq("import", str(good_file), "--department", "moe", "--quarter", "2026Q1", "--db", db)

    assert result.exit_code == 2


def test_uploads_show_prints_the_problems_and_rejected_rows_of_a_batch(bad_file, db) -> None:
    import_file(bad_file, db)

    result = certq("uploads", "show", "1", "--db", db)

    assert result.exit_code == 0
    out = result.stdout
    assert "batch 1" in out and "rejected" in out
    assert "problems (1)" in out and "身份证号" in out and BAD_CHECK in out
    assert "rejected rows" in out and "姓名=王五" in out


def test_uploads_show_json_gives_the_full_report(bad_file, db) -> None:
    import_file(bad_file, db, "--partial")

    result = certq("uploads", "show", "1", "--json", "--db", db)

    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["status"] == "partial"
    assert report["rejected_rows"][0]["line"] == 3 and report["rejected_rows"][0]["cells"]["姓名"] == "王五"


def test_uploads_show_of_a_batch_that_does_not_exist_exits_2(db) -> None:
    result = certq("uploads", "show", "999", "--db", db)

    assert result.exit_code == 2
    assert "999" in result.output


def test_uploads_list_shows_newest_first_and_filters_by_department(good_file, bad_file, tmp_path, db) -> None:
    import_file(bad_file, db)
    import_file(good_file, db)
    mohurd = write_csv(tmp_path / "mohurd.csv", [["京A012024000123", "李四", ID_LI]], ["证书编号", "姓名", "身份证号"])
    certq("import", str(mohurd), "-d", "mohurd", "-q", "2026Q1", "--db", db)

    everything = batches(db)
    mem = json.loads(certq("uploads", "list", "-d", "mem", "--json", "--db", db).stdout)

    assert [(b["id"], b["department"], b["status"]) for b in everything] == [
        (3, "mohurd", "imported"),
        (2, "mem", "imported"),
        (1, "mem", "rejected"),
    ]
    assert [b["id"] for b in mem] == [2, 1]


def test_uploads_list_on_an_empty_database_says_there_are_none(db) -> None:
    result = certq("uploads", "list", "--db", db)

    assert result.exit_code == 0 and "no uploads yet" in result.stdout


@pytest.mark.parametrize("columns", [80, 140])
def test_uploads_list_reads_at_80_columns_and_as_a_table_on_a_wide_terminal(db, good_file, tmp_path, monkeypatch,
                                                                            columns) -> None:
    from aggregator.records import cli as records_cli
    from aggregator.records.cli import console

    assert import_file(good_file, db).exit_code == 0
    assert import_file(write_csv(tmp_path / "mem-bad.csv", [mem_row(BAD_CHECK, "王五")]), db, quarter="2026Q2").exit_code
    monkeypatch.setattr(console, "_width", columns)
    with console.capture() as captured:
        records_cli.uploads_list.callback(None, 50, False, False, db)
    lines = captured.get().splitlines()

    assert all(cell_len(line.rstrip()) <= columns for line in lines)  # CJK characters take two cells
    text = "\n".join(lines)
    if columns == 80:  # two lines per upload, newest first: what and how it went, then the file
        assert "#2 mem 2026Q2  rejected" in text and "#1 mem 2026Q1  imported  2/2" in text
        assert "mem-2026Q1.csv ·" in text
    else:
        assert "mem-2026Q1.csv" in text and "rejected" in text and "编号" in text
