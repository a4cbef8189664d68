"""What an upload produced: the batch summary, the full report with every problem, and the typed errors.

A rejected upload is a normal outcome with a report, not an exception: `RecordStore.import_file` returns a
`BatchReport` whose `status` is `rejected` (and records it, so `certq uploads show ID` finds it). The one
exception is a file that was already imported: `AlreadyImported` carries the existing batch's id.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from aggregator.models import Department

QUARTER = re.compile(r"^(\d{4})Q([1-4])$")

#: At most this many problems and rejected rows are kept in a report; the counts are always exact.
MAX_KEPT_PROBLEMS = 10_000
#: What a report keeps of the text a file brought in (one place: the models below apply it however they are
#: made, so that a huge cell is never held, stored or returned, once or twice). A value longer than
#: MAX_VALUE_CHARS keeps its first EXCERPT_CHARS and its length; a reason (which may quote the value) at most
#: MAX_REASON_CHARS; a column name MAX_LABEL_CHARS; a rejected row MAX_ROW_CHARS in all, then a note of the
#: cells left out; at most MAX_WARNINGS warnings. So a report holds at most ~35 million characters, whatever
#: the file (10,000 problems x ~1,400 + 10,000 rejected rows x ~2,100), and a few hundred KB in practice.
EXCERPT_CHARS = 200
MAX_VALUE_CHARS = 300
MAX_REASON_CHARS = 1000
MAX_LABEL_CHARS = 100
MAX_ROW_CHARS = 2000
MAX_WARNINGS = 100
MORE_CELLS = "…"  # the key under which a rejected row notes the cells it left out
_EXCERPT_MARK = re.compile(r"…\(共 [\d,]+ 字 / [\d,]+ characters\)$")


def excerpt(text: str, *, total: int | None = None, keep: int = EXCERPT_CHARS, most: int = MAX_VALUE_CHARS) -> str:
    """`text` itself when it has at most `most` characters, else its first `keep` characters and its length:
    "abc…(共 123,456 字 / 123,456 characters)". `total` is the length of the whole when `text` is only its
    beginning. An excerpt is returned as it is (applying this twice changes nothing)."""
    length = len(text) if total is None else total
    if len(text) <= most and (length <= most or _EXCERPT_MARK.search(text)):
        return text
    return f"{text[:keep]}…(共 {length:,} 字 / {length:,} characters)"


def _label(text: str) -> str:
    return text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 20] + "…"


class BatchStatus(StrEnum):
    IMPORTED = "imported"  # every row imported
    PARTIAL = "partial"  # imported with --partial; some rows rejected (see the report)
    REJECTED = "rejected"  # nothing imported


class RowProblem(BaseModel):
    """One reason a row (or, with line 1 and no value, the whole file) was rejected."""

    line: int  # line in the file, the header being line 1 (spreadsheets: the row number)
    column: str | None = None  # the header as written in the file
    value: str | None = None  # as in the file, or an excerpt of a long one (see `excerpt`)
    reason: str

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        """A long value is kept as an excerpt, in the reason too when the reason quotes it."""
        if not isinstance(data, dict):
            return data
        value, reason, column = data.get("value"), data.get("reason"), data.get("column")
        changed: dict[str, Any] = {}
        if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
            changed["value"] = excerpt(value)
            if isinstance(reason, str) and value in reason:
                reason = changed["reason"] = reason.replace(value, changed["value"])
        if isinstance(reason, str) and len(reason) > MAX_REASON_CHARS:
            changed["reason"] = excerpt(reason, keep=MAX_REASON_CHARS - 100, most=MAX_REASON_CHARS)
        if isinstance(column, str) and len(column) > MAX_LABEL_CHARS:
            changed["column"] = _label(column)
        return {**data, **changed} if changed else data


class RejectedRow(BaseModel):
    """A row that was not imported, kept as uploaded so that nothing a department sent is lost."""

    line: int
    cells: dict[str, str]  # header as written -> cell text (long ones as excerpts; at most MAX_ROW_CHARS in all)

    @field_validator("cells")
    @classmethod
    def _bounded(cls, cells: dict[str, str]) -> dict[str, str]:
        if sum(map(len, cells.values())) + sum(map(len, cells)) <= MAX_ROW_CHARS and all(
            len(v) <= MAX_VALUE_CHARS for v in cells.values()
        ):
            return cells
        out: dict[str, str] = {}
        used = 0
        for i, (key, text) in enumerate(cells.items()):
            if key == MORE_CELLS:  # the note of an already bounded row
                out[key] = text
                continue
            label, short = _label(key), excerpt(text)
            if label in out:
                label = f"{label}#{i + 1}"
            used += len(label) + len(short)
            if used > MAX_ROW_CHARS and out:
                left = len(cells) - i
                out[MORE_CELLS] = f"另有 {left} 列未保留 ({left} more cells not kept)"
                break
            out[label] = short
        return out


class BatchSummary(BaseModel):
    """One upload, as listed by `certq uploads list`."""

    id: int
    department: Department
    quarter: str
    file_name: str
    sha256: str
    uploaded_at: datetime
    uploaded_by: str
    rows_total: int
    rows_imported: int
    rows_rejected: int
    status: BatchStatus


class BatchReport(BatchSummary):
    """One upload with everything the importer found: problems, rejected rows, warnings.

    `problems` and `rejected_rows` hold at most `MAX_KEPT_PROBLEMS` entries each; `problems_total` counts all.
    `superseded` is how many rows of older quarters this batch replaced; `outdated` how many of its rows were
    already superseded by a newer quarter when it was imported (kept as history, not current).
    """

    file_format: str | None = None  # csv | xlsx | xls
    encoding: str | None = None  # CSV only
    partial: bool = False  # imported with --partial
    problems: list[RowProblem] = Field(default_factory=list)
    problems_total: int = 0
    rejected_rows: list[RejectedRow] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    superseded: int = 0
    outdated: int = 0
    reaffirms: int | None = None  # the same file for a newer quarter: the batch whose rows it re-affirms

    @field_validator("warnings")
    @classmethod
    def _bounded(cls, warnings: list[str]) -> list[str]:
        if len(warnings) <= MAX_WARNINGS and all(len(w) <= MAX_REASON_CHARS for w in warnings):
            return warnings
        room = MAX_WARNINGS if len(warnings) <= MAX_WARNINGS else MAX_WARNINGS - 1
        kept = [excerpt(w, keep=MAX_REASON_CHARS - 100, most=MAX_REASON_CHARS) for w in warnings[:room]]
        if len(warnings) > room:
            left = len(warnings) - room
            kept.append(f"另有 {left} 条警告未保留 ({left} more warnings not kept)")
        return kept

    @property
    def imported(self) -> bool:
        return self.status != BatchStatus.REJECTED

    def summary(self) -> BatchSummary:
        return BatchSummary.model_validate(self.model_dump(include=set(BatchSummary.model_fields)))


class RecordsImportError(Exception):
    """Base of the importer's typed errors."""


