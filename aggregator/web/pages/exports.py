"""The employer's results as files a person opens as they are: CSV (UTF-8 with BOM) and XLSX, with Chinese
headers and words (有效, 姓名不符, 住建部 …) by default. A row holds one checked pair; its certificates are
listed one per line inside the cells, so that each certificate's department, name, number, status and
valid-until sit on the same line across the columns. The files themselves are written by `aggregator.sheets`
(shared with the roster exports): every cell neutralised against formula injection, XLSX cells as strings.

Programs keep the API's CSV (`batch.rows_to_csv`: English column names and codes); the page offers it too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aggregator import sheets
from aggregator.web.batch import RowResult
from aggregator.web.pages import view

COLUMNS = (
    "行号",
    "证书编号",
    "姓名",
    "结论",
    "姓名核对",
    "发证部门",
    "证书",
    "查到的证书编号",
    "证书状态",
    "有效期至",
    "结果完整",
    "说明",
)
WIDTHS = (6, 24, 10, 10, 10, 14, 24, 26, 12, 12, 8, 60)  # XLSX column widths, in characters


def _name_check(r: RowResult) -> str:
    if r.name_check is not None and r.name_check.value == "not_checked":
        return "未核对（超出次数）"
    if r.name_matches is True:
        return "一致"
    if r.name_matches is False:
        return "不符"
    return ""


def cells(r: RowResult, names: Mapping[str, str]) -> list[str]:
    """One result row in words; the certificates' columns one line per certificate, aligned."""
    seen = r.view or {}
    certs = seen.get("certificates") or []
    mismatch = r.answer is not None and r.answer.verdict.value == "name_mismatch"
    lines = {
        "department": [view.department_short_name(c.get("department")) for c in certs],
        "kind": [" ".join(x for x in (view.kind_name(c.get("kind")), c.get("operation_item") or c.get("category") or "") if x)
                 for c in certs],
        "number": [str(c.get("number") or "") for c in certs],
        "status": [("持证人不符" if mismatch else view.status_badge(c.get("effective")).zh) for c in certs],
        "valid_until": [view.fmt_date(c.get("valid_until")) or "—" for c in certs],
    }
    if r.answer is not None:
        note = view.public_reason(r.answer.verdict_reason, seen.get("sources") or [], names)
        verdict = view.verdict_badge(r.answer.verdict).zh
        complete = "是" if r.answer.complete else "否"
    else:
        note = (r.error or {}).get("detail") or ""
        verdict, complete = "输入有误", ""
    return [
        str(r.pair.row),
        r.number_norm or r.pair.number,
        r.pair.name or "",
        verdict,
        _name_check(r),
        *(sheets.lines(lines[k]) for k in ("department", "kind", "number", "status", "valid_until")),
        complete,
        note,
    ]


def to_csv(rows: Sequence[RowResult], names: Mapping[str, str]) -> str:
    return sheets.csv_text(COLUMNS, (cells(r, names) for r in rows))


def to_xlsx(rows: Sequence[RowResult], names: Mapping[str, str]) -> bytes:
    """The results as an XLSX workbook (XlsxWriter, in memory; every cell a string, never a formula)."""
    return sheets.xlsx_bytes(COLUMNS, (cells(r, names) for r in rows), widths=WIDTHS, sheet="核验结果")


def typo_hints(r: RowResult) -> list[str]:
    """What the number's check said about a likely typo (a wrong check character …), for the results page."""
    view: Any = r.view or {}
    return list((view.get("query") or {}).get("warnings") or [])
