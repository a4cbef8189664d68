"""Reading a roster file: Chinese or English headers, UTF-8 or GB18030 CSV, XLSX through the defensive reader,
every bad row with its line, column, value and reason, duplicates, and the 100,000-member ceiling."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.records.report import UnreadableFile
from aggregator.rosters.parse import MAX_MEMBERS, RosterTooLarge, parse_members, read_roster_file
from tests.records_support import ID_LI, ID_ZHANG, write_xlsx

ZH = ["证书编号", "姓名", "身份证号", "工号", "部门/班组"]
EN = ["Certificate Number", "name", "ID_Number", "employee_id", "team"]
MEM = "T" + ID_ZHANG
MOHURD = "京A012024000123"


def _csv(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> Path:
    text = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    path.write_bytes(text.encode(encoding))
    return path


def test_chinese_headers_utf8(tmp_path: Path) -> None:
    path = _csv(tmp_path / "r.csv", ZH, [[MEM.lower(), "张 小三", ID_ZHANG, "E001", "一班"], [MOHURD, "李四", "", "", ""]])
    parsed = read_roster_file(path)
    assert parsed.problems == []
    first, second = parsed.members
    assert (first.ref, first.number, first.name, first.id_number, first.team) == ("E001", MEM, "张小三", ID_ZHANG, "一班")
    assert second.ref == "L3" and second.team is None  # no reference given: known by its line


def test_english_headers_gb18030(tmp_path: Path) -> None:
    path = _csv(tmp_path / "r.csv", EN, [[MOHURD, "李四", ID_LI, "7", "钢筋班"]], encoding="gb18030")
    parsed = read_roster_file(path)
    assert parsed.encoding == "gb18030"
    assert [(m.number, m.name, m.team) for m in parsed.members] == [(MOHURD, "李四", "钢筋班")]


def test_xlsx_through_the_defensive_reader(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "r.xlsx", [[MEM, "张小三", ID_ZHANG, "E001", "一班"], [MOHURD, "李四", None, 12, None]],
                      header=ZH)
    parsed = read_roster_file(path)
    assert parsed.file_format == "xlsx"
    assert [(m.ref, m.number) for m in parsed.members] == [("E001", MEM), ("12", MOHURD)]


def test_bad_rows_name_line_column_value_and_reason(tmp_path: Path) -> None:
    bad_id = ID_ZHANG[:-1] + ("0" if ID_ZHANG[-1] != "0" else "1")
    path = _csv(tmp_path / "r.csv", ZH, [
        [MEM, "张小三", "", "E1", ""],
        ["A=B!", "王五", "", "E2", ""],       # line 3: characters no number uses
        ["", "赵六", "", "E3", ""],           # line 4: no number
        [MOHURD, "", "", "E4", ""],           # line 5: no name
        [MOHURD, "李四", bad_id, "E5", ""],   # line 6: a wrong check character
    ])
    parsed = read_roster_file(path)
    found = {(p.line, p.column): p for p in parsed.problems}
    assert set(found) == {(3, "证书编号"), (4, "证书编号"), (5, "姓名"), (6, "身份证号")}
    assert found[(3, "证书编号")].value == "A=B!" and "字符" in found[(3, "证书编号")].reason
    assert "缺少证书编号" in found[(4, "证书编号")].reason
    assert "缺少姓名" in found[(5, "姓名")].reason
    assert found[(6, "身份证号")].value == bad_id and "校验" in found[(6, "身份证号")].reason
    assert [m.ref for m in parsed.members] == ["E1"]
    assert parsed.rows_total == 5


def test_duplicates_are_reported_with_the_first_line(tmp_path: Path) -> None:
    path = _csv(tmp_path / "r.csv", ZH, [
        [MEM, "张小三", "", "E1", ""],
        [MOHURD, "李四", "", "E1", ""],      # line 3: the same reference as line 2
        [MEM, "张小三", "", "E9", ""],       # line 4: the same number and name as line 2
        [MEM, "张大三", "", "E10", ""],      # another name on the same number: not a duplicate
    ])
    parsed = read_roster_file(path)
    assert parsed.duplicates == 2
    reasons = {p.line: p.reason for p in parsed.problems}
    assert "第 2 行" in reasons[3] and "工号" in reasons[3]
    assert "第 2 行" in reasons[4] and "证书编号和姓名" in reasons[4]
    assert [m.ref for m in parsed.members] == ["E1", "E10"]


def test_a_header_without_the_required_columns_is_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path / "r.csv", ["工号", "部门"], [["E1", "一班"]])
    with pytest.raises(UnreadableFile) as e:
        read_roster_file(path)
    assert "证书编号" in str(e.value) and "姓名" in str(e.value)


def test_more_than_100000_rows_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    row = f"{MOHURD},李四\n"
    path.write_text("证书编号,姓名\n" + row * (MAX_MEMBERS + 1), encoding="utf-8")
    with pytest.raises(RosterTooLarge) as e:
        read_roster_file(path)
    assert "100,000" in str(e.value)


def test_json_members_get_the_same_checks() -> None:
    parsed = parse_members([{"number": MEM, "name": "张小三", "ref": "E1"}, {"number": "12", "name": "x"}])
    assert [m.ref for m in parsed.members] == ["E1"]
    assert [(p.line, p.column) for p in parsed.problems] == [(2, "number")]
