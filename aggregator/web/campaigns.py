"""Spot-check campaigns over HTTP (regulator, admin; nobody else sees that they exist).

    POST /api/v1/campaigns                      {"name", "filters": {...}, "design": {...}}: drawn now -> 201
    GET  /api/v1/campaigns                      every campaign, newest first
    GET  /api/v1/campaigns/{id}                 the campaign (filters, design, seed, strata), its run's progress
    POST /api/v1/campaigns/{id}/runs            check every sampled certificate, as a job -> 202 (audited)
    GET  /api/v1/campaigns/{id}/report          rates per stratum (95 % Wilson), discrepancies with evidence
    GET  /api/v1/campaigns/{id}/export?format=  csv | xlsx, Chinese headers
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aggregator.campaigns import Campaign, Design, Population
from aggregator.campaigns.report import Report
from aggregator.jobs import Job
from aggregator.sheets import XLSX_MEDIA_TYPE
from aggregator.web.access import caller, read_json, services
from aggregator.web.endpoint import Access, Body, Choice, Reply, endpoint, path_param
from aggregator.web.problems import BadRequest, NotReady, RouteNotFound, Unprocessable, UnsupportedMediaType
from aggregator.web.services.campaigns import CAMPAIGN_ACTION, CAMPAIGNERS, CampaignService, campaigns_of
from aggregator.web.services.rosters import job_view

CAMPAIGNS = Access.only(CAMPAIGNERS, CAMPAIGN_ACTION)
NO_STORE = {"Cache-Control": "no-store"}
CAMPAIGN_ID = path_param("campaign_id", "The campaign's id", example="5f0c9a1e2b3d4c5e6f708192")
FORMAT = Choice("format", "csv or xlsx (Chinese headers)", choices=("csv", "xlsx"))


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class CampaignIn(BaseModel):
    """A campaign to draw: its name (what it is for), the population's filters and the sample's design."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=200, description="抽查名称/用途 what the campaign is for")
    filters: Population = Field(default_factory=Population)
    design: Design


class CampaignOut(_Open):
    """A campaign: filters, design and seed, the population count, each stratum's size and sample, its run."""

    id: str
    name: str
    filters: dict[str, Any]
    design: dict[str, Any]
    seed: int
    population: int
    sample: int
    strata: list[dict[str, Any]]
    frame_digest: str
    job: dict[str, Any] | None = None


class CampaignList(BaseModel):
    campaigns: list[CampaignOut]


class CampaignJob(_Open):
    """The run: queued, running (done of total, items per second, seconds left), finished, failed, cancelled."""

    id: str
    status: Literal["queued", "running", "finished", "failed", "cancelled"]
    done: int
    total: int


class CampaignReport(_Open):
    """Rates per stratum with 95 % Wilson intervals, outcome and kind counts, every discrepancy with evidence."""

    campaign: dict[str, Any]
    finished: bool
    outcomes: dict[str, int]
    kinds: dict[str, int]
    overall: dict[str, Any]
    strata: list[dict[str, Any]]
    discrepancies: list[dict[str, Any]]
    inconclusive: list[dict[str, Any]]


def _svc(request: Request) -> CampaignService:
    return campaigns_of(services(request))


def _id(request: Request) -> str:
    return str(request.path_params["campaign_id"])


def job_json(job: Job | None) -> dict[str, Any] | None:
    """The run as the API shows jobs (its subject is the campaign)."""
    if job is None:
        return None
    out = job_view(job)
    out.pop("roster_id", None)
    out["campaign_id"] = job.subject
    return out


def campaign_json(campaign: Campaign, job: Job | None) -> dict[str, Any]:
    out = campaign.summary()
    out["job"] = job_json(job)
    return out


def report_json(report: Report, job: Job | None) -> dict[str, Any]:
    out = report.as_dict()
    out["job"] = job_json(job)
    return out


async def _body(request: Request) -> Any:
    return await read_json(request)


@endpoint(
    "POST",
    "/api/v1/campaigns",
    name="api_campaigns_create",
    operation_id="createCampaign",
    reply=Reply(201, {"application/json": CampaignOut}, "Drawn", headers={"Location": "/api/v1/campaigns/{id}"}),
    access=CAMPAIGNS,
    body=Body(
        {"application/json": CampaignIn},
        example={
            "name": "2026年第四季度 吉林 建筑电工抽查",
            "filters": {"departments": ["mohurd"], "province": "吉林", "valid_on": "2026-11-25"},
            "design": {"n": 200, "method": "stratified", "stratify_by": "issuer", "allocation": "proportional"},
        },
    ),
    raises=(BadRequest, Unprocessable, UnsupportedMediaType),
)
async def create_campaign(request: Request) -> Response:
    """新建抽查 Create a spot-check campaign: the sample is drawn now (regulator, admin).

    Filters over the current uploaded records (department, kind, item, issuer, province, city, quarter, valid on
    a date) and a design (n; simple or stratified by issuer, province or city; proportional or equal
    allocation; a seed, chosen at random when not given). The same filters and seed draw the same sample on
    SQLite and PostgreSQL; the population count and each stratum's size are kept with the campaign.
    """
    campaign = await _svc(request).create(caller(request), await _body(request))
    return JSONResponse(
        campaign_json(campaign, None), status_code=201, headers={"Location": f"/api/v1/campaigns/{campaign.id}"}
    )


