"""Spot-check campaigns as regulators (and admins) may make, run and read them; nobody else sees them.

    svc = campaigns_of(services)
    campaign = await svc.create(principal, {"name": ..., "filters": {...}, "design": {...}})
    job = await svc.start_run(principal, campaign.id)          # audited: filters, seed, who ran it
    report, job = await svc.report(principal, campaign.id)
    body, media_type, filename = await svc.export(principal, campaign.id, "xlsx")

The job handler (`runs(services)`) is registered by `work.build_engine`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aggregator.campaigns import Campaign, CampaignInvalid, CampaignStore, parse_design, parse_population
from aggregator.campaigns.report import EXPORT_COLUMNS, EXPORT_WIDTHS, Report, build_report, export_rows
from aggregator.campaigns.run import CampaignRuns
from aggregator.jobs import Job, JobStore
from aggregator.sheets import CSV_MEDIA_TYPE, XLSX_MEDIA_TYPE, csv_text, xlsx_bytes
from aggregator.web.access import allow
from aggregator.web.problems import RouteNotFound, Unprocessable, has_control_characters
from aggregator.web.roles import Principal, Role

if TYPE_CHECKING:
    from aggregator.web.services import Services

#: Who may create, run and read campaigns.
CAMPAIGNERS = frozenset({Role.REGULATOR, Role.ADMIN})
CAMPAIGN_ACTION = "抽查 / spot-check campaigns"
MAX_NAME = 200


def runs(services: Services) -> CampaignRuns:
    """The "campaign_run" job handler's owner (its `run`)."""
    engine = services.gateway.store.engine
    return CampaignRuns(services.gateway, CampaignStore(engine), audit=services.audit)


def campaigns_of(services: Services) -> CampaignService:
    """The campaign service of `services` (made once, kept on it)."""
    svc = getattr(services, "_campaign_service", None)
    if svc is None:
        svc = CampaignService(services)
        services._campaign_service = svc  # type: ignore[attr-defined]
    return svc


class CampaignService:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.store = CampaignStore(services.gateway.store.engine)
        self.jobs = JobStore(services.gateway.store.engine)

    @staticmethod
    def allow(principal: Principal) -> None:
        allow(principal, CAMPAIGNERS, CAMPAIGN_ACTION)

    async def create(self, principal: Principal, body: Any) -> Campaign:
        """A campaign from `{"name", "filters", "design"}`; the sample is drawn now. 422 for bad input."""
        self.allow(principal)
        if not isinstance(body, dict):
            raise Unprocessable("请求体应为 JSON 对象", "the body must be a JSON object")
        unknown = sorted(set(body) - {"name", "filters", "design"})
        if unknown:
            raise Unprocessable(f"未知字段：{', '.join(unknown)}", f"unknown fields: {', '.join(unknown)}")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise Unprocessable("请填写抽查名称（用途）", "name the campaign (what it is for)")
        name = name.strip()
        if len(name) > MAX_NAME or has_control_characters(name):
            raise Unprocessable(f"名称不超过 {MAX_NAME} 字且不含控制字符", f"name: at most {MAX_NAME} characters, no control characters")
        try:
            population = parse_population(body.get("filters"))
            design = parse_design(body.get("design"))
        except CampaignInvalid as e:
            raise Unprocessable(e.zh, e.en) from None
        return await self.store.create(
            name,
            population,
            design,
            organisation=principal.label or "",
            created_by=principal.key_id or "",
            created_role=principal.role.value,
        )

    async def list(self, principal: Principal) -> list[Campaign]:
        self.allow(principal)
        return await self.store.list()

    async def get(self, principal: Principal, campaign_id: str) -> Campaign:
        self.allow(principal)
        campaign = await self.store.get(campaign_id) if len(campaign_id) <= 32 else None
        if campaign is None:
            raise RouteNotFound(f"抽查 {campaign_id[:40]} 不存在 (no such campaign)")
        return campaign

    async def job(self, campaign: Campaign) -> Job | None:
        if campaign.job_id is None:
            return None
        return await self.jobs.get(campaign.job_id)

    async def start_run(self, principal: Principal, campaign_id: str) -> Job:
        """Queue the campaign's run (an unfinished run carries on; a running one is returned as it is)."""
        campaign = await self.get(principal, campaign_id)
        job = await self.job(campaign)
        if job is not None and job.active:
            return job
        total, done = await self.store.progress(campaign.id)
        if self.services.work is None:
            raise RuntimeError("no job engine in this process")
        job = await self.services.work.start(
            principal, "campaign_run", subject=campaign.id, params={"campaign": campaign.id}, total=total
        )
        await self.store.set_job(campaign.id, job.id)
        try:
            await self._audit_run(principal, campaign, job, total, done)
        except Exception:
            await self.jobs.cancel(job.id)  # no run without its audit entry
            raise
        return job

    async def _audit_run(self, principal: Principal, campaign: Campaign, job: Job, total: int, done: int) -> None:
        await self.services.audit.record_action(
            principal,
            "campaign_run",
            detail={
                "campaign": campaign.id,
                "name": campaign.name[:100],
                "filters": campaign.population.model_dump(mode="json", exclude_defaults=True),
                "design": campaign.design.model_dump(mode="json"),
                "seed": campaign.seed,
                "population": campaign.population_count,
                "sample": total,
                "already_checked": done,
            },
            purpose=f"抽查 {campaign.name}"[:500],
            job_id=job.id,
        )

    async def report(self, principal: Principal, campaign_id: str) -> tuple[Campaign, Report, Job | None]:
        campaign = await self.get(principal, campaign_id)
        items = await self.store.items(campaign.id)
        return campaign, build_report(campaign, items), await self.job(campaign)

    async def export(self, principal: Principal, campaign_id: str, fmt: str) -> tuple[bytes | str, str, str]:
        """(body, media type, file name) of the report as CSV or XLSX, with Chinese headers."""
        campaign = await self.get(principal, campaign_id)
        columns, rows = export_rows(campaign, await self.store.items(campaign.id))
        name = f"campaign-{campaign.id}"
        if fmt == "xlsx":
            return xlsx_bytes(columns, rows, widths=EXPORT_WIDTHS, sheet="抽查结果"), XLSX_MEDIA_TYPE, f"{name}.xlsx"
        return csv_text(columns, rows), CSV_MEDIA_TYPE, f"{name}.csv"


__all__ = ["CAMPAIGNERS", "EXPORT_COLUMNS", "CampaignService", "campaigns_of", "runs"]
