"""Rosters as the roles may keep them: create, list, read, edit members, start a verification run, read its
results (JSON pages, CSV, XLSX) and the roster's events.

    roster, parsed = await svc.rosters.create_from_file(principal, path, name="二标段", partial=False)
    roster = await svc.rosters.get(principal, roster_id)          # RouteNotFound (404) unless it is theirs
    job = await svc.rosters.start_run(principal, roster_id)        # services.work.start_roster_run (202)
    job, page = await svc.rosters.results(principal, roster_id, job_id=None, page=1)
    body, media_type, filename = await svc.rosters.export(principal, roster_id, job_id=None, fmt="xlsx", lang="zh")

Who: employers (and admin keys, as their own organisation: `roles.ROSTER_KEEPERS`); an organisation is the
label of the key (keys with one label are one organisation). Another organisation's roster, job or member is a
404, exactly as if it did not exist, so that ids cannot be probed; regulators, departments and the public are
refused by the endpoints' role check before anything is read (401/403). Nothing here knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from aggregator.jobs import Job
from aggregator.records.report import UnreadableFile
from aggregator.records.schema import EVENT_TYPES
from aggregator.rosters import export
from aggregator.rosters.parse import MemberIn, RosterFile, check_member, parse_members, read_roster_file
from aggregator.rosters.store import MAX_PER_PAGE, Event, Member, Page, Roster, RosterStore
from aggregator.sheets import CSV_MEDIA_TYPE, XLSX_MEDIA_TYPE
from aggregator.web.problems import RosterRejected, RouteNotFound, Unprocessable
from aggregator.web.roles import ROSTER_KEEPERS, Principal

if TYPE_CHECKING:
    from aggregator.web.services import Services

MAX_NAME = 200


def organisation_of(principal: Principal) -> str:
    """The organisation a key acts for: its label (the same rule as `services.work`)."""
    return principal.label or ""


def job_view(job: Job, now: datetime | None = None) -> dict[str, Any]:
    """A job as the API and the page show it: status, done/total, rows per second and the seconds left."""
    now = now or datetime.now(UTC)
    rate = job.rate(now)
    eta = job.eta_s(now)
    return {
        "id": job.id,
        "kind": job.kind,
        "roster_id": job.subject,
        "status": job.status,
        "done": job.done,
        "total": job.total,
        "rows_per_s": round(rate, 2) if rate is not None else None,
        "eta_s": round(eta, 1) if eta is not None else None,
        "counts": job.counts,
        "error": job.error,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def result_view(row: Any) -> dict[str, Any]:
    """One member's result in a results page (JSON)."""
    r = row.result
    return {
        "ref": row.member.ref,
        "number": row.member.number,
        "name": row.member.name,
        "team": row.member.team,
        "verdict": r.get("verdict") or row.verdict,
        "outcome": row.outcome,
        "verdict_reason": r.get("verdict_reason"),
        "name_check": r.get("name_check"),
        "name_matches": r.get("name_matches"),
        "complete": r.get("complete"),
        "days_to_expiry": r.get("days_to_expiry"),
        "certificates": [
            {k: c.get(k) for k in ("department", "number", "status", "valid_until", "kind", "operation_item")}
            for c in r.get("certificates") or []
        ],
        "error": r.get("error"),
        "checked_at": row.checked_at.isoformat(),
    }


def _rejected(parsed: RosterFile) -> RosterRejected:
    n = parsed.problems_total
    return RosterRejected(
        f"名单未创建：{n} 处问题（其中重复 {parsed.duplicates} 行），详见报告",
        f"no roster was created: {n} problem(s) ({parsed.duplicates} duplicate row(s)), see the report",
        parsed.report(),
    )


def roster_name(name: str | None) -> str:
    text = " ".join((name or "").split())
    if not text:
        raise Unprocessable("请为名单命名（name）", "give the roster a name (name)")
    if len(text) > MAX_NAME:
        raise Unprocessable(f"名单名称不超过 {MAX_NAME} 字", f"a roster's name is at most {MAX_NAME} characters")
    return text