@endpoint(
    "GET",
    "/api/v1/campaigns",
    name="api_campaigns",
    operation_id="listCampaigns",
    reply=Reply.json(CampaignList, "Campaigns"),
    access=CAMPAIGNS,
)
async def list_campaigns(request: Request) -> Response:
    """抽查列表 Every campaign, newest first (regulator, admin)."""
    svc = _svc(request)
    out = [campaign_json(c, await svc.job(c)) for c in await svc.list(caller(request))]
    return JSONResponse({"campaigns": out}, headers=NO_STORE)


@endpoint(
    "GET",
    "/api/v1/campaigns/{campaign_id}",
    name="api_campaign",
    operation_id="getCampaign",
    reply=Reply.json(CampaignOut, "The campaign and its run"),
    access=CAMPAIGNS,
    params=(CAMPAIGN_ID,),
    raises=(RouteNotFound,),
)
async def get_campaign(request: Request) -> Response:
    """抽查详情 A campaign: filters, design, seed, strata, and its run's progress (regulator, admin)."""
    svc = _svc(request)
    campaign = await svc.get(caller(request), _id(request))
    return JSONResponse(campaign_json(campaign, await svc.job(campaign)), headers=NO_STORE)


@endpoint(
    "POST",
    "/api/v1/campaigns/{campaign_id}/runs",
    name="api_campaign_run",
    operation_id="runCampaign",
    reply=Reply(202, {"application/json": CampaignJob}, "Queued: poll the campaign",
                headers={"Location": "/api/v1/campaigns/{id}"}),
    access=CAMPAIGNS,
    params=(CAMPAIGN_ID,),
    raises=(RouteNotFound, NotReady),
)
async def run_campaign(request: Request) -> Response:
    """运行抽查 Check every sampled certificate against the live sources, as a background job (regulator, admin).

    Audited with the campaign's filters, seed and the key that ran it; each check is audited under the job.
    A run that stopped carries on with the items not checked yet; a running one is returned as it is.
    """
    svc = services(request)
    if getattr(svc, "work", None) is None:
        raise NotReady({"jobs": "failed: the job engine is not running in this process"})
    job = await _svc(request).start_run(caller(request), _id(request))
    return JSONResponse(
        job_json(job), status_code=202, headers={"Location": f"/api/v1/campaigns/{_id(request)}", **NO_STORE}
    )


@endpoint(
    "GET",
    "/api/v1/campaigns/{campaign_id}/report",
    name="api_campaign_report",
    operation_id="getCampaignReport",
    reply=Reply.json(CampaignReport, "The report (so far, while it runs)"),
    access=CAMPAIGNS,
    params=(CAMPAIGN_ID,),
    raises=(RouteNotFound,),
)
async def get_report(request: Request) -> Response:
    """抽查报告 Discrepancy rates per stratum with 95 % Wilson intervals, and each discrepancy's evidence.

    A discrepancy: the upload says valid but the live source says suspended, revoked or expired; uploaded but
    not found live; a field that differs; a live certificate of the holder missing from the upload. Checks that
    could not be made (source down, captcha, rate limited) are counted apart and are never a discrepancy.
    """
    _, report, job = await _svc(request).report(caller(request), _id(request))
    return JSONResponse(report_json(report, job), headers=NO_STORE)


@endpoint(
    "GET",
    "/api/v1/campaigns/{campaign_id}/export",
    name="api_campaign_export",
    operation_id="exportCampaign",
    reply=Reply(200, {"text/csv": str, XLSX_MEDIA_TYPE: str}, "The report as CSV or XLSX (Chinese headers)"),
    access=CAMPAIGNS,
    params=(CAMPAIGN_ID, FORMAT),
    raises=(RouteNotFound, Unprocessable),
)
async def export_campaign(request: Request) -> Response:
    """导出抽查结果 Every sampled certificate and each discrepancy, as CSV (default) or XLSX."""
    fmt = FORMAT.read(request) or "csv"
    body, media_type, filename = await _svc(request).export(caller(request), _id(request), fmt)
    headers = {**NO_STORE, "Content-Disposition": f'attachment; filename="{filename}"'}
    return Response(body, media_type=media_type, headers=headers)


def campaign_routes() -> list[Route]:
    return [e.route() for e in (create_campaign, list_campaigns, get_campaign, run_campaign, get_report, export_campaign)]
