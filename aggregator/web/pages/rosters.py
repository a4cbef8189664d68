"""The employer page's rosters section: upload a roster, start a verification, watch its progress bar (a small
script polls the job; no reload), read the results table, download CSV / XLSX, and the events timeline.

    GET  /employer?roster=ID[&job=JOB][&type=&member=]   the section is part of the employer page (`context`)
    POST /employer/rosters                                 upload a roster (multipart, CSRF) -> /employer?roster=ID
    POST /employer/rosters/{roster_id}/verify              start a run (CSRF) -> /employer?roster=ID&job=JOB
    POST /employer/rosters/{roster_id}/monitoring          monitor or stop (enabled, every_h, warn_days; CSRF)
    GET  /employer/jobs/{job_id}                           the job as JSON, for the progress bar (signed-in cookie)
    GET  /employer/rosters/{roster_id}/results.{csv,xlsx}  downloads (?job=&lang=)

The API's `/api/v1/jobs/{id}` takes a Bearer key; the page's script rides on the signed-in cookie instead, so it
polls this page's twin of that endpoint, which answers the same body from the same service (`job_view`).
Employers (and admins) only (`roles.ROSTER_KEEPERS`): a regulator on the employer page sees no rosters section.
The organisation's webhooks panel belongs to this section too (`pages.webhooks`: its context and routes).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from aggregator.errors import describe
from aggregator.records.schema import EVENT_TYPES
from aggregator.rosters import export
from aggregator.web.access import receive_form, services
from aggregator.web.pages import webhooks
from aggregator.web.pages.render import CSRF_FIELD, csrf_failed, csrf_ok, html_errors
from aggregator.web.pages.session import signed_in
from aggregator.web.problems import Forbidden, RosterRejected, RouteNotFound, Unprocessable, WebError
from aggregator.web.roles import ROSTER_KEEPERS, Principal
from aggregator.web.services.rosters import job_view

PATH = "/employer"
EVENT_LABELS = {
    "status_changed": "状态变化 status changed",
    "expiry_approaching": "即将到期 expiry approaching",
    "no_longer_found": "不再查到 no longer found",
    "newly_found": "新查到 newly found",
    "conflict_appeared": "数据源冲突 conflict",
    "inconclusive_too_long": "长期无法确定 inconclusive too long",
    "webhook_disabled": "推送已停用 webhook disabled",
}


def may_keep(principal: Principal) -> bool:
    return principal.role in ROSTER_KEEPERS and principal.key_id is not None


def _result_row(row: Any) -> dict[str, Any]:
    """One member's line of the results table, in the words of the Chinese export."""
    cells = export.result_cells(row)
    result = row.result
    mismatch = result.get("verdict") == "name_mismatch"
    certs = [
        {
            "department": export.department_words(c.get("department")),
            "number": c.get("number") or "",
            "status": export.HOLDER_DIFFERS[0] if mismatch else export.status_words(c.get("status")),
            "status_code": "bad" if mismatch else (c.get("status") or "unknown"),
            "valid_until": c.get("valid_until") or "",
        }
        for c in result.get("certificates") or []
    ]
    return {"ref": cells[0], "name": cells[1], "number": cells[2], "team": cells[3], "verdict": cells[4],
            "verdict_code": result.get("verdict") or row.verdict or "error", "name_check": cells[5], "certs": certs,
            "days": cells[10], "reason": cells[11]}


async def context(request: Request, principal: Principal) -> dict[str, Any]:
    """The rosters section of the employer page: the organisation's rosters, and the one asked for."""
    if not may_keep(principal):
        return {"rosters_enabled": False}
    svc = services(request)
    ctx: dict[str, Any] = {"rosters_enabled": True, "rosters": await svc.rosters.list(principal),
                           "event_types": [(t, EVENT_LABELS.get(t, t)) for t in EVENT_TYPES],
                           **await webhooks.context(request, principal, EVENT_LABELS)}
    roster_id = request.query_params.get("roster")
    if not roster_id:
        return ctx
    roster = await svc.rosters.get(principal, roster_id)
    job_id = request.query_params.get("job") or None
    job, page = await svc.rosters.results(principal, roster.id, job_id=job_id, page=1, per_page=200)
    etype = request.query_params.get("type") or None
    member = (request.query_params.get("member") or "").strip()[:64] or None
    events, _ = await svc.rosters.events(principal, roster.id, after=0, type=etype if etype in EVENT_TYPES else None,
                                         member=member, limit=200)
    ctx.update(
        roster=roster,
        job=job_view(job) if job else None,
        results=[_result_row(r) for r in page.items],
        results_total=page.total,
        events=[{**e.as_json(), "label": EVENT_LABELS.get(e.type, e.type)} for e in reversed(events)],
        event_filter={"type": etype or "", "member": member or ""},
    )
    return ctx


async def keeper(request: Request) -> tuple[Principal, Response | None]:
    principal, login = await signed_in(request, PATH)
    if login is None and not may_keep(principal):
        raise Forbidden(principal.role.value, "名单 / rosters")
    return principal, login


