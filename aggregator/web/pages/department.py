"""The department's upload page: a records file and its quarter in, the batch report out (rejected rows listed);
with the department's own upload history (each report one click away), the column specification and a
template to download, and a preview of what a newer quarter supersedes ("将替换 2026Q3 的 1,712 条记录").

The checks are the API's (a department key uploads only its own records) and the import is the one the API
makes (`services.uploads.import_file`: the store's import, then this process forgets the department's cached
answers), so a page upload and an API upload cannot differ.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aggregator.errors import describe
from aggregator.models import DEPARTMENT_NAMES, Department
from aggregator.records import fields as upload_fields
from aggregator.records.report import BatchStatus, InvalidQuarter, parse_quarter, require_started
from aggregator.web.access import receive_form, services
from aggregator.web.pages.render import (
    CSRF_FIELD,
    csrf_failed,
    csrf_ok,
    field,
    html_errors,
    render,
)
from aggregator.web.pages.session import signed_in
from aggregator.web.problems import AlreadyUploaded, WebError
from aggregator.web.roles import Principal, Role
from aggregator.web.services.uploads import parse_department, parse_upload_quarter

PATH = "/department"
# The template's example row, per department: holders of the demo data set (aggregator.sandbox.fixed).
_EXAMPLE_NUMBER = {
    Department.MEM: ("T110105199003071239", "张伟", "110105199003071239"),
    Department.MOHURD: ("京A012019000939", "张伟", "110105199003071239"),
    Department.MOHRSS: ("S021537000101234000517", "刘洋", "37010219880412215X"),
    Department.SAMR: ("650102199503041286", "阿依古丽·买买提", "650102199503041286"),
}


def column_spec() -> list[dict[str, Any]]:
    """Every column an upload may carry: its header, the other headers accepted, whether it is required."""
    notes = {
        upload_fields.ID_NUMBER: "18 位，以文本存储（勿存为数字）",
        "status": "有效、过期、暂扣、吊销、撤销、注销等",
    }
    spec = []
    for name in upload_fields.FIELDS:
        label = upload_fields.FIELD_LABELS.get(name, name)
        aliases = [a for a in upload_fields.COMMON_ALIASES.get(name, ()) if a != label]
        note = notes.get(name) or ("日期，如 2024-01-02、2024/1/2、2024年1月2日" if name in upload_fields.DATE_FIELDS else "")
        spec.append({"label": label, "aliases": aliases, "required": name in upload_fields.REQUIRED, "note": note})
    return spec


def template_csv(department: Department | None) -> str:
    """The upload template: every column's header, and one example row (of the demo data set)."""
    buf = io.StringIO()
    buf.write("\ufeff")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([upload_fields.FIELD_LABELS.get(f, f) for f in upload_fields.FIELDS])
    number, name, id_number = _EXAMPLE_NUMBER.get(department or Department.MEM, _EXAMPLE_NUMBER[Department.MEM])
    example = {
        upload_fields.NUMBER: number,
        upload_fields.NAME: name,
        upload_fields.ID_NUMBER: id_number,
        "issued_on": "2024-01-02",
        "valid_from": "2024-01-02",
        "valid_until": "2030-01-01",
        "status": "有效",
    }
    writer.writerow([example.get(f, "") for f in upload_fields.FIELDS])
    return buf.getvalue()


def preview(quarter: str, current: dict[str, int]) -> dict[str, Any] | None:
    """What an upload for `quarter` does to the department's current rows (`current`: rows per quarter)."""
    older = {q: n for q, n in current.items() if q < quarter}
    newer = {q: n for q, n in current.items() if q > quarter}
    if older:
        n = sum(older.values())
        quarters = "、".join(older)
        return {
            "kind": "replace",
            "text": f"上传 {quarter} 将替换 {quarters} 的 {n:,} 条记录：文件中出现的证书以新记录为准，未出现的保留旧记录。",
            "en": f"this will replace up to {n:,} rows of {quarters} (certificates in the file; others keep their rows)",
        }
    if newer:
        quarters = "、".join(newer)
        return {
            "kind": "older",
            "text": f"{quarter} 早于现有数据 {quarters}：只有现有数据中没有的证书会成为当前记录。",
            "en": f"{quarter} is older than the current {quarters}: only certificates not already held become current",
        }
    if quarter in current:
        return {
            "kind": "same",
            "text": f"{quarter} 已有 {current[quarter]:,} 条当前记录：文件中的证书将更新为本次上传的内容。",
            "en": f"{quarter} already has {current[quarter]:,} current rows: certificates in the file are updated",
        }
    return None


