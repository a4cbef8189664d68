"""The JSON API, version 1: lookups, batch verification, sources, the recognition catalogue, the audit log.

    GET  /api/v1/certificates/{number}?name=&id_number=    anyone; the answer as the caller's role may see it
    POST /api/v1/verifications                             employer, regulator, admin; JSON or CSV in and out;
                                                           N pairs cost N of the key's per-minute rate limit
    GET  /api/v1/sources                                   anyone; health of every source
    GET  /api/v1/recognition                               anyone; the mutual-recognition catalogue
    GET  /api/v1/audit?limit=&key_id=&number=&...&cursor=   regulator, admin; searchable, paged, CSV
    GET  /api/v1/whoami                                    anyone; the role the request acts as

Each handler is declared with `endpoint` (what it reads, answers and raises; who may call it): `/openapi.json`
is built from those declarations. Handlers read the request, call the service layer (`services.Services`) and
write the response. Uploads are in `uploads.py`, probes and metrics in `ops.py`. Errors are problem documents
(`problems.py`).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pydantic_core
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aggregator.asof import FutureDate, InvalidDate
from aggregator.audit import ACTIONS, ROLE_ZH, AuditQuery, to_csv
from aggregator.config import RecognitionCatalogue
from aggregator.models import Verdict
from aggregator.numbers import NumberError
from aggregator.web.access import caller, client_address, receive_form, services
from aggregator.web.batch import (
    Pair,
    VerificationRequest,
    is_workbook,
    parse_csv_pairs,
    parse_json_pairs,
    parse_workbook_pairs,
    rows_to_csv,
    summary,
)
from aggregator.web.endpoint import (
    PURPOSE,
    Access,
    Body,
    Choice,
    Integer,
    Reply,
    Text,
    endpoint,
    path_param,
)
from aggregator.web.problems import (
    AuditUnavailable,
    BadRequest,
    Forbidden,
    PurposeRequired,
    TooManyRequests,
    Unprocessable,
    UnsupportedMediaType,
    UploadTooLarge,
)
from aggregator.web.roles import AUDITORS, VERIFIERS
from aggregator.web.schemas import (
    AuditEntries,
    LookupView,
    Sources,
    VerificationForm,
    VerificationResult,
    WhoAmI,
)

NO_STORE = {"Cache-Control": "no-store"}
_CSV_TYPES = ("text/csv", "application/csv", "text/plain")
MAX_PARAM = 64
EXAMPLE_NUMBER = "T110105199003071239"


class AnswerResponse(JSONResponse):
    """A JSONResponse serialised by pydantic-core: the same bytes as Starlette's json.dumps (UTF-8, compact),
    about four times faster on a lookup answer (the busiest route)."""

    def render(self, content: Any) -> bytes:
        return pydantic_core.to_json(content)


# --- lookups ------------------------------------------------------------------------------------------------

NUMBER = path_param(
    "number",
    "证书编号 or 身份证号 (as printed: spaces, dashes and full-width digits are fine)",
    example=EXAMPLE_NUMBER,
    type="string",
    minLength=1,
    maxLength=MAX_PARAM,
)
NAME = Text("name", "持证人姓名: checked against the records", max_length=MAX_PARAM, example="张伟")
ID_NUMBER = Text("id_number", "持证人身份证号, for sources queried by ID number", max_length=MAX_PARAM)
AS_OF = Text(
    "as_of", "某日（YYYY-MM-DD, UTC）: the answer as certq knew it at the end of that day", max_length=10,
    example="2026-08-01",
)


@endpoint(
    "GET",
    "/api/v1/certificates/{number}",
    name="api_certificate",
    operation_id="getCertificate",
    reply=Reply.json(LookupView, "The answer"),
    params=(NUMBER, NAME, ID_NUMBER, AS_OF, PURPOSE),
    raises=(PurposeRequired, NumberError, Unprocessable, AuditUnavailable, InvalidDate, FutureDate),
)
async def get_certificate(request: Request) -> Response:
    """证书查询 Look a certificate up (一网查询).

    Asks every source that could hold the number and merges what they say: verdict, certificates, every
    source's outcome and freshness, conflicts, recognitions. Anyone may ask; what is shown depends on the role.
    Lookups with a key are audited. Names are a limited resource: a caller (key; the public: client IP) may
    have 5 distinct names (by default) checked against one certificate per UTC day; beyond that the lookup is
    made without the name and query.name_check is not_checked. With as_of=YYYY-MM-DD: the answer as certq
    knew it at the end of that day (UTC): per department the upload in force then, per live source its last
    answer by then; `as_of.rests_on` says what each part rests on (a date after today is a 422).
    """
    if (as_of := AS_OF.read(request)) is not None:
        _, view = await services(request).past.lookup_for(
            caller(request),
            request.path_params["number"],
            on=as_of,
            name=NAME.read(request),
            id_number=ID_NUMBER.read(request),
            purpose=PURPOSE.read(request),
            client_ip=client_address(request),
        )
        return AnswerResponse(view, headers=NO_STORE)
    body = await services(request).lookup_json_for(
        caller(request),
        request.path_params["number"],
        name=NAME.read(request),
        id_number=ID_NUMBER.read(request),
        purpose=PURPOSE.read(request),
        client_ip=client_address(request),
    )
    return Response(body, media_type="application/json", headers=NO_STORE)


# --- batch verification -----------------------------------------------------------------------------------

FORMAT = Choice("format", "csv or json (default: by Accept)", choices=("csv", "json"))


def _wants_csv(request: Request) -> bool:
    fmt = FORMAT.read(request)
    if fmt:
        return fmt == "csv"
    return "text/csv" in request.headers.get("accept", "")


async def _read_pairs(request: Request) -> tuple[list[Pair], str | None]:
    config = services(request).config
    limit = config.batch_max
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("application/json", "") or ctype.endswith("+json"):
        return parse_json_pairs(await request.body(), limit=limit)
    if ctype in _CSV_TYPES:
        return parse_csv_pairs(await request.body(), limit=limit), None
    if ctype == "multipart/form-data":
        form = await receive_form(request, file_limit=config.body_limit)
        try:
            if form.file is None:
                raise Unprocessable("缺少名为 file 的 CSV 文件", "no CSV file in a form field named 'file'")
            with form.file.path.open("rb") as f:
                head = f.read(8)
            if is_workbook(head):  # XLSX/XLS: the importer's defensive reader, in a child process with limits
                pairs = await run_in_threadpool(parse_workbook_pairs, form.file.path, limit=limit)
            else:
                pairs = parse_csv_pairs(form.file.path.read_bytes(), limit=limit)
        finally:
            form.discard()
        return pairs, form.fields.get("purpose")
    raise UnsupportedMediaType(ctype, "application/json, text/csv, multipart/form-data")


@endpoint(
    "POST",
    "/api/v1/verifications",
    name="api_verifications",
    operation_id="verifyBatch",
    reply=Reply.json(VerificationResult, "One result per pair", text_csv=str),
    access=Access.only(VERIFIERS, "批量核验 / batch verification"),
    params=(FORMAT, PURPOSE),
    body=Body(
        {"application/json": VerificationRequest, "text/csv": str, "multipart/form-data": VerificationForm},
        example={"pairs": [{"number": EXAMPLE_NUMBER, "name": "张伟"}]},
    ),
    raises=(
        BadRequest,
        PurposeRequired,
        Unprocessable,
        UnsupportedMediaType,
        UploadTooLarge,
        TooManyRequests,
        AuditUnavailable,
    ),
)
async def post_verifications(request: Request) -> Response:
    """批量核验 Verify up to 1,000 {number, name} pairs (employer, regulator, admin).

    JSON {pairs:[{number,name}]} or CSV (text/csv body, or a multipart file field `file`) with columns
    number,name[,id_number]. Answers JSON, or CSV with `Accept: text/csv` or `?format=csv` (cells that could run
    as spreadsheet formulas get a leading '). Every pair is answered even if another fails. N pairs cost N of
    the key's per-minute rate limit (a batch that does not fit is a 429 before anything is looked up); names
    beyond the daily per-certificate budget are not checked (name_check: not_checked).
    """
    wants_csv = _wants_csv(request)
    pairs, body_purpose = await _read_pairs(request)
    rows = await services(request).verify_for(
        caller(request),
        pairs,
        purpose=PURPOSE.read(request, body_purpose),
        client_ip=client_address(request),
        rate_state=request.scope.setdefault("state", {}),
    )
    if wants_csv:
        return Response(
            rows_to_csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={**NO_STORE, "Content-Disposition": 'attachment; filename="certq-verification.csv"'},
        )
    body = {"count": len(rows), "summary": summary(rows), "results": [r.as_json() for r in rows]}
    return JSONResponse(body, headers=NO_STORE)


# --- sources, recognition, audit, whoami ---------------------------------------------------------------------


@endpoint("GET", "/api/v1/sources", name="api_sources", operation_id="getSources", reply=Reply.json(Sources, "Sources"))
async def get_sources(request: Request) -> Response:
    """数据源状态 Every source's health: mode, circuit, success rate, p50/p95, last error, newest upload.

    Per configured source: how it is asked (records, api, html, link), its circuit breaker (live sources), the
    recent calls' success rate, latency and outcomes, the last error, and for uploaded records the newest
    quarter and when it was uploaded.
    """
    health = await services(request).sources.health()
    return JSONResponse({"sources": [s.model_dump(mode="json") for s in health]})


@endpoint(
    "GET",
    "/api/v1/recognition",
    name="api_recognition",
    operation_id="getRecognition",
    reply=Reply.json(RecognitionCatalogue, "Catalogue"),
)
async def get_recognition(request: Request) -> Response:
    """对应目录 The mutual-recognition catalogue.

    Which certificate earns what, and where each rule comes from.
    """
    return JSONResponse(services(request).sources.recognition().model_dump(mode="json"))


LIMIT = Integer("limit", "How many entries, newest first", default=100, minimum=1, maximum=1000)
KEY_ID = Text("key_id", "Only this key's lookups", max_length=32)
AUDIT_FILTERS = (
    Text("number", "证书编号 The number looked up (as printed)", max_length=MAX_PARAM),
    Text("holder_id_number", "身份证号 Lookups about this holder (regulators only)", max_length=MAX_PARAM),
    Text("organisation", "机构 Part of the key's label (not its id)", max_length=200),
    Choice("role", "角色 The caller's role", choices=tuple(ROLE_ZH)),
    Choice("action", "操作 What was done", choices=ACTIONS),
    Choice("verdict", "结论 The lookup's verdict", choices=tuple(v.value for v in Verdict)),
    Text("purpose", "用途 The stated purpose contains this", max_length=200),
    Text("since", "From this UTC day (YYYY-MM-DD), included", max_length=10),
    Text("until", "To this UTC day (YYYY-MM-DD), included", max_length=10),
    Text("job_id", "Only this job's lookups (not folded)", max_length=64),
    Choice("group", "1 (default): a job's lookups as one line; 0: every entry", choices=("0", "1")),
    Text("cursor", "From the previous page's `cursor`", max_length=200),
    FORMAT,
)


def _day(request: Request, name: str) -> date | None:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError as e:
        raise Unprocessable(f"{name} 应为日期，如 2026-12-01", f"{name} must be a date such as 2026-12-01") from e


@endpoint(
    "GET",
    "/api/v1/audit",
    name="api_audit",
    operation_id="getAudit",
    reply=Reply.json(AuditEntries, "Entries", text_csv=str),
    access=Access.only(AUDITORS, "查看审计日志 / read the audit log"),
    params=(LIMIT, KEY_ID, *AUDIT_FILTERS),
    raises=(Unprocessable, Forbidden),
)
async def get_audit(request: Request) -> Response:
    """审计日志 The audit log, newest first, searchable (regulator, admin).

    Who looked up which number, in what role, why, and the verdict; for a name given, what became of it
    (name_check), never the name itself; and uploads, keys created and revoked, webhook changes, campaign runs.
    Filters combine (AND). A job's lookups come back as one line with their count unless `group=0` or a `job_id`
    is given. Page with `cursor`; `format=csv` exports the page with Chinese headers. Searching by
    `holder_id_number`, and seeing it, is for regulators only.
    """
    limit = LIMIT.read(request)
    key_id = KEY_ID.raw(request) or None
    if key_id is not None and (len(key_id) > KEY_ID.max_length or "\x00" in key_id):  # PostgreSQL refuses NUL
        raise Unprocessable("key_id 过长或含有无效字符", "key_id is too long or contains a NUL character")
    read = {p.name: p.read(request) for p in AUDIT_FILTERS if p.name not in ("since", "until")}
    query = AuditQuery(
        number=read["number"], holder_id_number=read["holder_id_number"],
        key_ids=(key_id,) if key_id else None, role=read["role"], action=read["action"], verdict=read["verdict"],
        purpose=read["purpose"], since=_day(request, "since"), until=_day(request, "until"), job_id=read["job_id"],
        group_jobs=read["group"] != "0", limit=limit, cursor=read["cursor"],
    )  # fmt: skip
    svc = services(request)
    principal = caller(request)
    page, labels = await svc.audit_search.search_for(principal, query, organisation=read["organisation"])
    if read["format"] == "csv":
        text = to_csv(page.items, labels=labels, show_holder=svc.audit_search.shows_holder(principal))
        headers = {**NO_STORE, "Content-Disposition": 'attachment; filename="audit.csv"'}
        if page.cursor:
            headers["X-Next-Cursor"] = page.cursor
        return Response("\ufeff" + text, media_type="text/csv; charset=utf-8", headers=headers)
    entries = [svc.audit_search.view(item, labels, principal) for item in page.items]
    return JSONResponse({"entries": entries, "cursor": page.cursor}, headers=NO_STORE)


@endpoint("GET", "/api/v1/whoami", name="api_whoami", operation_id="whoami", reply=Reply.json(WhoAmI, "The caller"))
async def get_whoami(request: Request) -> Response:
    """当前身份 The role this request acts as.

    Anonymous requests act as the public.
    """
    p = caller(request)
    return JSONResponse(
        {
            "role": p.role.value,
            "key_id": p.key_id,
            "label": p.label,
            "department": p.department.value if p.department else None,
        }
    )


def api_routes() -> list[Route]:
    return [
        e.route() for e in (get_certificate, post_verifications, get_sources, get_recognition, get_audit, get_whoami)
    ]
