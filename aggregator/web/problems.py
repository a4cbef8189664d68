"""Errors of the web layer and how every error becomes an RFC 9457 problem document.

    raise Forbidden(role="employer", action="上传记录 / upload records")
    ...
    problem_response(exc)   # application/problem+json: type, title, status, detail, detail_zh, detail_en
    problem_type(Forbidden) # ProblemType(status=403, title="forbidden", document=Problem, ...): for the API description

The wording lives in `aggregator.errors` (the one table): the exceptions here register their text there at
import time, and `problem_response` only asks `describe`. Extra members (a batch report, Retry-After, the
failed readiness checks) travel on the exception as `extra` / `headers`; each class names the pydantic model
of its whole document (`document`), so the API description says exactly which members each problem has.

    WebError
    ├── AuthRequired, InvalidKey                    401
    ├── Forbidden, WrongDepartment                  403
    ├── PurposeRequired                             400
    ├── BadRequest                                  400
    │   └── Unprocessable                           422
    ├── TooManyRequests                             429
    ├── BodyTooLarge                                413
    │   └── UploadTooLarge                          413
    ├── RouteNotFound                               404
    ├── MethodNotAllowed                            405
    ├── ImportRejected                              422
    ├── AlreadyUploaded                             409
    ├── UnsupportedMediaType                        415
    ├── RosterRejected                              422
    └── NotReady                                    503
    (aggregator.audit.AuditUnavailable              503: the audit log cannot be written; fail closed)
"""

from __future__ import annotations

import inspect
import unicodedata
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

from aggregator.audit import AuditUnavailable
from aggregator.errors import describe, register
from aggregator.numbers import NumberError
from aggregator.receipts.keys import SigningKeyMissing
from aggregator.receipts.pdf import ReceiptFontMissing
from aggregator.records.report import BatchReport
from aggregator.rosters.parse import RosterTooLarge
from aggregator.rosters.store import MemberExists
from aggregator.rosters.webhook_urls import UnsafeWebhookUrl

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "/docs#problem-"  # the docs page explains each problem type


# --- the documents ----------------------------------------------------------------------------------------


class Problem(BaseModel):
    """RFC 9457 problem document, with the message in Chinese and English."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="/docs#problem-<title>: where the docs page explains this problem type")
    title: str = Field(description="The problem type, e.g. rate-limited")
    status: int = Field(description="The HTTP status")
    detail: str = Field(description="Chinese, then English in parentheses")
    detail_zh: str
    detail_en: str


class FieldProblem(BaseModel):
    """One part of a request body that does not match its schema."""

    model_config = ConfigDict(extra="forbid")

    loc: str = Field(description="Where, e.g. pairs.0.number")
    msg: str


class InvalidRequestProblem(Problem):
    """Invalid input; for a body that does not match its schema, which parts and why (`errors`)."""

    errors: list[FieldProblem] = Field(default_factory=list)


class RateLimitedProblem(Problem):
    """A rate limit was reached."""

    retry_after_s: int = Field(description="Seconds until a retry fits (as Retry-After)")
    limit_per_minute: int
    scope: Literal["ip", "key"] = Field(description="Whose window: the client IP's or the key's")


class TooLargeProblem(Problem):
    """A body or upload over its size limit."""

    limit_bytes: int


class ImportRejectedProblem(Problem):
    """An upload that was not imported, with its batch report."""

    report: BatchReport


class AlreadyImportedProblem(Problem):
    """The same file was imported before; where its batch is."""

    batch_id: int
    batch: str = Field(description="The batch's report: /api/v1/uploads/{batch_id}")


class ReadinessChecks(BaseModel):
    """Each dependency's state: ok, not configured, or failed: <why>."""

    model_config = ConfigDict(extra="forbid")

    store: str
    redis: str


class NotReadyProblem(Problem):
    """A dependency does not answer; which one."""

    checks: ReadinessChecks


