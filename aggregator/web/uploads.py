"""Uploads of department records over HTTP, imported exactly as `certq import` does.

    POST /api/v1/uploads          department (its own records only) or admin (names the department):
                                  multipart/form-data with `file`, `quarter`, optional `department`, `partial`
    GET  /api/v1/uploads          department: its own batches; regulator, admin: all (?department=)
    GET  /api/v1/uploads/{id}     department: its own batch only; regulator, admin: any

The file streams to a temporary file with the upload limit enforced while it arrives, is imported in one
transaction (a rejected file imports nothing and its report says why, line by line), and is deleted
afterwards, whatever happened. A successful import makes this process's cached answers for the department
unreachable at once. A hostile file (a zip bomb, a sheet that asks for 512 GiB, a 100 MB cell) is read in a
child process under the limits of `aggregator.records.limits` and is a rejected upload like any other
(422 with its report, which keeps only excerpts of long values), never a dead worker.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aggregator.models import Department
from aggregator.records.report import AlreadyImported, BatchStatus, InvalidQuarter, parse_quarter
from aggregator.web.access import allow, caller, services
from aggregator.web.multipart import receive_multipart
from aggregator.web.problems import (
    AlreadyUploaded,
    ImportRejected,
    RouteNotFound,
    Unprocessable,
    WrongDepartment,
)
from aggregator.web.roles import Principal, Role

UPLOADERS = frozenset({Role.DEPARTMENT, Role.ADMIN})
READERS = frozenset({Role.DEPARTMENT, Role.REGULATOR, Role.ADMIN})
_TRUE = {"1", "true", "yes", "on"}


def _department(value: str | None) -> Department | None:
    if value is None or not value.strip():
        return None
    try:
        return Department(value.strip().lower())
    except ValueError as e:
        known = ", ".join(d.value for d in Department)
        raise Unprocessable(f"未知部门 {value}，可选：{known}", f"unknown department {value!r}; one of {known}") from e


def _quarter(value: str | None) -> str:
    if value is None or not value.strip():
        raise Unprocessable("缺少季度 quarter（如 2026Q1）", "quarter is required (e.g. 2026Q1)")
    try:
        return parse_quarter(value)
    except InvalidQuarter as e:
        raise Unprocessable("季度格式应为 YYYYQ1..YYYYQ4，例如 2026Q1", f"quarter must look like 2026Q1, not {value!r}") from e


def _target_department(principal: Principal, named: Department | None) -> Department:
    """The department an upload is for: a department key's own (naming another is refused); an admin's named one."""
    if principal.role == Role.DEPARTMENT:
        assert principal.department is not None
        if named is not None and named != principal.department:
            raise WrongDepartment(principal.department.value, named.value)
        return principal.department
    if named is None:
        raise Unprocessable("管理员上传须指定部门 department", "an admin upload must name the department")
    return named


def _report_json(report: Any) -> dict[str, Any]:
    return report.model_dump(mode="json")  # type: ignore[no-any-return]


async def post_upload(request: Request) -> Response:
    """Import a department's quarterly records file (CSV, XLSX or XLS); answers with the batch report."""
    principal = caller(request)
    allow(principal, UPLOADERS, "上传记录 / upload records")
    svc = services(request)
    # Parameters given in the query string are checked before a byte of the file is read.
    early_dept = _department(request.query_params.get("department"))
    if early_dept is not None:
        _target_department(principal, early_dept)
    if request.query_params.get("quarter"):
        _quarter(request.query_params.get("quarter"))

    form = await receive_multipart(request, dest_dir=svc.config.upload_dir, file_limit=svc.config.upload_limit)
    try:
        if form.file is None:
            raise Unprocessable("缺少名为 file 的文件", "no file in a form field named 'file'")
        fields = form.fields
        department = _target_department(principal, _department(fields.get("department")) or early_dept)
        quarter = _quarter(fields.get("quarter") or request.query_params.get("quarter"))
        partial = (fields.get("partial") or request.query_params.get("partial") or "").lower() in _TRUE
        who = f"{principal.label or principal.role.value} (key {principal.key_id})"
        try:
            report = await svc.gateway.store.import_file(
                form.file.path,
                department=department,
                quarter=quarter,
                uploaded_by=who,
                partial=partial,
                file_name=form.file.name,
            )
        except AlreadyImported as e:
            raise AlreadyUploaded(e.batch_id, department.value) from e
    finally:
        form.discard()

    body = _report_json(report)
    if report.status == BatchStatus.REJECTED:
        first = report.problems[0] if report.problems else None
        if first is not None and first.column is None and first.value is None:  # about the file: say it here
            zh, _, en = first.reason.partition(" (")
            en = en.removesuffix(")")
            raise ImportRejected(
                f"文件未导入：{zh}（共 {report.problems_total} 处问题，详见批次 {report.id} 的报告）",
                f"nothing was imported: {en or zh} ({report.problems_total} problem(s), see the report of batch {report.id})",
                body,
            )
        raise ImportRejected(
            f"文件未导入：{report.problems_total} 处问题，详见报告（批次 {report.id}）",
            f"nothing was imported: {report.problems_total} problem(s), see the report (batch {report.id})",
            body,
        )
    svc.gateway.forget_generation(department)
    return JSONResponse(body, status_code=201, headers={"Location": f"/api/v1/uploads/{report.id}"})


def _may_read(principal: Principal, department: Department) -> None:
    if principal.role == Role.DEPARTMENT and principal.department != department:
        assert principal.department is not None
        raise WrongDepartment(principal.department.value, department.value)


async def get_upload(request: Request) -> Response:
    """One upload with its full report (problems with line, column, value and reason; rejected rows)."""
    principal = caller(request)
    allow(principal, READERS, "查看上传批次 / read uploads")
    raw = request.path_params["batch_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise RouteNotFound(f"上传批次 / upload {raw}")
    report = await services(request).gateway.store.get_batch(int(raw))
    if report is None:
        raise RouteNotFound(f"上传批次 / upload {raw}")
    _may_read(principal, report.department)
    return JSONResponse(_report_json(report))


async def list_uploads(request: Request) -> Response:
    """Recent uploads, newest first (rejected ones included), and per department the current batch."""
    principal = caller(request)
    allow(principal, READERS, "查看上传批次 / read uploads")
    named = _department(request.query_params.get("department"))
    if principal.role == Role.DEPARTMENT:
        assert principal.department is not None
        if named is not None:
            _may_read(principal, named)
        named = principal.department
    store = services(request).gateway.store
    batches = await store.list_batches(named, limit=100)
    latest = await store.latest_batches()
    return JSONResponse(
        {
            "batches": [b.model_dump(mode="json") for b in batches],
            "current": {d.value: b.model_dump(mode="json") for d, b in latest.items() if named in (None, d)},
        }
    )


def upload_routes() -> list[Route]:
    return [
        Route("/api/v1/uploads", post_upload, methods=["POST"], name="api_upload"),
        Route("/api/v1/uploads", list_uploads, methods=["GET"], name="api_uploads"),
        Route("/api/v1/uploads/{batch_id}", get_upload, methods=["GET"], name="api_upload_report"),
    ]
