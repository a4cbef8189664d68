"""Roster results as files: Chinese headers and words by default (English with lang=en), each certificate's
department, number, status and valid-until on the same line of their cells, formula injection neutralised."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from aggregator.rosters import export
from aggregator.rosters.store import Member, ResultRow
from tests.rosters.support import MEM, two_cert_result

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def _row(result, *, ref="E001", name="张小三", team="电工一班", number=MEM) -> ResultRow:
    member = Member(1, ref, number, name, None, team, NOW, False)
    return ResultRow(member, result.get("verdict"), "definitive", result, NOW)


def _read_csv(text: str) -> list[dict[str, str]]:
    assert text.startswith("\ufeff")  # spreadsheet programs read the Chinese
    return list(csv.DictReader(io.StringIO(text[1:])))


def test_chinese_headers_and_words_with_aligned_certificates() -> None:
    [line] = _read_csv(export.to_csv([_row(two_cert_result())]))
    assert list(line)[:6] == ["工号", "姓名", "证书编号", "部门/班组", "结论", "姓名核对"]
    assert (line["结论"], line["姓名核对"], line["距到期天数"]) == ("有效", "一致", "812")
    depts, numbers = line["发证部门"].split("\n"), line["查到的证书编号"].split("\n")
    statuses, untils = line["证书状态"].split("\n"), line["有效期至"].split("\n")
    assert len(depts) == len(numbers) == len(statuses) == len(untils) == 2
    assert list(zip(depts, statuses, untils, strict=True)) == [
        ("应急管理部", "有效", "2029-01-02"),
        ("市场监管总局", "已过期", "2024-05-06"),
    ]


def test_english_with_lang_en() -> None:
    [line] = _read_csv(export.to_csv([_row(two_cert_result())], lang="en"))
    assert (line["verdict"], line["name_check"], line["department"]) == ("valid", "match", "MEM\nSAMR")
    assert line["status"] == "valid\nexpired"


def test_a_name_mismatch_shows_no_status_of_another_holder() -> None:
    result = {**two_cert_result(), "verdict": "name_mismatch", "name_check": "mismatch", "name_matches": False}
    [line] = _read_csv(export.to_csv([_row(result)]))
    assert (line["结论"], line["姓名核对"]) == ("姓名不符", "不符")
    assert line["证书状态"] == "持证人不符\n持证人不符"


def test_formulas_are_neutralised_in_csv_and_xlsx() -> None:
    row = _row({"verdict": "not_found", "verdict_reason": "+1 未查到", "certificates": []}, team="=cmd|' /C calc'!A0")
    [line] = _read_csv(export.to_csv([row]))
    assert line["部门/班组"] == "'=cmd|' /C calc'!A0" and line["说明"] == "'+1 未查到"

    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(export.to_xlsx([row])))
    sheet = book.active
    header = [c.value for c in sheet[1]]
    assert header[:3] == ["工号", "姓名", "证书编号"]
    team = sheet.cell(row=2, column=header.index("部门/班组") + 1)
    assert team.value == "'=cmd|' /C calc'!A0" and team.data_type == "s"  # a string, never a formula


def test_the_reason_hook_and_errors() -> None:
    result = {"verdict": "inconclusive", "verdict_reason": "mem_api(timeout)", "certificates": [], "error": None}
    [line] = _read_csv(export.to_csv([_row(result)], reason=lambda t: t.replace("mem_api", "应急管理部接口")))
    assert line["说明"] == "应急管理部接口(timeout)" and line["结论"] == "无法确定"
    [line] = _read_csv(export.to_csv([_row({"verdict": None, "error": "数据源出错", "certificates": []})]))
    assert (line["结论"], line["说明"]) == ("查询出错", "数据源出错")
