"""Uploads of department records over HTTP, imported exactly as `certq import` does.

    POST /api/v1/uploads          department (its own records only) or admin (names the department):
                                  multipart/form-data with `file`, `quarter`, optional `department`, `partial`
    GET  /api/v1/uploads          department: its own batches; regulator, admin: all (?department=)
    GET  /api/v1/uploads/{id}     department: its own batch only; regulator, admin: any

The file streams to a temporary file with the upload limit enforced while it arrives, is imported in one
transaction (a rejected file imports nothing and its report says why, line by line), and is deleted
afterwards, whatever happened. A successful import makes this process's cached answers for the department
unreachable at once (`services.uploads`, which the department page uses too). A hostile file (a zip bomb, a
sheet that asks for 512 GiB, a 100 MB cell) is read in a child process under the limits of
`aggregator.records.limits` and is a rejected upload like any other (422 with its report, which keeps only
excerpts of long values), never a dead worker.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aggregator.models import Department
from aggregator.records.report import BatchReport, BatchStatus
from aggregator.web.access import caller, receive_form, services
from aggregator.web.endpoint import Access, Body, Param, Reply, endpoint, path_param
from aggregator.web.problems import (
    AlreadyUploaded,
    BadRequest,
    ImportRejected,
    RouteNotFound,
    Unprocessable,
    UploadTooLarge,
    WrongDepartment,
)
from aggregator.web.roles import UPLOAD_READERS, UPLOADERS
from aggregator.web.schemas import UploadForm, Uploads
from aggregator.web.services.uploads import parse_department, parse_flag, parse_upload_quarter

READ_UPLOADS = Access.only(UPLOAD_READERS, "查看上传批次 / read uploads")


def _rejection(report: BatchReport) -> ImportRejected:
    """The 422 for a rejected file: about the file itself when that is why, else the count; the report with it."""
    body = report.model_dump(mode="json")
    first = report.problems[0] if report.problems else None
    if first is not None and first.column is None and first.value is None:  # about the file: say it here
        zh, _, en = first.reason.partition(" (")
        en = en.removesuffix(")")
        return ImportRejected(
            f"文件未导入：{zh}（共 {report.problems_total} 处问题，详见批次 {report.id} 的报告）",
            f"nothing was imported: {en or zh} ({report.problems_total} problem(s), see the report of batch {report.id})",
            body,
        )
    return ImportRejected(
        f"文件未导入：{report.problems_total} 处问题，详见报告（批次 {report.id}）",
        f"nothing was imported: {report.problems_total} problem(s), see the report (batch {report.id})",
        body,
    )


@endpoint(
    "POST",
    "/api/v1/uploads",
    name="api_upload",
    operation_id="uploadRecords",
    reply=Reply(
        201,
        {"application/json": BatchReport},
        "Imported; the batch report",
        headers={"Location": "The batch's report: /api/v1/uploads/{id}"},
    ),
    access=Access.only(UPLOADERS, "上传记录 / upload records"),
    body=Body({"multipart/form-data": UploadForm}, example={"file": "mem-2026Q1.csv", "quarter": "2026Q1"}),
    raises=(BadRequest, Unprocessable, WrongDepartment, AlreadyUploaded, ImportRejected, UploadTooLarge),
)
async def post_upload(request: Request) -> Response:
    """上传记录 Upload a department's quarterly records file (department key: its own only).

    Streamed to disk (upload size limit enforced while streaming), imported as `certq import` does: by default
    a file with any invalid row is rejected whole (422 with the report); partial=true imports the valid rows.
    The same file twice is 409.
    """
    principal = caller(request)
    svc = services(request)
    # Parameters given in the query string are checked before a byte of the file is read.
    early_dept = parse_department(request.query_params.get("department"))
    if early_dept is not None:
        svc.uploads.target_department(principal, early_dept)
    if request.query_params.get("quarter"):
        parse_upload_quarter(request.query_params.get("quarter"))

    form = await receive_form(request, file_limit=svc.config.upload_limit)
    try:
        if form.file is None:
            raise Unprocessable("缺少名为 file 的文件", "no file in a form field named 'file'")
        fields = form.fields
        department = svc.uploads.target_department(principal, parse_department(fields.get("department")) or early_dept)
        quarter = parse_upload_quarter(fields.get("quarter") or request.query_params.get("quarter"))
        partial = parse_flag(fields.get("partial") or request.query_params.get("partial"))
        report = await svc.uploads.import_file(
            principal, form.file, department=department, quarter=quarter, partial=partial
        )
    finally:
        form.discard()
    if report.status == BatchStatus.REJECTED:
        raise _rejection(report)
    return JSONResponse(
        report.model_dump(mode="json"), status_code=201, headers={"Location": f"/api/v1/uploads/{report.id}"}
    )


DEPARTMENT = Param(
    "department", "Only this department", schema={"type": "string", "enum": [d.value for d in Department]}
)


@endpoint(
    "GET",
    "/api/v1/uploads",
    name="api_uploads",
    operation_id="listUploads",
    reply=Reply.json(Uploads, "Uploads"),
    access=READ_UPLOADS,
    params=(DEPARTMENT,),
    raises=(Unprocessable, WrongDepartment),
)
async def list_uploads(request: Request) -> Response:
    """上传批次 Recent uploads (department: its own; regulator, admin: all).

    Newest first, rejected ones included, and per department the current batch.
    """
    named = parse_department(DEPARTMENT.raw(request))
    batches, current = await services(request).uploads.listing(caller(request), named)
    return JSONResponse(
        {
            "batches": [b.model_dump(mode="json") for b in batches],
            "current": {d.value: b.model_dump(mode="json") for d, b in current.items()},
        }
    )


@endpoint(
    "GET",
    "/api/v1/uploads/{batch_id}",
    name="api_upload_report",
    operation_id="getUpload",
    reply=Reply.json(BatchReport, "The report"),
    access=READ_UPLOADS,
    params=(path_param("batch_id", "The batch's id", example=1, type="integer"),),
    raises=(RouteNotFound, WrongDepartment),
)
async def get_upload(request: Request) -> Response:
    """批次报告 One upload's full report (department: its own only).

    Problems with line, column, value and reason; rejected rows as uploaded.
    """
    report = await services(request).uploads.report(caller(request), request.path_params["batch_id"])
    return JSONResponse(report.model_dump(mode="json"))


def upload_routes() -> list[Route]:
    return [e.route() for e in (post_upload, list_uploads, get_upload)]