def _department_choices(principal: Principal) -> list[tuple[str, str]]:
    """Departments a signed-in key may upload for: its own (department keys) or any (admin)."""
    if principal.role == Role.ADMIN:
        return [(d.value, f"{DEPARTMENT_NAMES[d]} {d.value}") for d in Department]
    return []


@html_errors
async def department_page(request: Request) -> Response:
    principal, login_page = await signed_in(request, PATH)
    if login_page is not None:
        return login_page
    svc = services(request)
    own = principal.department
    ctx: dict[str, Any] = {
        "need_login": False,
        "departments": _department_choices(principal),
        "own_department": f"{DEPARTMENT_NAMES[own]} {own.value}" if own else "",
        "report": None,
    }
    ctx["spec"] = column_spec()
    if request.method == "GET":
        q = request.query_params
        status = 200
        if (batch := (q.get("batch") or "").strip()):
            ctx["report"] = await svc.uploads.report(principal, batch[:20])
        if (typed := (q.get("quarter") or "").strip()[:40]):
            ctx["form"] = {"quarter": typed, "department": (q.get("department") or "").strip()[:20]}
            try:
                quarter = require_started(parse_quarter(typed))
                department = svc.uploads.target_department(principal, parse_department(ctx["form"]["department"] or None))
            except (InvalidQuarter, WebError) as e:
                ctx["errors"] = {"quarter": describe(e).text}
                status = 422
            else:
                current = await svc.uploads.current_quarters(principal, department)
                ctx["preview"] = preview(quarter, current) or {
                    "kind": "new", "text": f"{quarter}：将作为新的当前数据导入。", "en": "imported as the current data",
                }
        await _history(request, principal, ctx)
        return render(request, "department.html", ctx, status=status, principal=principal)

    form = await receive_form(request, file_limit=svc.config.upload_limit)
    try:
        if not csrf_ok(request, form.fields.get(CSRF_FIELD)):
            return csrf_failed(request)
        fields = {k: field(form.fields, k) for k in ("quarter", "department", "partial")}
        ctx["form"] = fields
        errors: dict[str, str] = {}
        department = quarter = None
        try:  # the API's own checks: a department key uploads only its own records
            department = svc.uploads.target_department(principal, parse_department(fields["department"]))
        except WebError as e:
            errors["department"] = describe(e).text
        try:
            quarter = parse_upload_quarter(fields["quarter"])
        except WebError as e:
            errors["quarter"] = describe(e).text
        if form.file is None or form.file.size == 0:
            errors["file"] = "请选择要上传的数据文件 (choose a records file)"
        if errors or form.file is None or department is None or quarter is None:
            ctx["errors"] = errors
            await _history(request, principal, ctx)
            return render(request, "department.html", ctx, status=422, principal=principal)
        status = 200
        try:
            report: Any = await svc.uploads.import_file(
                principal, form.file, department=department, quarter=quarter, partial=fields["partial"] == "1"
            )
        except AlreadyUploaded as e:
            report = {
                "status": "already_imported",
                "id": e.batch_id,
                "department": department.value,
                "quarter": quarter,
                "file_name": form.file.name,
                "message": describe(e).text,
            }
            status = 409
        else:
            if report.status == BatchStatus.REJECTED:
                status = 422
    finally:
        form.discard()
    ctx["report"] = report
    await _history(request, principal, ctx)
    return render(request, "department.html", ctx, status=status, principal=principal)


async def _history(request: Request, principal: Principal, ctx: dict[str, Any]) -> None:
    """The key's uploads, newest first (a department key: its own), and the current data per department."""
    uploads = services(request).uploads
    batches, latest = await uploads.listing(principal, None)
    ctx["history"] = batches[:30]
    ctx["current"] = [
        (d, rows)
        for d in sorted(latest, key=lambda d: d.value)
        if (rows := await uploads.current_quarters(principal, d))
    ]


async def department_template(request: Request) -> Response:
    """The upload template: every column's header and an example row (the signed-in department's, if any)."""
    principal, _ = await signed_in(request, PATH)
    return Response(
        template_csv(principal.department),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="certq-records-template.csv"'},
    )


routes = [
    Route(PATH, department_page, methods=["GET", "POST"], name="page_department"),
    Route("/department/template.csv", department_template, methods=["GET"], name="page_department_template"),
]