@html_errors
async def upload_roster(request: Request) -> Response:
    principal, login = await keeper(request)
    if login is not None:
        return login
    svc = services(request)
    form = await receive_form(request, file_limit=svc.config.upload_limit)
    try:
        if not csrf_ok(request, form.fields.get(CSRF_FIELD)):
            return csrf_failed(request)
        if form.file is None or form.file.size == 0:
            raise RosterRejected("请选择名单文件（CSV 或 XLSX）", "choose a roster file (CSV or XLSX)", {})
        partial = form.fields.get("partial") == "true"
        roster, _ = await svc.rosters.create_from_file(principal, form.file.path, name=form.fields.get("name"),
                                                       partial=partial)
    except RosterRejected as e:
        from aggregator.web.pages.employer import render_employer

        report = e.extra.get("report") or {}
        return await render_employer(request, principal, {"roster_error": describe(e).text, "roster_report": report},
                                     status=422)
    finally:
        form.discard()
    return RedirectResponse(f"{PATH}?roster={roster.id}#roster", status_code=303)


@html_errors
async def start_run(request: Request) -> Response:
    principal, login = await keeper(request)
    if login is not None:
        return login
    form = await request.form()
    try:
        if not csrf_ok(request, str(form.get(CSRF_FIELD) or "")):
            return csrf_failed(request)
    finally:
        await form.close()
    job = await services(request).rosters.start_run(principal, str(request.path_params["roster_id"]))
    return RedirectResponse(f"{PATH}?roster={job.subject}&job={job.id}#roster", status_code=303)


def _warn_days(text: str) -> list[int]:
    """'90, 30，7' -> [90, 30, 7]; anything that is not a whole number is refused."""
    parts = [p for p in text.replace("，", ",").replace(" ", ",").split(",") if p]
    if not all(p.isdigit() and len(p) <= 5 for p in parts):
        raise Unprocessable("到期提醒天数请填写整数，用逗号分隔（如 90,30,7）",
                            "warning days are whole numbers separated by commas (e.g. 90,30,7)")
    return [int(p) for p in parts]


@html_errors
async def set_monitoring(request: Request) -> Response:
    """Monitor the roster or stop, from its card's form; the settings are checked as the API checks them. The
    form posts to ...?roster=ID, so that a refused form shows the page again with that roster open."""
    from pydantic import ValidationError

    from aggregator.web.rosters import MonitoringBody

    principal, login = await keeper(request)
    if login is not None:
        return login
    form = await request.form()
    try:
        if not csrf_ok(request, str(form.get(CSRF_FIELD) or "")):
            return csrf_failed(request)
        fields = {k: str(v).strip() for k, v in form.items() if isinstance(v, str)}
    finally:
        await form.close()
    roster_id = str(request.path_params["roster_id"])
    try:
        every, after = fields.get("every_h") or "24", fields.get("inconclusive_after_days") or "3"
        if not (every.isdigit() and after.isdigit()) or len(every) > 5 or len(after) > 5:
            raise Unprocessable("检查间隔请填写整数小时", "the interval is a whole number of hours")
        settings = MonitoringBody(enabled=fields.get("enabled") == "true", every_h=int(every),
                                  expiry_warn_days=_warn_days(fields.get("warn_days", "")),
                                  inconclusive_after_days=int(after))
    except (ValidationError, Unprocessable) as e:
        from aggregator.web.pages.employer import render_employer

        text = describe(e).text if isinstance(e, Unprocessable) else (
            "监控设置有误：间隔 1–744 小时，到期提醒最多 6 个 / invalid settings: every 1-744 hours, at most 6 warning days")
        return await render_employer(request, principal, {"monitor_error": text}, status=422)
    roster = await services(request).rosters.set_monitoring(principal, roster_id, settings)
    return RedirectResponse(f"{PATH}?roster={roster.id}#monitoring", status_code=303)


async def job_status(request: Request) -> Response:
    """The job for the progress bar (JSON; the page's signed-in cookie)."""
    principal, login = await signed_in(request, PATH)
    try:
        if login is not None or not may_keep(principal):
            raise RouteNotFound("job")
        job = await services(request).rosters.job(principal, str(request.path_params["job_id"]))
    except WebError as e:
        err = describe(e)
        return JSONResponse({"error": err.text}, status_code=err.status, headers={"Cache-Control": "no-store"})
    return JSONResponse(job_view(job), headers={"Cache-Control": "no-store"})


@html_errors
async def download(request: Request) -> Response:
    principal, login = await keeper(request)
    if login is not None:
        return login
    fmt = request.path_params["fmt"]
    if fmt not in ("csv", "xlsx"):
        raise RouteNotFound(request.url.path)
    lang = "en" if request.query_params.get("lang") == "en" else "zh"
    body, media_type, filename = await services(request).rosters.export(
        principal, str(request.path_params["roster_id"]), job_id=request.query_params.get("job") or None,
        fmt=fmt, lang=lang,
    )
    return Response(body, media_type=media_type,
                    headers={"Cache-Control": "no-store", "Content-Disposition": f'attachment; filename="{filename}"'})


routes = [
    Route("/employer/rosters", upload_roster, methods=["POST"], name="page_roster_upload"),
    Route("/employer/rosters/{roster_id}/verify", start_run, methods=["POST"], name="page_roster_verify"),
    Route("/employer/rosters/{roster_id}/monitoring", set_monitoring, methods=["POST"], name="page_roster_monitoring"),
    Route("/employer/jobs/{job_id}", job_status, methods=["GET"], name="page_job"),
    Route("/employer/rosters/{roster_id}/results.{fmt}", download, methods=["GET"], name="page_roster_download"),
    *webhooks.routes,
]
