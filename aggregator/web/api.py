"""The JSON API, version 1: lookups, batch verification, sources, the recognition catalogue, the audit log.

    GET  /api/v1/certificates/{number}?name=&id_number=    anyone; the answer as the caller's role may see it
    POST /api/v1/verifications                             employer, regulator, admin; JSON or CSV in and out;
                                                           N pairs cost N of the key's per-minute rate limit
    GET  /api/v1/sources                                   anyone; health of every source
    GET  /api/v1/recognition                               anyone; the mutual-recognition catalogue
    GET  /api/v1/audit?limit=&key_id=                      regulator, admin
    GET  /api/v1/whoami                                    anyone; the role the request acts as

Each handler is declared with `endpoint` (what it reads, answers and raises; who may call it): `/openapi.json`
is built from those declarations. Handlers read the request, call the service layer (`services.Services`) and
write the response. Uploads are in `uploads.py`, probes and metrics in `ops.py`. Errors are problem documents
(`problems.py`).
"""

from __future__ import annotations

from typing import Any

import pydantic_core
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aggregator.config import RecognitionCatalogue
from aggregator.numbers import NumberError
from aggregator.web.access import caller, client_address, receive_form, services
from aggregator.web.batch import Pair, VerificationRequest, parse_csv_pairs, parse_json_pairs, rows_to_csv, summary
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


@endpoint(
    "GET",
    "/api/v1/certificates/{number}",
    name="api_certificate",
    operation_id="getCertificate",
    reply=Reply.json(LookupView, "The answer"),
    params=(NUMBER, NAME, ID_NUMBER, PURPOSE),
    raises=(PurposeRequired, NumberError, Unprocessable, AuditUnavailable),
)
async def get_certificate(request: Request) -> Response:
    """证书查询 Look a certificate up (一网查询).

    Asks every source that could hold the number and merges what they say: verdict, certificates, every
    source's outcome and freshness, conflicts, recognitions. Anyone may ask; what is shown depends on the role.
    Lookups with a key are audited. Names are a limited resource: a caller (key; the public: client IP) may
    have 5 distinct names (by default) checked against one certificate per UTC day; beyond that the lookup is
    made without the name and query.name_check is not_checked.
    """
    _, view = await services(request).lookup_for(
        caller(request),
        request.path_params["number"],
        name=NAME.read(request),
        id_number=ID_NUMBER.read(request),
        purpose=PURPOSE.read(request),
        client_ip=client_address(request),
    )
    return AnswerResponse(view, headers=NO_STORE)


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
            raw = form.file.path.read_bytes()
        finally:
            form.discard()
        return parse_csv_pairs(raw, limit=limit), form.fields.get("purpose")
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


@endpoint(
    "GET",
    "/api/v1/audit",
    name="api_audit",
    operation_id="getAudit",
    reply=Reply.json(AuditEntries, "Entries"),
    access=Access.only(AUDITORS, "查看审计日志 / read the audit log"),
    params=(LIMIT, KEY_ID),
    raises=(Unprocessable,),
)
async def get_audit(request: Request) -> Response:
    """审计日志 The audit log, newest first (regulator, admin).

    Who looked up which number, in what role, why, and the verdict; for a name given, what became of it
    (name_check), never the name itself.
    """
    limit = LIMIT.read(request)
    key_id = KEY_ID.raw(request) or None
    if key_id is not None and (len(key_id) > KEY_ID.max_length or "\x00" in key_id):  # PostgreSQL refuses NUL
        raise Unprocessable("key_id 过长或含有无效字符", "key_id is too long or contains a NUL character")
    entries = await services(request).audit.read(limit=limit, key_id=key_id)
    return JSONResponse({"entries": [e.as_dict() for e in entries]}, headers=NO_STORE)


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
