"""Employers' rosters over HTTP: create, read, edit members, verify as a job, results and events.

    POST   /api/v1/rosters                          multipart (file, name[, partial]) or JSON {name, members}
    GET    /api/v1/rosters                          the organisation's rosters
    GET    /api/v1/rosters/{roster_id}              one roster
    GET    /api/v1/rosters/{roster_id}/members      paged (?page=&per_page=)
    POST   /api/v1/rosters/{roster_id}/members      add one (JSON, with its ref)
    PATCH  /api/v1/rosters/{roster_id}/members/{ref}    change fields
    DELETE /api/v1/rosters/{roster_id}/members/{ref}
    POST   /api/v1/rosters/{roster_id}/verify       202 with the job
    GET    /api/v1/jobs/{job_id}                    status, done/total, rows/s, ETA (the owner's organisation)
    POST   /api/v1/jobs/{job_id}/cancel
    GET    /api/v1/rosters/{roster_id}/results      ?job=&format=json|csv|xlsx&lang=zh|en&page=&per_page=
    GET    /api/v1/rosters/{roster_id}/events       ?after=CURSOR&type=&member=&limit=

Employer and admin keys only (`roles.ROSTER_KEEPERS`), each as its organisation (the key's label): another
organisation's roster or job is a 404. Handlers read the request and call `services.rosters`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aggregator.records.report import RowProblem
from aggregator.records.schema import EVENT_TYPES
from aggregator.rosters.parse import MAX_MEMBERS, RosterTooLarge
from aggregator.rosters.store import MemberExists
from aggregator.sheets import XLSX_MEDIA_TYPE
from aggregator.web.access import caller, read_json, receive_form, services
from aggregator.web.endpoint import Access, Body, Choice, Integer, Reply, Text, endpoint, path_param
from aggregator.web.problems import (
    BadRequest,
    NotReady,
    RosterRejected,
    Unprocessable,
    UnsupportedMediaType,
)
from aggregator.web.roles import ROSTER_KEEPERS
from aggregator.web.services.rosters import job_view, result_view

KEEP = Access.only(ROSTER_KEEPERS, "名单 / rosters")
NO_STORE = {"Cache-Control": "no-store"}


# --- what goes in and out ------------------------------------------------------------------------------------


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RosterMemberBody(_Closed):
    """One member: 证书编号 and 姓名 required; 身份证号, 工号 (ref: the employer's own reference) and 部门/班组."""

    number: str = Field(min_length=1, max_length=64, description="证书编号")
    name: str = Field(min_length=1, max_length=64, description="姓名")
    id_number: str | None = Field(None, max_length=64, description="身份证号")
    ref: str | None = Field(None, max_length=64, description="工号/员工编号 (a roster file's members default to L<line>)")
    team: str | None = Field(None, max_length=200, description="部门/班组")


class RosterMemberPatch(_Closed):
    """The fields of a member to change (its ref stays)."""

    number: str | None = Field(None, min_length=1, max_length=64)
    name: str | None = Field(None, min_length=1, max_length=64)
    id_number: str | None = Field(None, max_length=64)
    team: str | None = Field(None, max_length=200)


class RosterCreate(_Closed):
    """A roster given as JSON members (files go as multipart)."""

    name: str = Field(min_length=1, max_length=200)
    members: list[RosterMemberBody] = Field(min_length=1, max_length=MAX_MEMBERS)
    partial: bool = Field(False, description="true: keep the valid members, report the others")


class RosterForm(BaseModel):
    """A roster file (CSV UTF-8/GB18030 or XLSX) and its name."""

    model_config = ConfigDict(extra="ignore")

    file: bytes = Field(description="CSV or XLSX: 证书编号, 姓名[, 身份证号, 工号, 部门/班组]")
    name: str = Field(min_length=1, max_length=200)
    partial: Literal["true", "false"] | SkipJsonSchema[None] = Field(None, description="true: keep the valid rows")


class RosterOut(_Closed):
    id: str
    name: str
    organisation: str
    created_at: str
    members: int
    monitor: bool
    monitor_every_h: int
    expiry_warn_days: list[int]
    inconclusive_after_days: int


class RosterCreated(_Closed):
    """The roster made, and what the file held besides (problems of the rows left out with partial=true)."""

    roster: RosterOut
    rows_total: int
    rows_valid: int
    duplicates: int
    problems_total: int
    problems: list[RowProblem]
    warnings: list[str]


class RosterList(_Closed):
    rosters: list[RosterOut]


class RosterMemberOut(_Closed):
    ref: str
    number: str
    name: str
    id_number: str | None
    team: str | None
    added_at: str
    monitored: bool


class RosterMembers(_Closed):
    members: list[RosterMemberOut]
    total: int
    page: int
    per_page: int
    pages: int


class RosterMemberRemoved(_Closed):
    ref: str
    removed: bool


class JobOut(_Closed):
    """A job: queued, running (done of total, rows per second, seconds left), finished, failed (why), cancelled."""

    id: str
    kind: str
    roster_id: str | None
    status: Literal["queued", "running", "finished", "failed", "cancelled"]
    done: int
    total: int
    rows_per_s: float | None
    eta_s: float | None
    counts: dict[str, int] | None
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None


class RosterCertificate(_Closed):
    department: str | None
    number: str | None
    status: str | None
    valid_until: str | None
    kind: str | None
    operation_item: str | None


class RosterResult(_Closed):
    ref: str
    number: str
    name: str
    team: str | None
    verdict: str | None
    outcome: str
    verdict_reason: str | None
    name_check: str | None
    name_matches: bool | None
    complete: bool | None
    days_to_expiry: int | None
    certificates: list[RosterCertificate]
    error: str | None
    checked_at: str


class RosterResults(_Closed):
    job: JobOut | None = Field(description="The run shown (the newest unless ?job=); null: never verified")
    results: list[RosterResult]
    total: int
    page: int
    per_page: int
    pages: int


class RosterEvent(_Closed):
    id: int = Field(description="The cursor: ask ?after=<id> for the events after it")
    roster_id: str | None
    member_ref: str | None
    type: str
    number: str | None
    department: str | None
    old: str | None
    new: str | None
    detail: dict[str, Any]
    at: str


class RosterEvents(_Closed):
    events: list[RosterEvent]
    next_after: int | None = Field(description="Pass as ?after= for the next page; null: no more now")


# --- parameters ----------------------------------------------------------------------------------------------

ROSTER_ID = path_param("roster_id", "The roster's id", type="string", minLength=1, maxLength=64)
REF = path_param("ref", "The member's reference (工号, or L<line>)", type="string", minLength=1, maxLength=64)
JOB_ID = path_param("job_id", "The job's id", type="string", minLength=1, maxLength=64)
PAGE = Integer("page", "Page number, from 1", default=1, minimum=1, maximum=1_000_000)
PER_PAGE = Integer("per_page", "Items a page", default=100, minimum=1, maximum=1000)
JOB = Text("job", "One run of this roster (default: the newest)", max_length=64)
FORMAT = Choice("format", "json (paged), csv or xlsx (every result)", choices=("json", "csv", "xlsx"))
LANG = Choice("lang", "Headers and words of csv/xlsx: zh (default) or en", choices=("zh", "en"))
AFTER = Integer("after", "Events after this cursor (an event id)", default=0, minimum=0, maximum=2**53)
TYPE = Choice("type", "Only events of this type", choices=EVENT_TYPES)
MEMBER = Text("member", "Only events of this member (ref)", max_length=64)
LIMIT = Integer("limit", "Events a page", default=100, minimum=1, maximum=1000)


def _roster_id(request: Request) -> str:
    return str(request.path_params["roster_id"])


def _work_ready(request: Request) -> None:
    if getattr(services(request), "work", None) is None:
        raise NotReady({"jobs": "failed: the job engine is not running in this process"})




def _created(roster: Any, parsed: Any) -> dict[str, Any]:
    report = parsed.report()
    return {
        "roster": roster.as_json(),
        **{k: report[k] for k in ("rows_total", "rows_valid", "duplicates", "problems_total", "problems", "warnings")},
    }


# --- rosters -------------------------------------------------------------------------------------------------


@endpoint(
    "POST",
    "/api/v1/rosters",
    name="api_rosters_create",
    operation_id="createRoster",
    reply=Reply(201, {"application/json": RosterCreated}, "Created", headers={"Location": "/api/v1/rosters/{id}"}),
    access=KEEP,
    body=Body({"multipart/form-data": RosterForm, "application/json": RosterCreate},
              example={"name": "二标段", "members": [{"number": "T110105199003071239", "name": "张伟", "ref": "E001"}]}),
    raises=(BadRequest, Unprocessable, UnsupportedMediaType, RosterRejected, RosterTooLarge),
)
async def create_roster(request: Request) -> Response:
    """创建名单 Create a roster from a file (CSV, XLSX) or JSON members (employer).

    Columns 证书编号 and 姓名 are required; 身份证号, 工号/员工编号 and 部门/班组 optional; Chinese or English
    headers; up to 100,000 members. Every row is checked (line, column, value, reason) and duplicates (the same
    工号, or the same number and name) are reported: by default any problem refuses the roster (422 with the
    report), partial=true keeps the valid members.
    """
    principal, svc = caller(request), services(request)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await receive_form(request, file_limit=svc.config.upload_limit)
        try:
            if form.file is None or form.file.size == 0:
                raise Unprocessable("缺少名为 file 的名单文件", "no roster file in a form field named 'file'")
            partial = (form.fields.get("partial") or "").lower() == "true"
            roster, parsed = await svc.rosters.create_from_file(
                principal, form.file.path, name=form.fields.get("name"), partial=partial
            )
        finally:
            form.discard()
    else:
        body = await read_json(request, RosterCreate)
        roster, parsed = await svc.rosters.create_from_members(
            principal, [m.model_dump() for m in body.members], name=body.name, partial=body.partial
        )
    return JSONResponse(_created(roster, parsed), status_code=201, headers={"Location": f"/api/v1/rosters/{roster.id}"})


@endpoint("GET", "/api/v1/rosters", name="api_rosters", operation_id="listRosters",
          reply=Reply.json(RosterList, "The organisation's rosters, newest first"), access=KEEP)
async def list_rosters(request: Request) -> Response:
    """名单列表 The organisation's rosters (employer).

    Keys with the same label are one organisation and see the same rosters.
    """
    rosters = await services(request).rosters.list(caller(request))
    return JSONResponse({"rosters": [r.as_json() for r in rosters]}, headers=NO_STORE)


@endpoint("GET", "/api/v1/rosters/{roster_id}", name="api_roster", operation_id="getRoster",
          reply=Reply.json(RosterOut, "The roster"), access=KEEP, params=(ROSTER_ID,))
async def get_roster(request: Request) -> Response:
    """名单 One roster (employer; another organisation's is a 404)."""
    roster = await services(request).rosters.get(caller(request), _roster_id(request))
    return JSONResponse(roster.as_json(), headers=NO_STORE)


# --- members -------------------------------------------------------------------------------------------------


@endpoint("GET", "/api/v1/rosters/{roster_id}/members", name="api_roster_members", operation_id="getRosterMembers",
          reply=Reply.json(RosterMembers, "A page of members"), access=KEEP, params=(ROSTER_ID, PAGE, PER_PAGE),
          raises=(Unprocessable,))
async def get_members(request: Request) -> Response:
    """名单成员 A roster's members, paged (employer)."""
    page = await services(request).rosters.members(
        caller(request), _roster_id(request), page=PAGE.read(request), per_page=PER_PAGE.read(request)
    )
    return JSONResponse({"members": [m.as_json() for m in page.items], "total": page.total, "page": page.page,
                         "per_page": page.per_page, "pages": page.pages}, headers=NO_STORE)


@endpoint("POST", "/api/v1/rosters/{roster_id}/members", name="api_roster_member_add", operation_id="addRosterMember",
          reply=Reply.json(RosterMemberOut, "Added", status=201), access=KEEP, params=(ROSTER_ID,),
          body=Body({"application/json": RosterMemberBody},
                    example={"number": "T110105199003071239", "name": "张伟", "ref": "E001"}),
          raises=(BadRequest, Unprocessable, UnsupportedMediaType, RosterRejected, MemberExists))
async def add_member(request: Request) -> Response:
    """添加成员 Add a member to a roster (employer); its ref (工号) must be new on the roster (else 409)."""
    body = await read_json(request, RosterMemberBody)
    member = await services(request).rosters.add_member(caller(request), _roster_id(request), body.model_dump())
    return JSONResponse(member.as_json(), status_code=201)


@endpoint("PATCH", "/api/v1/rosters/{roster_id}/members/{ref}", name="api_roster_member_update",
          operation_id="updateRosterMember", reply=Reply.json(RosterMemberOut, "Changed"), access=KEEP,
          params=(ROSTER_ID, REF), body=Body({"application/json": RosterMemberPatch}, example={"team": "二班"}),
          raises=(BadRequest, Unprocessable, UnsupportedMediaType, RosterRejected))
async def update_member(request: Request) -> Response:
    """修改成员 Change a member's number, name, ID number or team, found by its ref (employer)."""
    body = await read_json(request, RosterMemberPatch)
    member = await services(request).rosters.update_member(
        caller(request), _roster_id(request), str(request.path_params["ref"]), body.model_dump(exclude_unset=True)
    )
    return JSONResponse(member.as_json())


@endpoint("DELETE", "/api/v1/rosters/{roster_id}/members/{ref}", name="api_roster_member_remove",
          operation_id="removeRosterMember", reply=Reply.json(RosterMemberRemoved, "Removed"), access=KEEP,
          params=(ROSTER_ID, REF))
async def remove_member(request: Request) -> Response:
    """移除成员 Remove a member, found by its ref (employer)."""
    ref = str(request.path_params["ref"])
    await services(request).rosters.remove_member(caller(request), _roster_id(request), ref)
    return JSONResponse({"ref": ref, "removed": True})


# --- monitoring ----------------------------------------------------------------------------------------------


class MonitoringBody(_Closed):
    """Whether a roster is monitored, and how."""

    enabled: bool = Field(description="监控 re-verify every member on a schedule")
    every_h: int = Field(24, ge=1, le=24 * 31, description="每隔几小时 hours between two checks of a member")
    expiry_warn_days: list[int] = Field(
        [90, 30, 7], min_length=0, max_length=6, description="到期提醒 warn this many days before valid-until"
    )
    inconclusive_after_days: int = Field(3, ge=1, le=90, description="an event once the sources stay inconclusive this long")


@endpoint("PUT", "/api/v1/rosters/{roster_id}/monitoring", name="api_roster_monitoring",
          operation_id="setRosterMonitoring", reply=Reply.json(RosterOut, "The roster"), access=KEEP,
          params=(ROSTER_ID,), body=Body({"application/json": MonitoringBody}, example={"enabled": True, "every_h": 24}),
          raises=(BadRequest, Unprocessable, UnsupportedMediaType))
async def set_monitoring(request: Request) -> Response:
    """监控设置 Monitor a roster (employer): each member re-verified every `every_h` hours, the checks spread over
    the period; what changes becomes an event (GET …/events) and a webhook delivery."""
    body = await read_json(request, MonitoringBody)
    roster = await services(request).rosters.set_monitoring(caller(request), _roster_id(request), body)
    return JSONResponse(roster.as_json(), headers=NO_STORE)


# --- runs ----------------------------------------------------------------------------------------------------


@endpoint("POST", "/api/v1/rosters/{roster_id}/verify", name="api_roster_verify", operation_id="verifyRoster",
          reply=Reply(202, {"application/json": JobOut}, "Queued: poll the job",
                      headers={"Location": "The job: /api/v1/jobs/{id}"}),
          access=KEEP, params=(ROSTER_ID,), raises=(Unprocessable, NotReady))
async def verify_roster(request: Request) -> Response:
    """核验名单 Verify every member of a roster, as a background job (employer).

    Answers 202 with the job at once; poll GET /api/v1/jobs/{id} for its progress, then read the results.
    """
    _work_ready(request)
    job = await services(request).rosters.start_run(caller(request), _roster_id(request))
    return JSONResponse(job_view(job), status_code=202, headers={"Location": f"/api/v1/jobs/{job.id}", **NO_STORE})


@endpoint("GET", "/api/v1/jobs/{job_id}", name="api_job", operation_id="getJob", reply=Reply.json(JobOut, "The job"),
          access=KEEP, params=(JOB_ID,), raises=(NotReady,))
async def get_job(request: Request) -> Response:
    """任务进度 A job's status: done of total, rows per second, seconds left (its organisation only)."""
    _work_ready(request)
    job = await services(request).rosters.job(caller(request), str(request.path_params["job_id"]))
    return JSONResponse(job_view(job), headers=NO_STORE)


@endpoint("POST", "/api/v1/jobs/{job_id}/cancel", name="api_job_cancel", operation_id="cancelJob",
          reply=Reply.json(JobOut, "Cancelled (a running job stops at its next step)"), access=KEEP,
          params=(JOB_ID,), raises=(NotReady,))
async def cancel_job(request: Request) -> Response:
    """取消任务 Cancel a job (its organisation only); results already written stay."""
    _work_ready(request)
    job = await services(request).rosters.cancel(caller(request), str(request.path_params["job_id"]))
    return JSONResponse(job_view(job), headers=NO_STORE)


@endpoint("GET", "/api/v1/rosters/{roster_id}/results", name="api_roster_results", operation_id="getRosterResults",
          reply=Reply(200, {"application/json": RosterResults, "text/csv": str, XLSX_MEDIA_TYPE: str},
                      "A page of results (JSON), or every result as CSV or XLSX"),
          access=KEEP, params=(ROSTER_ID, JOB, FORMAT, LANG, PAGE, PER_PAGE), raises=(Unprocessable, NotReady))
async def get_results(request: Request) -> Response:
    """核验结果 A run's results: JSON pages, or CSV / XLSX with Chinese headers and words (lang=en: English).

    One line per member; each certificate's department, number, status and valid-until on the same line of their
    cells; days to expiry, name check and reason. Cells that could run as spreadsheet formulas get a leading '.
    """
    _work_ready(request)
    svc, principal, roster_id = services(request), caller(request), _roster_id(request)
    fmt = FORMAT.read(request) or "json"
    job_id = JOB.read(request)
    if fmt != "json":
        body, media_type, filename = await svc.rosters.export(
            principal, roster_id, job_id=job_id, fmt=fmt, lang=LANG.read(request)
        )
        return Response(body, media_type=media_type,
                        headers={**NO_STORE, "Content-Disposition": f'attachment; filename="{filename}"'})
    job, page = await svc.rosters.results(
        principal, roster_id, job_id=job_id, page=PAGE.read(request), per_page=PER_PAGE.read(request)
    )
    return JSONResponse(
        {"job": job_view(job) if job else None, "results": [result_view(r) for r in page.items], "total": page.total,
         "page": page.page, "per_page": page.per_page, "pages": page.pages},
        headers=NO_STORE,
    )


@endpoint("GET", "/api/v1/rosters/{roster_id}/events", name="api_roster_events", operation_id="getRosterEvents",
          reply=Reply.json(RosterEvents, "Events after the cursor, oldest first"), access=KEEP,
          params=(ROSTER_ID, AFTER, TYPE, MEMBER, LIMIT), raises=(Unprocessable,))
async def get_events(request: Request) -> Response:
    """名单事件 What monitoring saw change on a roster, by cursor (?after=), type and member (employer)."""
    events, next_after = await services(request).rosters.events(
        caller(request), _roster_id(request), after=AFTER.read(request), type=TYPE.read(request),
        member=MEMBER.read(request), limit=LIMIT.read(request),
    )
    return JSONResponse({"events": [e.as_json() for e in events], "next_after": next_after}, headers=NO_STORE)


def roster_routes() -> list[Route]:
    return [
        e.route()
        for e in (create_roster, list_rosters, get_roster, get_members, add_member, update_member, remove_member,
                  set_monitoring, verify_roster, get_job, cancel_job, get_results, get_events)
    ]
