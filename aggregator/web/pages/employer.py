"""The employer's batch check: a CSV or XLSX list of {number, name} in, a results table (or a CSV / XLSX in
Chinese, or the API's CSV for programs) out. A workbook is read by the importer's defensive reader in a child
process (`batch.parse_workbook_pairs`), never loaded in the server process.

The batch is the API's (`Services.verify_for`: the key's rate limit per pair, the name budget, audit, masking);
the results table is made from the masked views only, never the raw answers' personal data.
"""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aggregator.errors import describe
from aggregator.records.report import UnreadableFile
from aggregator.web.access import client_address, receive_form, services
from aggregator.web.batch import (
    RowResult,
    is_workbook,
    parse_csv_pairs,
    parse_workbook_pairs,
    rows_to_csv,
)
from aggregator.web.pages import exports, rosters, view
from aggregator.web.pages.render import (
    CSRF_FIELD,
    csrf_failed,
    csrf_ok,
    html_errors,
    render,
)
from aggregator.web.pages.session import signed_in
from aggregator.web.problems import WebError
from aggregator.web.roles import Principal, Role

PATH = "/employer"


def _result_row(r: RowResult) -> dict[str, Any]:
    """One row of the results table, from the masked view only (never the raw answer's personal data)."""
    certs = (r.view or {}).get("certificates") or []
    described = []
    lines = []  # one aligned line per certificate: department, number, status, valid until
    mismatch = r.answer is not None and r.answer.verdict.value == "name_mismatch"
    for c in certs:
        status = view.HOLDER_DIFFERS if mismatch else view.status_badge(c.get("effective"))
        item = c.get("operation_item") or c.get("category") or ""
        described.append(f"{view.kind_name(c.get('kind'))} {item} ({status.zh})".replace("  ", " "))
        lines.append(
            {
                "department": view.department_short_name(c.get("department")),
                "kind": view.kind_name(c.get("kind")),
                "item": item,
                "number": c.get("number") or "",
                "status": status,
                "valid_until": view.fmt_date(c.get("valid_until")),
            }
        )
    return {
        "certs": lines,
        "line": r.pair.row,
        "number": r.number_norm or r.pair.number,
        "name": r.pair.name or "",
        "verdict": r.answer.verdict.value if r.answer else None,
        "name_matches": r.name_matches,
        "certificate": "；".join(described),
        "valid_until": "；".join(view.fmt_date(c.get("valid_until")) for c in certs if c.get("valid_until")),
        "error": (r.error or {}).get("detail") if r.answer is None else None,
        "hints": exports.typo_hints(r),
        "name_check": r.name_check.value if r.name_check else None,
    }


def _summary(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    counts = Counter("invalid" if r["error"] else r["verdict"] for r in rows)
    out = []
    for key, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        label = "输入有误 invalid" if key == "invalid" else f"{view.verdict_badge(key).zh} {view.verdict_badge(key).en}"
        out.append((label, n))
    not_checked = sum(1 for r in rows if r.get("name_check") == "not_checked")
    if not_checked:  # the daily name-check budget: these rows' names were not compared
        out.append(("姓名未核对（今日核对次数已达上限或暂不可用）names not checked (daily budget spent)", not_checked))
    return out


XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _download(body: str | bytes, media_type: str, ext: str) -> Response:
    return Response(
        body,
        media_type=media_type,
        headers={"Cache-Control": "no-store", "Content-Disposition": f'attachment; filename="certq-results.{ext}"'},
    )


def _base_context(request: Request, principal: Principal) -> dict[str, Any]:
    return {
        "need_login": False,
        "batch_max": services(request).config.batch_max,
        "rows": None,
        "needs_purpose": principal.role == Role.REGULATOR,
    }


async def render_employer(request: Request, principal: Principal, extra: dict[str, Any], *, status: int = 200) -> Response:
    """The employer page with its rosters section (`pages.rosters`) and `extra`."""
    ctx = {**_base_context(request, principal), **await rosters.context(request, principal), **extra}
    return render(request, "employer.html", ctx, status=status, principal=principal)


@html_errors
async def employer_page(request: Request) -> Response:
    principal, login_page = await signed_in(request, PATH)
    if login_page is not None:
        return login_page
    svc = services(request)
    ctx = _base_context(request, principal)
    if request.method == "GET":
        return await render_employer(request, principal, {})

    form = await receive_form(request, file_limit=svc.config.body_limit)
    try:
        if not csrf_ok(request, form.fields.get(CSRF_FIELD)):
            return csrf_failed(request)
        if form.file is None or form.file.size == 0:
            ctx["file_error"] = "请选择一个 CSV 或 XLSX 文件 (choose a CSV or XLSX file)"
            return render(request, "employer.html", ctx, status=422, principal=principal)
        with form.file.path.open("rb") as f:
            head = f.read(8)
        try:
            if is_workbook(head):  # read in a child process with limits, while the upload is still on disk
                pairs = await run_in_threadpool(parse_workbook_pairs, form.file.path, limit=svc.config.batch_max)
            else:
                pairs = parse_csv_pairs(form.file.path.read_bytes(), limit=svc.config.batch_max)
        except (WebError, UnreadableFile) as e:
            ctx["file_error"] = describe(e).text
            return render(request, "employer.html", ctx, status=describe(e).status, principal=principal)
    finally:
        form.discard()
    results = await svc.verify_for(
        principal,
        pairs,
        purpose=form.fields.get("purpose") or None,
        client_ip=client_address(request),
        rate_state=request.scope.setdefault("state", {}),
    )
    names = svc.sources.names()
    csv_text = exports.to_csv(results, names)
    output = form.fields.get("output")
    if output in ("csv", "csv_codes"):  # Chinese headers and words; or the API's columns and codes for programs
        return _download(csv_text if output == "csv" else rows_to_csv(results), "text/csv; charset=utf-8", "csv")
    xlsx = exports.to_xlsx(results, names)
    if output == "xlsx":
        return _download(xlsx, XLSX_TYPE, "xlsx")
    rows = [_result_row(r) for r in results]
    ctx.update(rows=rows, summary=_summary(rows), csv_text=csv_text, xlsx_b64=base64.b64encode(xlsx).decode())
    return await render_employer(request, principal, ctx)


async def employer_template(request: Request) -> Response:
    """The list template: the header the batch reads, and two example rows."""
    return Response(
        view.template_csv(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="certq-template.csv"'},
    )


routes = [
    Route(PATH, employer_page, methods=["GET", "POST"], name="page_employer"),
    Route("/employer/template.csv", employer_template, methods=["GET"], name="page_employer_template"),
    *rosters.routes,
]
