"""The regulator's spot-check campaigns: create one (filters and design), run it, watch it, read its report.

    GET  /regulator/campaigns                 the campaigns and the form to create one
    POST /regulator/campaigns                 create (the sample is drawn now), then its page
    GET  /regulator/campaigns/{id}            filters, design, seed, strata; the run's progress; the report
    POST /regulator/campaigns/{id}/run        run (or carry on with) the checks, as a job
    GET  /regulator/campaigns/{id}/export     ?format=csv|xlsx

Regulators and admins only (signed in as on /regulator). Everything goes through the same service as the API
(`web.services.campaigns`), so the page shows what the API would.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from aggregator.campaigns.checks import KIND_ZH, OUTCOME_ZH
from aggregator.campaigns.filters import MAX_SAMPLE
from aggregator.campaigns.regions import PROVINCES
from aggregator.campaigns.report import REASON_ZH, rate_chart
from aggregator.models import CERT_KIND_NAMES, DEPARTMENT_SHORT_NAMES, Department
from aggregator.web.access import services
from aggregator.web.pages.render import CSRF_FIELD, csrf_failed, csrf_ok, field, html_errors, render, urlencoded_form
from aggregator.web.pages.session import signed_in
from aggregator.web.problems import RouteNotFound, Unprocessable
from aggregator.web.services.campaigns import campaigns_of
from aggregator.web.services.rosters import job_view

PATH = "/regulator/campaigns"
SHOWN = 200  # discrepancies listed on the page (the export has them all)
FIELD_NAMES = ("name", "n", "method", "stratify_by", "allocation", "seed", "department", "kind", "operation_item",
               "issuer", "province", "city", "quarter", "valid_on")  # fmt: skip


def _choices() -> dict[str, Any]:
    return {
        "departments": [(d.value, DEPARTMENT_SHORT_NAMES[d]) for d in Department],
        "kinds": [(k.value, name) for k, name in CERT_KIND_NAMES.items()],
        "provinces": sorted(PROVINCES.items()),
        "max_sample": MAX_SAMPLE,
    }


def _body(fields: dict[str, str]) -> dict[str, Any]:
    """The API's body from the form (empty fields left out)."""
    filters: dict[str, Any] = {}
    if fields["department"]:
        filters["departments"] = [fields["department"]]
    if fields["kind"]:
        filters["kinds"] = [fields["kind"]]
    for name in ("operation_item", "issuer", "province", "city", "quarter", "valid_on"):
        if fields[name]:
            filters[name] = fields[name]
    design: dict[str, Any] = {"method": fields["method"] or "simple", "allocation": fields["allocation"] or "proportional"}
    if fields["n"]:
        design["n"] = fields["n"]
    if fields["stratify_by"] and design["method"] == "stratified":
        design["stratify_by"] = fields["stratify_by"]
    if fields["seed"]:
        design["seed"] = fields["seed"]
    return {"name": fields["name"], "filters": filters, "design": design}


@html_errors
async def campaigns_page(request: Request) -> Response:
    principal, login_page = await signed_in(request, PATH)
    if login_page is not None:
        return login_page
    svc = campaigns_of(services(request))
    ctx: dict[str, Any] = {"need_login": False, "wide": True, **_choices()}
    status = 200
    if request.method == "POST":
        form = await urlencoded_form(request)
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return csrf_failed(request)
        fields = {k: field(form, k) for k in FIELD_NAMES}
        ctx["form"] = fields
        try:
            campaign = await svc.create(principal, _body(fields))
        except Unprocessable as e:
            ctx["create_error"] = f"{e.zh} ({e.en})"
            status = 422
        else:
            return RedirectResponse(f"{PATH}/{campaign.id}", status_code=303)
    rows = []
    for c in await svc.list(principal):
        job = await svc.job(c)
        rows.append({"c": c, "job": job_view(job) if job else None})
    ctx["campaigns"] = rows
    return render(request, "campaigns.html", ctx, status=status, principal=principal)


@html_errors
async def campaign_page(request: Request) -> Response:
    principal, login_page = await signed_in(request, PATH)
    if login_page is not None:
        return login_page
    svc = campaigns_of(services(request))
    campaign_id = str(request.path_params["campaign_id"])
    campaign, report, job = await svc.report(principal, campaign_id)
    view = job_view(job, datetime.now(UTC)) if job else None
    ctx: dict[str, Any] = {
        "need_login": False,
        "wide": True,
        "campaign": campaign,
        "summary": campaign.summary(),
        "report": report,
        "job": view,
        "running": bool(view and view["status"] in ("queued", "running")),
        "chart": rate_chart(report),
        "discrepancies": report.discrepancies[:SHOWN],
        "more": max(len(report.discrepancies) - SHOWN, 0),
        "kind_zh": KIND_ZH,
        "outcome_zh": OUTCOME_ZH,
        "reason_zh": REASON_ZH,
        "departments": {d.value: DEPARTMENT_SHORT_NAMES[d] for d in Department},
    }
    return render(request, "campaign.html", ctx, principal=principal)


@html_errors
async def run_page(request: Request) -> Response:
    principal, login_page = await signed_in(request, PATH)
    if login_page is not None:
        return login_page
    form = await urlencoded_form(request)
    if not csrf_ok(request, form.get(CSRF_FIELD)):
        return csrf_failed(request)
    campaign_id = str(request.path_params["campaign_id"])
    await campaigns_of(services(request)).start_run(principal, campaign_id)
    return RedirectResponse(f"{PATH}/{campaign_id}", status_code=303)


@html_errors
async def export_page(request: Request) -> Response:
    principal, login_page = await signed_in(request, PATH)
    if login_page is not None:
        return login_page
    fmt = request.query_params.get("format") or "csv"
    if fmt not in ("csv", "xlsx"):
        raise RouteNotFound("format: csv or xlsx")
    body, media_type, filename = await campaigns_of(services(request)).export(
        principal, str(request.path_params["campaign_id"]), fmt
    )
    headers = {"Cache-Control": "no-store", "Content-Disposition": f'attachment; filename="{filename}"'}
    return Response(body, media_type=media_type, headers=headers)


routes = [
    Route(PATH, campaigns_page, methods=["GET", "POST"], name="page_campaigns"),
    Route(PATH + "/{campaign_id}", campaign_page, methods=["GET"], name="page_campaign"),
    Route(PATH + "/{campaign_id}/run", run_page, methods=["POST"], name="page_campaign_run"),
    Route(PATH + "/{campaign_id}/export", export_page, methods=["GET"], name="page_campaign_export"),
]
