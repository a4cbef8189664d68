"""What an upload produced: the batch summary, the full report with every problem, and the typed errors.

A rejected upload is a normal outcome with a report, not an exception: `RecordStore.import_file` returns a
`BatchReport` whose `status` is `rejected` (and records it, so `certq uploads show ID` finds it). The one
exception is a file that was already imported: `AlreadyImported` carries the existing batch's id.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from aggregator.models import Department

QUARTER = re.compile(r"^(\d{4})Q([1-4])$")

#: At most this many problems and rejected rows are kept in a report; the counts are always exact.
MAX_KEPT_PROBLEMS = 10_000


class BatchStatus(StrEnum):
    IMPORTED = "imported"  # every row imported
    PARTIAL = "partial"  # imported with --partial; some rows rejected (see the report)
    REJECTED = "rejected"  # nothing imported


class RowProblem(BaseModel):
    """One reason a row (or, with line 1 and no value, the whole file) was rejected."""

    line: int  # line in the file, the header being line 1 (spreadsheets: the row number)
    column: str | None = None  # the header as written in the file
    value: str | None = None
    reason: str


class RejectedRow(BaseModel):
    """A row that was not imported, kept as uploaded so that nothing a department sent is lost."""

    line: int
    cells: dict[str, str]  # header as written -> cell text


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
        super().__init__(f"季度格式应为 YYYYQ1..YYYYQ4，例如 2026Q1 (quarter must look like 2026Q1, not {quarter!r})")


class UnreadableFile(RecordsImportError):
    """The file cannot be read as a table (unknown type, corrupt workbook, no header, undecodable text).

    The store turns it into a rejected batch whose report carries `problems`."""

    def __init__(self, problems: list[RowProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.reason for p in problems))


def parse_quarter(text: str) -> str:
    """`2026q1` -> `2026Q1`; anything that is not a year and quarter 1-4 raises `InvalidQuarter`."""
    value = text.strip().upper()
    if not QUARTER.match(value):
        raise InvalidQuarter(text)
    return value


def _register_errors() -> None:
    from aggregator.errors import register

    register(InvalidQuarter, 422, 2, "invalid-quarter", "季度格式应为 YYYYQ1..YYYYQ4，例如 2026Q1", "quarter must look like 2026Q1, not {exc.quarter!r}")
    register(AlreadyImported, 409, 0, "already-imported", "该文件已导入（批次 {exc.batch_id}），未作任何更改", "this file was already imported as batch {exc.batch_id}; nothing was added")
    register(UnreadableFile, 422, 65, "unreadable-file", "无法读取文件：{exc}", "the file cannot be read: {exc}")


_register_errors()
