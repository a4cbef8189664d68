"""The department's upload page: a records file and its quarter in, the batch report out (rejected rows listed).

The checks are the API's (a department key uploads only its own records) and the import is the one the API
makes (`services.uploads.import_file`: the store's import, then this process forgets the department's cached
answers), so a page upload and an API upload cannot differ.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aggregator.errors import describe
from aggregator.models import DEPARTMENT_NAMES, Department
from aggregator.records.report import BatchStatus
from aggregator.web.access import receive_form, services
from aggregator.web.pages.render import CSRF_FIELD, csrf_failed, csrf_ok, field, html_errors, render
from aggregator.web.pages.session import signed_in
from aggregator.web.problems import AlreadyUploaded, WebError
from aggregator.web.roles import Principal, Role
from aggregator.web.services.uploads import parse_department, parse_upload_quarter

PATH = "/department"


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
    if request.method == "GET":
        return render(request, "department.html", ctx, principal=principal)

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
    return render(request, "department.html", ctx, status=status, principal=principal)


routes = [Route(PATH, department_page, methods=["GET", "POST"], name="page_department")]
