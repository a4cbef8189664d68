"""A roster run's results as rows a person reads: one line per member, Chinese headers and words by default
(`lang="en"` for English), each certificate's department, number, status and valid-until on the same line of
their cells (`sheets.lines`), then days to expiry, the name check and the reason. Written as CSV or XLSX by
`aggregator.sheets` (formula injection neutralised, XLSX cells strings only).

    rows = [result_cells(r, lang="zh") for r in page.items]
    text = to_csv(results, lang="en")
    data = to_xlsx(results, reason=lambda text: view.public_reason(text, [], names))

`reason` turns a verdict reason into the words shown (the web layer names the sources in it); by default the
reason is shown as the run stored it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from aggregator import sheets
from aggregator.models import DEPARTMENT_SHORT_NAMES, STATUS_LABELS, VERDICT_LABELS, CertStatus, Department, Verdict
from aggregator.rosters.store import ResultRow

COLUMNS = {
    "zh": ("工号", "姓名", "证书编号", "部门/班组", "结论", "姓名核对", "发证部门", "查到的证书编号", "证书状态",
           "有效期至", "距到期天数", "说明"),
    "en": ("ref", "name", "number", "team", "verdict", "name_check", "department", "certificate_number", "status",
           "valid_until", "days_to_expiry", "reason"),
}
WIDTHS = (10, 10, 24, 14, 10, 10, 14, 26, 14, 12, 10, 60)
NAME_CHECK = {
    "match": ("一致", "match"),
    "mismatch": ("不符", "mismatch"),
    "not_checked": ("未核对（超出次数）", "not checked (daily budget spent)"),
    "unknown": ("无法核对", "could not be checked"),
}
HOLDER_DIFFERS = ("持证人不符", "holder differs")
ERROR_WORDS = ("查询出错", "error")
PENDING_WORDS = ("未核验", "not checked yet")
Reason = Callable[[str], str]


def _word(pair: tuple[str, str], lang: str) -> str:
    return pair[1] if lang == "en" else pair[0]


def verdict_words(verdict: str | None, lang: str = "zh") -> str:
    try:
        return _word(VERDICT_LABELS[Verdict(verdict or "")], lang)
    except ValueError:
        return _word(ERROR_WORDS, lang)


def status_words(status: str | None, lang: str = "zh") -> str:
    try:
        return _word(STATUS_LABELS[CertStatus(status or "unknown")], lang)
    except ValueError:
        return str(status)


def department_words(department: str | None, lang: str = "zh") -> str:
    try:
        dept = Department(department or "")
    except ValueError:
        return str(department or "")
    return dept.value.upper() if lang == "en" else DEPARTMENT_SHORT_NAMES[dept]


def name_check_words(result: dict[str, Any], lang: str = "zh") -> str:
    check = result.get("name_check")
    if check is None and result.get("name_matches") is not None:
        check = "match" if result["name_matches"] else "mismatch"
    return _word(NAME_CHECK[check], lang) if check in NAME_CHECK else ""


def result_cells(row: ResultRow, *, lang: str = "zh", reason: Reason | None = None) -> list[str]:
    """One member's line: its certificates' columns one line per certificate, aligned."""
    result, member = row.result, row.member
    certs = result.get("certificates") or []
    verdict = result.get("verdict") or row.verdict
    mismatch = verdict == Verdict.NAME_MISMATCH.value
    days = result.get("days_to_expiry")
    text = str(result.get("verdict_reason") or "")
    if reason is not None and text:
        text = reason(text)
    if result.get("error"):
        text = f"{text}；{result['error']}" if text else str(result["error"])
    return [
        member.ref,
        member.name,
        member.number,
        member.team or "",
        verdict_words(verdict, lang),
        name_check_words(result, lang),
        sheets.lines(department_words(c.get("department"), lang) for c in certs),
        sheets.lines(c.get("number") or "" for c in certs),
        sheets.lines(_word(HOLDER_DIFFERS, lang) if mismatch else status_words(c.get("status"), lang) for c in certs),
        sheets.lines(c.get("valid_until") or "—" for c in certs),
        "" if days is None else str(days),
        text,
    ]


def _lang(lang: str | None) -> str:
    return "en" if lang == "en" else "zh"


def to_csv(rows: Iterable[ResultRow], *, lang: str | None = "zh", reason: Reason | None = None) -> str:
    lang = _lang(lang)
    return sheets.csv_text(COLUMNS[lang], (result_cells(r, lang=lang, reason=reason) for r in rows))


def to_xlsx(rows: Iterable[ResultRow], *, lang: str | None = "zh", reason: Reason | None = None) -> bytes:
    lang = _lang(lang)
    return sheets.xlsx_bytes(
        COLUMNS[lang],
        (result_cells(r, lang=lang, reason=reason) for r in rows),
        widths=WIDTHS,
        sheet="核验结果" if lang == "zh" else "Results",
    )
