"""Uploads of department records: who may upload or read what, and the import itself, for the API and the page.

    department = parse_department(text)                    # None when blank; 422 when unknown
    target = uploads.target_department(principal, department)   # a department key: its own only
    report = await uploads.import_file(principal, saved_file, department=target, quarter="2026Q1", partial=False)
    report = await uploads.report(principal, "17")         # 404 unless it exists; 403 for another department's
    batches, current = await uploads.listing(principal, department)

`import_file` is the one place a file goes into the store: as `certq import` does it, in one transaction, named
after the key that uploaded it; then, unless the file was rejected, this process's cached answers for the
department are made unreachable at once (the department's generation is forgotten). The same file twice is
`AlreadyUploaded` (409).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aggregator.audit import AuditLog, AuditUnavailable
from aggregator.models import Department
from aggregator.records.report import (
    AlreadyImported,
    BatchReport,
    BatchStatus,
    BatchSummary,
    FutureQuarter,
    InvalidQuarter,
    parse_quarter,
    require_started,
)
from aggregator.web.multipart import SavedFile
from aggregator.web.problems import AlreadyUploaded, RouteNotFound, Unprocessable, WrongDepartment
from aggregator.web.roles import Principal, Role

if TYPE_CHECKING:
    from aggregator.gateway import Gateway

_TRUE = {"1", "true", "yes", "on"}

log = logging.getLogger(__name__)


def parse_department(value: str | None) -> Department | None:
    """A department named in a form or query string; None when blank, 422 when there is no such department."""
    if value is None or not value.strip():
        return None
    try:
        return Department(value.strip().lower())
    except ValueError as e:
        known = ", ".join(d.value for d in Department)
        raise Unprocessable(f"未知部门 {value}，可选：{known}", f"unknown department {value!r}; one of {known}") from e


def parse_upload_quarter(value: str | None) -> str:
    """The quarter an upload is for (2026q1 -> 2026Q1); 422 when missing, malformed or not started yet."""
    if value is None or not value.strip():
        raise Unprocessable("缺少季度 quarter（如 2026Q1）", "quarter is required (e.g. 2026Q1)")
    try:
        return require_started(parse_quarter(value))
    except FutureQuarter as e:
        zh, _, en = str(e).partition(" (")
        raise Unprocessable(zh, en.rstrip(")")) from e
    except InvalidQuarter as e:
        raise Unprocessable(
            "季度格式应为 YYYYQ1..YYYYQ4，例如 2026Q1", f"quarter must look like 2026Q1, not {value!r}"
        ) from e


def parse_flag(value: str | None) -> bool:
    """A form or query flag: 1, true, yes, on (any case) are true."""
    return (value or "").lower() in _TRUE


def uploader(principal: Principal) -> str:
    """How a batch names who uploaded it."""
    return f"{principal.label or principal.role.value} (key {principal.key_id})"


class UploadService:
    """Department uploads on the gateway's records store."""

    def __init__(self, gateway: Gateway, audit: AuditLog | None = None) -> None:
        self._gateway = gateway
        self._audit = audit  # every upload is audited (issue 14)

    @staticmethod
    def target_department(principal: Principal, named: Department | None) -> Department:
        """The department an upload is for: a department key's own (naming another is refused); an admin's named one."""
        if principal.role == Role.DEPARTMENT:
            assert principal.department is not None
            if named is not None and named != principal.department:
                raise WrongDepartment(principal.department.value, named.value)
            return principal.department
        if named is None:
            raise Unprocessable("管理员上传须指定部门 department", "an admin upload must name the department")
        return named

    @staticmethod
    def may_read(principal: Principal, department: Department) -> None:
        """A department key reads its own department's batches only."""
        if principal.role == Role.DEPARTMENT and principal.department != department:
            assert principal.department is not None
            raise WrongDepartment(principal.department.value, department.value)

    async def import_file(
        self, principal: Principal, file: SavedFile, *, department: Department, quarter: str, partial: bool
    ) -> BatchReport:
        """Import `file` for `department` as `principal` uploaded it; the report (rejected ones included)."""
        try:
            report = await self._gateway.store.import_file(
                file.path,
                department=department,
                quarter=quarter,
                uploaded_by=uploader(principal),
                partial=partial,
                file_name=file.name,
            )
        except AlreadyImported as e:
            raise AlreadyUploaded(e.batch_id, department.value) from e
        if report.status != BatchStatus.REJECTED:
            await self._gateway.imported(department)  # here and, through Redis, on every instance
        if self._audit is not None:
            detail = {"batch_id": report.id, "department": department.value, "quarter": report.quarter,
                      "file_name": report.file_name, "rows_imported": report.rows_imported, "status": report.status.value}  # fmt: skip
            try:  # the batch is committed and names its uploader: a failed audit write does not undo it
                await self._audit.record_action(principal, "upload", detail=detail)
            except AuditUnavailable as e:
                log.error("could not audit upload %s: %s", report.id, e)
        return report

    async def report(self, principal: Principal, batch_id: str) -> BatchReport:
        """One upload's full report, if `principal` may read it."""
        if not batch_id.isdigit() or len(batch_id) > 18:
            raise RouteNotFound(f"上传批次 / upload {batch_id}")
        report = await self._gateway.store.get_batch(int(batch_id))
        if report is None:
            raise RouteNotFound(f"上传批次 / upload {batch_id}")
        self.may_read(principal, report.department)
        return report

    async def current_quarters(self, principal: Principal, department: Department) -> dict[str, int]:
        """The department's current rows per quarter (read-only), if `principal` may read its uploads."""
        self.may_read(principal, department)
        return await self._gateway.store.current_rows_by_quarter(department)

    async def listing(
        self, principal: Principal, named: Department | None
    ) -> tuple[list[BatchSummary], dict[Department, BatchSummary]]:
        """Recent uploads, newest first, and per department the current batch: a department key's own only,
        everyone else's all (or `named`'s)."""
        if principal.role == Role.DEPARTMENT:
            assert principal.department is not None
            if named is not None:
                self.may_read(principal, named)
            named = principal.department
        store = self._gateway.store
        batches = await store.list_batches(named, limit=100)
        latest = await store.latest_batches()
        return batches, {d: b for d, b in latest.items() if named in (None, d)}