class RosterService:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.store = RosterStore(services.gateway.store.engine)

    # --- rosters ---------------------------------------------------------------------------------------------

    async def _create(self, principal: Principal, name: str, parsed: RosterFile, partial: bool) -> Roster:
        if parsed.problems_total and not partial:
            raise _rejected(parsed)
        if not parsed.members:
            if parsed.problems_total:
                raise _rejected(parsed)
            raise Unprocessable("名单中没有成员", "the roster has no members")
        roster = await self.store.create(
            organisation=organisation_of(principal),
            name=roster_name(name),
            created_by=principal.key_id or "",
            members=parsed.members,
        )
        await self._audit(principal, roster.id, "created", members=roster.members, skipped=parsed.problems_total)
        return roster

    async def _audit(self, principal: Principal, roster_id: str, change: str, **more: Any) -> None:
        """One "roster_change" audit entry: what changed, in counts, refs and settings; never a member's name,
        number or ID number (the roster's name is the employer's own words, so it is left out too)."""
        await self.services.audit.record_action(
            principal, "roster_change", detail={"roster": roster_id, "change": change, **more}
        )

    async def create_from_file(
        self, principal: Principal, path: Path, *, name: str | None, partial: bool = False
    ) -> tuple[Roster, RosterFile]:
        """A roster from an uploaded file (read off the event loop: a workbook in the defensive child process).
        Any invalid or duplicate row refuses the whole roster (422 with the report) unless `partial`."""
        roster_name(name)  # before reading a byte
        try:
            parsed = await run_in_threadpool(read_roster_file, path)
        except UnreadableFile as e:  # the file as a whole: its type, encoding, header, or a workbook refused
            report = RosterFile(problems=e.problems, problems_total=len(e.problems)).report()
            raise RosterRejected(f"名单未创建：{e}", f"no roster was created: {e}", report) from e
        return await self._create(principal, name or "", parsed, partial), parsed

    async def create_from_members(
        self, principal: Principal, items: Sequence[Mapping[str, Any]], *, name: str | None, partial: bool = False
    ) -> tuple[Roster, RosterFile]:
        roster_name(name)
        parsed = parse_members(items)
        return await self._create(principal, name or "", parsed, partial), parsed

    async def list(self, principal: Principal) -> list[Roster]:
        return await self.store.list(organisation_of(principal))

    async def get(self, principal: Principal, roster_id: str) -> Roster:
        """The principal's roster; another organisation's, or none, is RouteNotFound (404)."""
        if principal.role not in ROSTER_KEEPERS or principal.key_id is None:
            raise RouteNotFound(f"roster {roster_id}")
        roster = await self.store.get(roster_id, organisation=organisation_of(principal)) if len(roster_id) <= 32 else None
        if roster is None:
            raise RouteNotFound(f"roster {roster_id}")
        return roster

    # --- members ---------------------------------------------------------------------------------------------

    async def members(self, principal: Principal, roster_id: str, *, page: int, per_page: int) -> Page:
        await self.get(principal, roster_id)
        return await self.store.members(roster_id, page=page, per_page=per_page)

    def _member(self, item: Mapping[str, Any]) -> MemberIn:
        checked = check_member(item)
        if isinstance(checked, list):
            raise RosterRejected(
                "成员信息有误，未保存", "the member has problems; nothing was saved",
                {"problems_total": len(checked), "problems": [p.model_dump() for p in checked]},
            )
        return checked

    async def add_member(self, principal: Principal, roster_id: str, item: Mapping[str, Any]) -> Member:
        await self.get(principal, roster_id)
        if not item.get("ref"):
            raise Unprocessable("新成员须有工号（ref）", "a member added later needs its reference (ref)")
        member = await self.store.add_member(roster_id, self._member(item))
        await self._audit(principal, roster_id, "member_added", ref=member.ref, monitored=member.monitored)
        return member

    async def update_member(self, principal: Principal, roster_id: str, ref: str, item: Mapping[str, Any]) -> Member:
        """Change a member's fields (those given; the others stay); its reference stays."""
        await self.get(principal, roster_id)
        current = await self.store.member(roster_id, ref)
        if current is None:
            raise RouteNotFound(f"member {ref}")
        merged = {"number": current.number, "name": current.name, "id_number": current.id_number,
                  "team": current.team, **{k: v for k, v in item.items() if k != "ref"}, "ref": ref}
        updated = await self.store.update_member(roster_id, ref, self._member(merged))
        if updated is None:
            raise RouteNotFound(f"member {ref}")
        fields = sorted(k for k in ("number", "name", "id_number", "team") if getattr(current, k) != getattr(updated, k))
        await self._audit(principal, roster_id, "member_updated", ref=ref, fields=fields)
        return updated

    async def remove_member(self, principal: Principal, roster_id: str, ref: str) -> None:
        await self.get(principal, roster_id)
        if not await self.store.remove_member(roster_id, ref):
            raise RouteNotFound(f"member {ref}")
        await self._audit(principal, roster_id, "member_removed", ref=ref)

    # --- runs ------------------------------------------------------------------------------------------------

    async def set_monitoring(self, principal: Principal, roster_id: str, settings: Any) -> Roster:
        """Monitor a roster or stop (see `aggregator.rosters.schedule`); the roster as it is now."""
        import time

        import sqlalchemy as sa

        from aggregator.records.database import write_transaction
        from aggregator.records.schema import rosters
        from aggregator.rosters.schedule import start_monitoring, stop_monitoring

        roster = await self.get(principal, roster_id)
        engine = self.services.gateway.store.engine
        warn = sorted({int(d) for d in settings.expiry_warn_days if 0 < int(d) <= 3650}, reverse=True)
        async with write_transaction(engine) as conn:
            await conn.execute(
                sa.update(rosters)
                .where(rosters.c.id == roster.id)
                .values(expiry_warn_days=warn, inconclusive_after_days=settings.inconclusive_after_days)
            )
        if settings.enabled:
            await start_monitoring(engine, roster.id, every_h=settings.every_h, now=time.time())
        else:
            await stop_monitoring(engine, roster.id)
        now = await self.get(principal, roster_id)
        await self._audit(principal, roster.id, "monitoring", enabled=now.monitor, every_h=now.monitor_every_h,
                          expiry_warn_days=now.expiry_warn_days, inconclusive_after_days=now.inconclusive_after_days,
                          members=now.members)
        return now

    async def start_run(self, principal: Principal, roster_id: str) -> Job:
        """Queue a verification of every member (the job engine runs it; the caller polls the job)."""
        roster = await self.get(principal, roster_id)
        if roster.members == 0:
            raise Unprocessable("名单中没有成员", "the roster has no members")
        return await self.services.work.start_roster_run(principal, roster.id)

    async def job(self, principal: Principal, job_id: str) -> Job:
        """A job of the principal's organisation (any kind it may start); else RouteNotFound."""
        job = await self.services.work.job_for(principal, job_id) if len(job_id) <= 32 else None
        if job is None:
            raise RouteNotFound(f"job {job_id}")
        return job

    async def cancel(self, principal: Principal, job_id: str) -> Job:
        await self.job(principal, job_id)
        job = await self.services.work.cancel(principal, job_id)
        if job is None:
            raise RouteNotFound(f"job {job_id}")
        return job

    async def _run_of(self, principal: Principal, roster_id: str, job_id: str | None) -> Job | None:
        """The run asked for (one of this roster's), else the roster's newest; None when it never ran."""
        await self.get(principal, roster_id)
        job_id = job_id or await self.store.latest_run(roster_id)
        if job_id is None:
            return None
        job = await self.job(principal, job_id)
        if job.subject != roster_id or job.kind != "roster_verify":
            raise RouteNotFound(f"job {job_id}")
        return job

    async def results(
        self, principal: Principal, roster_id: str, *, job_id: str | None, page: int, per_page: int = 100
    ) -> tuple[Job | None, Page]:
        job = await self._run_of(principal, roster_id, job_id)
        if job is None:
            return None, Page([], 0, 1, per_page)
        return job, await self.store.results(job.id, page=page, per_page=per_page)

    def reason_words(self) -> export.Reason:
        """Verdict reasons with the sources' names instead of their ids (as the employer page shows them)."""
        from aggregator.web.pages import view

        names = self.services.sources.names()
        return lambda text: view.public_reason(text, [], names)

    async def export(
        self, principal: Principal, roster_id: str, *, job_id: str | None, fmt: str, lang: str | None
    ) -> tuple[bytes | str, str, str]:
        """Every result of the run as a file: (body, media type, file name)."""
        job = await self._run_of(principal, roster_id, job_id)
        rows: list[Any] = []
        if job is not None:
            page = 1
            while True:
                chunk = await self.store.results(job.id, page=page, per_page=MAX_PER_PAGE)
                rows.extend(chunk.items)
                if page >= chunk.pages:
                    break
                page += 1
        reason = self.reason_words()
        stem = f"certq-roster-{roster_id[:8]}"
        if fmt == "xlsx":
            return await run_in_threadpool(export.to_xlsx, rows, lang=lang, reason=reason), XLSX_MEDIA_TYPE, f"{stem}.xlsx"
        return export.to_csv(rows, lang=lang, reason=reason), CSV_MEDIA_TYPE, f"{stem}.csv"

    # --- events ----------------------------------------------------------------------------------------------

    async def events(
        self, principal: Principal, roster_id: str, *, after: int, type: str | None, member: str | None, limit: int
    ) -> tuple[list[Event], int | None]:
        await self.get(principal, roster_id)
        if type is not None and type not in EVENT_TYPES:
            raise Unprocessable(f"事件类型只能是 {', '.join(EVENT_TYPES)}", f"type must be one of {', '.join(EVENT_TYPES)}")
        return await self.store.events(roster_id, after=after, type=type, member=member, limit=limit)