class AlreadyImported(RecordsImportError):
    """This department already imported a file with the same content (same sha256); nothing was added."""

    def __init__(self, batch_id: int, department: Department, sha256: str) -> None:
        self.batch_id = batch_id
        self.department = department
        self.sha256 = sha256
        super().__init__(
            f"该文件已导入（批次 {batch_id}），未作任何更改 "
            f"(this file was already imported for {department.value} as batch {batch_id}; nothing was added)"
        )


class InvalidQuarter(RecordsImportError, ValueError):
    def __init__(self, quarter: str) -> None:
        self.quarter = quarter
        super().__init__(
            f"季度格式应为 2026Q1、2026 Q1 或 2026年第1季度 (a quarter is written 2026Q1, 2026 Q1 or 2026年第1季度, "
            f"not {quarter!r})"
        )


class UnreadableFile(RecordsImportError):
    """The file cannot be read as a table (unknown type, corrupt workbook, no header, undecodable text).

    The store turns it into a rejected batch whose report carries `problems`."""

    def __init__(self, problems: list[RowProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.reason for p in problems))


_QUARTER_FORMS = (
    re.compile(r"^(\d{4})[\s\-_/]*Q[\s\-_]*([1-4])$"),  # 2026Q4, 2026 Q4, 2026q4, 2026-Q4
    re.compile(r"^(\d{4})\s*年\s*第?\s*([1-4一二三四])\s*季度?$"),  # 2026年第4季度, 2026年4季度, 2026年第四季度
)
_CHINESE_DIGITS = {"一": "1", "二": "2", "三": "3", "四": "4"}