class WebError(Exception):
    """Base of the web layer's errors: optional extra problem members and response headers."""

    document: ClassVar[type[Problem]] = Problem  # the whole problem document, extra members included
    header_docs: ClassVar[dict[str, tuple[str, str]]] = {}  # response headers it sets: name -> (type, meaning)

    def __init__(self, message: str = "", *, extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
        super().__init__(message or type(self).__name__)
        self.extra = extra or {}
        self.headers = headers or {}


class AuthRequired(WebError):
    """The endpoint needs a key and the request carried none."""

    header_docs: ClassVar[dict[str, tuple[str, str]]] = {"WWW-Authenticate": ("string", 'Bearer realm="certq"')}

    def __init__(self) -> None:
        super().__init__(headers={"WWW-Authenticate": 'Bearer realm="certq"'})


class InvalidKey(WebError):
    """An Authorization header was sent but its key is malformed, unknown or revoked."""

    header_docs: ClassVar[dict[str, tuple[str, str]]] = {"WWW-Authenticate": ("string", 'Bearer realm="certq", error="invalid_token"')}

    def __init__(self) -> None:
        super().__init__(headers={"WWW-Authenticate": 'Bearer realm="certq", error="invalid_token"'})


class Forbidden(WebError):
    """The caller's role may not do this."""

    def __init__(self, role: str, action: str) -> None:
        super().__init__(f"{role}: {action}")
        self.role = role
        self.action = action


class WrongDepartment(WebError):
    """A department key acting on another department's records."""

    def __init__(self, own: str, other: str) -> None:
        super().__init__(f"{own} -> {other}")
        self.own = own
        self.other = other


class PurposeRequired(WebError):
    """A regulator's lookup without a stated purpose."""


class BadRequest(WebError):
    """A request body or parameter that cannot be used; `zh` and `en` say why."""

    def __init__(self, zh: str, en: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(en, extra=extra)
        self.zh = zh
        self.en = en


class Unprocessable(BadRequest):
    """Well-formed but invalid input (422), e.g. too many pairs, a field too long."""

    document = InvalidRequestProblem


def has_control_characters(text: str) -> bool:
    """Whether free text (a purpose, a key label) holds a control character: C0 (tab, CR and LF included:
    they would forge lines in logs and tables), DEL, C1, or a Unicode line or paragraph separator."""
    return any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text)


class TooManyRequests(WebError):
    """A rate limit was reached; retry after `retry_after_s` seconds."""

    document = RateLimitedProblem
    header_docs: ClassVar[dict[str, tuple[str, str]]] = {"Retry-After": ("integer", "Seconds until a retry fits")}

    def __init__(self, scope: str, limit: int, retry_after_s: int) -> None:
        super().__init__(
            f"{scope} limit {limit}/min",
            extra={"retry_after_s": retry_after_s, "limit_per_minute": limit, "scope": scope},
            headers={"Retry-After": str(retry_after_s)},
        )
        self.scope = scope
        self.limit = limit
        self.retry_after_s = retry_after_s


class BodyTooLarge(WebError):
    """The request body passed the size limit (checked while it streams in)."""

    document = TooLargeProblem

    def __init__(self, limit: int) -> None:
        super().__init__(f"limit {limit} bytes", extra={"limit_bytes": limit})
        self.limit = limit


class UploadTooLarge(BodyTooLarge):
    """An uploaded file passed the upload size limit; nothing was imported."""


class RouteNotFound(WebError):
    """No route, or no such resource."""

    def __init__(self, what: str = "") -> None:
        super().__init__(what or "not found")
        self.what = what or "not found"


class MethodNotAllowed(WebError):
    """The route exists but not for this HTTP method."""

    def __init__(self, method: str, allow: str | None) -> None:
        super().__init__(method, headers={"Allow": allow} if allow else {})
        self.method = method


class ImportRejected(WebError):
    """An uploaded records file was rejected (or not imported); the batch report says why."""

    document = ImportRejectedProblem

    def __init__(self, zh: str, en: str, report: dict[str, Any]) -> None:
        super().__init__(en, extra={"report": report})
        self.zh = zh
        self.en = en


class AlreadyUploaded(WebError):
    """The same file (same sha256) was already imported for this department; nothing was added."""

    document = AlreadyImportedProblem

    def __init__(self, batch_id: int, department: str) -> None:
        super().__init__(f"batch {batch_id}", extra={"batch_id": batch_id, "batch": f"/api/v1/uploads/{batch_id}"})
        self.batch_id = batch_id
        self.department = department


class UnsupportedMediaType(WebError):
    """A request body in a format the endpoint does not read."""

    def __init__(self, got: str, accepted: str) -> None:
        super().__init__(got)
        self.got = got or "(none)"
        self.accepted = accepted


class RosterRejectedProblem(Problem):
    """A roster file or member list with invalid rows: nothing was created; every problem by line and column."""

    report: dict[str, Any]


class RosterRejected(WebError):
    """A roster was not created (or a member not saved): its rows have problems (line, column, value, reason)."""

    document = RosterRejectedProblem

    def __init__(self, zh: str, en: str, report: dict[str, Any]) -> None:
        super().__init__(en, extra={"report": report})
        self.zh = zh
        self.en = en


class NotReady(WebError):
    """A dependency (the store, Redis) does not answer."""

    document = NotReadyProblem

    def __init__(self, checks: dict[str, str]) -> None:
        failed = ", ".join(k for k, v in checks.items() if v.startswith("failed"))
        super().__init__(failed, extra={"checks": checks})
        self.failed = failed


# --- the problem types -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProblemType:
    """What the API description says about an exception class: its status, title and document."""

    status: int
    title: str
    document: type[Problem]
    about: str  # the first line of the class's docstring
    headers: dict[str, tuple[str, str]]  # response headers it sets: name -> (type, meaning)


_TYPES: dict[type[BaseException], ProblemType] = {}


def _about(cls: type[BaseException]) -> str:
    return (inspect.getdoc(cls) or cls.__name__).split("\n\n")[0].replace("\n", " ")


def _register(cls: type[BaseException], status: int, exit_code: int, title: str, zh: str, en: str) -> None:
    """Register the wording in the one table (`aggregator.errors`) and the type for the API description."""
    register(cls, status, exit_code, title, zh, en)
    document = getattr(cls, "document", Problem)
    _TYPES[cls] = ProblemType(status, title, document, _about(cls), dict(getattr(cls, "header_docs", {})))


def _described(example: BaseException) -> None:
    """An error whose wording another module registers: its status and title as `describe` gives them."""
    err = describe(example)
    _TYPES[type(example)] = ProblemType(err.status, err.title, Problem, _about(type(example)), {})


def problem_type(cls: type[BaseException]) -> ProblemType:
    """The problem type of an exception class (the most specific registered one, along its MRO)."""
    for c in cls.__mro__:
        found = _TYPES.get(c)
        if found is not None:
            return found
    raise LookupError(f"{cls.__name__} is not a registered problem type")


# Leaf classes first: `describe` takes the first registered class the exception is an instance of.
_register(AuthRequired, 401, 77, "authentication-required", "此功能需要 API 密钥", "this endpoint needs an API key (Authorization: Bearer <key>)")
_register(InvalidKey, 401, 77, "invalid-key", "API 密钥无效或已吊销", "the API key is malformed, unknown or revoked")
_register(Forbidden, 403, 77, "forbidden", "当前角色（{exc.role}）无权执行此操作：{exc.action}", "role {exc.role} may not do this: {exc.action}")
_register(WrongDepartment, 403, 77, "wrong-department", "部门密钥只能操作本部门（{exc.own}）的记录，不能操作 {exc.other}", "a {exc.own} department key may not act on {exc.other} records")
_register(PurposeRequired, 400, 64, "purpose-required", "监管查询须说明用途（X-Purpose 请求头或 purpose 参数）", "regulator lookups must state a purpose (X-Purpose header or purpose parameter)")
_register(Unprocessable, 422, 65, "invalid-request", "{exc.zh}", "{exc.en}")
_register(BadRequest, 400, 64, "bad-request", "{exc.zh}", "{exc.en}")
_register(TooManyRequests, 429, 75, "rate-limited", "请求过于频繁，请 {exc.retry_after_s} 秒后再试", "too many requests ({exc.scope} limit {exc.limit}/min); retry in {exc.retry_after_s} s")
_register(UploadTooLarge, 413, 65, "upload-too-large", "上传文件超过大小上限 {exc.limit} 字节，未导入任何记录", "the uploaded file is larger than {exc.limit} bytes; nothing was imported")
_register(BodyTooLarge, 413, 65, "body-too-large", "请求体超过大小上限 {exc.limit} 字节", "the request body is larger than {exc.limit} bytes")
_register(RouteNotFound, 404, 66, "not-found", "未找到：{exc.what}", "not found: {exc.what}")
_register(MethodNotAllowed, 405, 64, "method-not-allowed", "不支持此请求方法：{exc.method}", "method {exc.method} is not allowed here")
_register(ImportRejected, 422, 65, "import-rejected", "{exc.zh}", "{exc.en}")
# The client went away mid-request (a cut upload, a slow body closed by the server): nobody reads the answer,
# and it is no failure of ours, so it is not logged as one.
_register(ClientDisconnect, 400, 64, "client-disconnected", "客户端已断开连接", "the client disconnected before the request was complete")
_register(AlreadyUploaded, 409, 65, "already-imported", "该文件已导入（批次 {exc.batch_id}），未作任何更改", "this file was already imported for {exc.department} as batch {exc.batch_id}; nothing was added")
_register(UnsupportedMediaType, 415, 65, "unsupported-media-type", "不支持的请求格式 {exc.got}，可用：{exc.accepted}", "unsupported content type {exc.got}; send {exc.accepted}")
_register(RosterRejected, 422, 65, "roster-rejected", "{exc.zh}", "{exc.en}")
_register(NotReady, 503, 69, "not-ready", "服务依赖不可用：{exc.failed}", "dependencies not reachable: {exc.failed}")


_described(NumberError("编号无效 (not a certificate or ID number)"))
_described(AuditUnavailable("the audit log cannot be written"))  # aggregator.audit registers its wording
_described(RosterTooLarge())  # aggregator.rosters registers these two
_described(MemberExists("E001"))
_described(UnsafeWebhookUrl("回调地址指向内部地址", "the URL resolves to an internal address"))  # webhooks
_described(SigningKeyMissing("CERTQ_SIGNING_KEY"))  # receipts (aggregator.receipts) register theirs
_described(ReceiptFontMissing("/usr/share/fonts"))


def problem_body(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The status, problem document and extra headers for any exception."""
    err = describe(exc)
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + err.title,
        "title": err.title,
        "status": err.status,
        "detail": err.text,
        "detail_zh": err.zh,
        "detail_en": err.en,
    }
    headers: dict[str, str] = {}
    if isinstance(exc, WebError):
        body.update(exc.extra)
        headers.update(exc.headers)
    return err.status, body, headers


def problem_response(exc: BaseException) -> JSONResponse:
    """An `application/problem+json` response for `exc`, with its headers (Retry-After, Allow ...)."""
    status, body, headers = problem_body(exc)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)