def parse_quarter(text: str) -> str:
    """The quarter as `2026Q1`, from the ways people write it: `2026q1`, `2026 Q1`, `2026-Q1`, `2026年第1季度`,
    `2026年1季度`, `2026年第一季度` (full-width characters too); anything else raises `InvalidQuarter`."""
    value = unicodedata.normalize("NFKC", text).strip().upper()
    for form in _QUARTER_FORMS:
        m = form.match(value)
        if m:
            return f"{m.group(1)}Q{_CHINESE_DIGITS.get(m.group(2), m.group(2))}"
    raise InvalidQuarter(text)


#: Where a quarter is said to have started: China Standard Time (a department uploading at 00:30 on 1 January,
#: Beijing time, is in the new quarter although UTC is not yet).
CHINA_TIME = timezone(timedelta(hours=8), "CST")


class FutureQuarter(InvalidQuarter):
    """An upload for a quarter that has not started yet (a typo for the year, most often)."""

    def __init__(self, quarter: str, today: date) -> None:
        self.today = today
        super().__init__(quarter)
        self.args = (
            f"季度 {quarter} 尚未开始（今天是 {today.isoformat()}），不能上报 "
            f"(quarter {quarter} has not started yet: today is {today.isoformat()})",
        )


def quarter_bounds(quarter: str) -> tuple[date, date]:
    """The first and the last day of a quarter written as `parse_quarter` returns it (2026Q4)."""
    m = QUARTER.match(quarter)
    if m is None:
        raise InvalidQuarter(quarter)
    year, q = int(m.group(1)), int(m.group(2))
    first = date(year, 3 * q - 2, 1)
    after = date(year + 1, 1, 1) if q == 4 else date(year, 3 * q + 1, 1)
    return first, after - timedelta(days=1)


def quarter_as_of(quarter: str, uploaded_at: datetime) -> datetime:
    """What an upload's data is as of: the earlier of the end of its quarter's last day (China time, where the
    departments keep their quarters) and the upload time. A 2026Q4 file uploaded on 2 December is as of
    2 December, not 31 December; a 2026Q3 file uploaded on 2 December is as of 30 September, 23:59 Beijing."""
    _, last = quarter_bounds(quarter)
    end = datetime(last.year, last.month, last.day, tzinfo=CHINA_TIME) + timedelta(days=1) - timedelta(microseconds=1)
    end = end.astimezone(UTC)
    at = uploaded_at if uploaded_at.tzinfo else uploaded_at.replace(tzinfo=UTC)
    return min(at, end)


def require_started(quarter: str, today: date | None = None) -> str:
    """`quarter` (as `parse_quarter` returns it) if it has started by `today` (default: today in China time),
    else `FutureQuarter`: nobody reports a quarter that has not begun."""
    today = today or datetime.now(CHINA_TIME).date()
    first, _ = quarter_bounds(quarter)
    if first > today:
        raise FutureQuarter(quarter, today)
    return quarter


def _register_errors() -> None:
    from aggregator.errors import register

    register(
        InvalidQuarter, 422, 2, "invalid-quarter", "季度格式应为 2026Q1、2026 Q1 或 2026年第1季度",
        "a quarter is written 2026Q1, 2026 Q1 or 2026年第1季度, not {exc.quarter!r}",
    )
    register(
        FutureQuarter, 422, 2, "future-quarter", "季度 {exc.quarter} 尚未开始（今天是 {exc.today}），不能上报",
        "quarter {exc.quarter} has not started yet (today is {exc.today}); nothing was imported",
    )
    register(AlreadyImported, 409, 0, "already-imported", "该文件已导入（批次 {exc.batch_id}），未作任何更改", "this file was already imported as batch {exc.batch_id}; nothing was added")
    register(UnreadableFile, 422, 65, "unreadable-file", "无法读取文件：{exc}", "the file cannot be read: {exc}")


_register_errors()
