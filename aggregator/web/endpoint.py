"""An endpoint of the API, declared once: its route, who may call it, what it reads, what it answers and which
problems it raises. `/openapi.json` and the docs page are built from these declarations (`openapi.py`), as
Litestar derives operations from its handlers; nothing about an endpoint is written twice.

    @endpoint(
        "GET", "/api/v1/audit", name="api_audit", operation_id="getAudit",
        reply=Reply.json(AuditEntries, "Entries"),
        access=Access.only(AUDITORS, "查看审计日志 / read the audit log"),
        params=(LIMIT, KEY_ID),
        raises=(Unprocessable,),
    )
    async def get_audit(request: Request) -> Response:
        \"\"\"The audit log, newest first (regulator, admin).

        Longer description for the docs ...\"\"\"
        limit = LIMIT.read(request)
        ...

    routes = [get_audit.route(), ...]       # EndpointRoute: a Starlette Route that keeps its declaration

The docstring's first paragraph is the operation's summary, the rest its description. `Access` decides who may
call it: a route that not everyone may call checks the caller's role before the handler runs (401 for the
public, 403 for a key of another role); everything else is built once, when the routes are made, so a
declaration costs nothing per request. Parameters (`Text`, `Integer`, `Choice`, `path_param`, `Purpose`) both
document themselves and read the request, so a limit such as "at most 64 characters" lives in one place.

Problems the handler raises are listed in `raises`; those of the layers around it are added by `openapi.py`:
the Gate's (an invalid key, a rate limit, a body too large) for every endpoint behind it, 401/403 for an
endpoint some roles may not call, 404 for one with path parameters.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aggregator.web.access import allow, caller
from aggregator.web.problems import Unprocessable
from aggregator.web.roles import Role

Handler = Callable[[Request], Awaitable[Response]]
# A body or answer: a pydantic model, or `str` for text (CSV, Prometheus) described as a plain string.
Content = type[BaseModel] | type[str]


# --- who may call it ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """Who may call an endpoint. `roles` None: anyone (with or without a key); `keyed` False: a probe, which
    the Gate neither authenticates nor rate limits (`middleware.UNLIMITED_PREFIXES`)."""

    roles: frozenset[Role] | None = None
    action: str = ""  # how a refusal names what was refused: "批量核验 / batch verification"
    keyed: bool = True

    @classmethod
    def only(cls, roles: Iterable[Role], action: str) -> Access:
        return cls(frozenset(roles), action)


ANYONE = Access()
PROBE = Access(keyed=False)


# --- what it reads ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """A query, path or header parameter, as the API description shows it."""

    name: str
    description: str
    where: Literal["query", "path", "header"] = "query"
    required: bool = False
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    example: Any = None

    def openapi(self) -> list[dict[str, Any]]:
        out: dict[str, Any] = {
            "name": self.name,
            "in": self.where,
            "required": self.required,
            "description": self.description,
            "schema": dict(self.schema),
        }
        if self.example is not None:
            out["example"] = self.example
        return [out]

    def raw(self, request: Request) -> str | None:
        if self.where == "path":
            return request.path_params.get(self.name)  # type: ignore[no-any-return]
        if self.where == "header":
            return request.headers.get(self.name)
        return request.query_params.get(self.name)


def path_param(name: str, description: str, *, example: Any = None, **schema: Any) -> Param:
    """A path parameter (always required); `schema` defaults to a string."""
    return Param(name, description, "path", True, schema or {"type": "string"}, example)


@dataclass(frozen=True)
class Text(Param):
    """A short optional text parameter (a name, an ID number): blank is absent, longer than `max_length` is 422."""

    max_length: int = 64

    def __post_init__(self) -> None:
        object.__setattr__(self, "schema", {"type": "string", "maxLength": self.max_length})

    def read(self, request: Request) -> str | None:
        value = request.query_params.get(self.name)
        if value is None or not value.strip():
            return None
        if len(value) > self.max_length:
            raise Unprocessable(
                f"参数 {self.name} 不超过 {self.max_length} 字",
                f"parameter {self.name} must be at most {self.max_length} characters",
            )
        return value.strip()


@dataclass(frozen=True)
class Integer(Param):
    """An optional integer query parameter within [minimum, maximum]; absent or blank is `default`."""

    default: int = 0
    minimum: int = 0
    maximum: int = 0

    def __post_init__(self) -> None:
        schema = {"type": "integer", "minimum": self.minimum, "maximum": self.maximum, "default": self.default}
        object.__setattr__(self, "schema", schema)

    def read(self, request: Request) -> int:
        raw = request.query_params.get(self.name)
        if raw is None or raw == "":
            return self.default
        try:
            value = int(raw)
        except ValueError as e:
            raise Unprocessable(f"参数 {self.name} 应为整数", f"parameter {self.name} must be an integer") from e
        if not self.minimum <= value <= self.maximum:
            raise Unprocessable(
                f"参数 {self.name} 应在 {self.minimum} 与 {self.maximum} 之间",
                f"parameter {self.name} must be {self.minimum}..{self.maximum}",
            )
        return value


@dataclass(frozen=True)
class Choice(Param):
    """An optional query parameter that is one of `choices`; absent or blank is None."""

    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "schema", {"type": "string", "enum": list(self.choices)})

    def read(self, request: Request) -> str | None:
        value = request.query_params.get(self.name)
        if not value:
            return None
        if value not in self.choices:
            raise Unprocessable(
                f"{self.name} 只能是 {' 或 '.join(self.choices)}", f"{self.name} must be {' or '.join(self.choices)}"
            )
        return value


@dataclass(frozen=True)
class Purpose:
    """Why a lookup is made: the `X-Purpose` header (UTF-8, optionally percent-encoded), else the `purpose`
    query parameter, else a form or body field. Regulators must give one (`service.require_purpose`)."""

    max_length: int = 500

    def openapi(self) -> list[dict[str, Any]]:
        schema = {"type": "string", "maxLength": self.max_length}
        return [
            {
                "name": "purpose",
                "in": "query",
                "required": False,
                "description": "用途 Why the lookup is made (required for regulators)",
                "schema": schema,
            },
            {
                "name": "X-Purpose",
                "in": "header",
                "required": False,
                "description": "用途, as a header (UTF-8, may be percent-encoded); wins over ?purpose=",
                "schema": schema,
            },
        ]

    def read(self, request: Request, form_value: str | None = None) -> str | None:
        header = request.headers.get("x-purpose")
        text: str | None = None
        if header:
            text = unquote(header.encode("latin-1").decode("utf-8", "replace"))
        text = text or request.query_params.get("purpose") or form_value
        if text and len(text) > self.max_length:
            raise Unprocessable(
                f"用途说明不超过 {self.max_length} 字", f"purpose must be at most {self.max_length} characters"
            )
        return text.strip() or None if text else None


PURPOSE = Purpose()


@dataclass(frozen=True)
class Body:
    """A request body: media type -> its model (`str` for plain text such as CSV); `example` for the docs."""

    content: Mapping[str, Content]
    required: bool = True
    example: Any = None


# --- what it answers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A successful answer: its status, media type(s) -> model, description and response headers."""

    status: int
    content: Mapping[str, Content]
    description: str
    headers: Mapping[str, str] = field(default_factory=dict)  # name -> what it says

    @classmethod
    def json(cls, model: type[BaseModel], description: str, status: int = 200, **more: Content) -> Reply:
        """JSON (and, keyed by media type with `_` for `/`, other forms: `text_csv=str`)."""
        content: dict[str, Content] = {"application/json": model}
        content.update({k.replace("_", "/"): v for k, v in more.items()})
        return cls(status, content, description)


# --- the declaration ----------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Endpoint:
    """Everything the API description says about one operation, and the handler that serves it."""

    method: str
    path: str
    name: str  # the route's name
    operation_id: str
    handler: Handler
    replies: tuple[Reply, ...]
    access: Access = ANYONE
    params: tuple[Param | Purpose, ...] = ()
    body: Body | None = None
    raises: tuple[type[BaseException], ...] = ()

    @property
    def summary(self) -> str:
        return _doc(self.handler)[0]

    @property
    def description(self) -> str:
        return _doc(self.handler)[1]

    def guarded(self) -> Handler:
        """The handler, behind a role check when not everyone may call it (built once, at start-up)."""
        handler, access = self.handler, self.access
        if access.roles is None:
            return handler
        roles, action = access.roles, access.action

        @functools.wraps(handler)
        async def guarded(request: Request) -> Response:
            allow(caller(request), roles, action)
            return await handler(request)

        return guarded

    def route(self) -> EndpointRoute:
        return EndpointRoute(self)


class EndpointRoute(Route):
    """A Starlette route that keeps its endpoint's declaration (`openapi.py` walks the app's routes for them)."""

    def __init__(self, declared: Endpoint) -> None:
        super().__init__(declared.path, declared.guarded(), methods=[declared.method], name=declared.name)
        self.declared = declared
        declared_paths = {p.name for p in declared.params if isinstance(p, Param) and p.where == "path"}
        if declared_paths != set(self.param_convertors):
            raise ValueError(
                f"{declared.operation_id}: path parameters {sorted(declared_paths)} do not match {self.path}"
            )


def endpoint(
    method: str,
    path: str,
    *,
    name: str,
    operation_id: str,
    reply: Reply | None = None,
    replies: Sequence[Reply] = (),
    access: Access = ANYONE,
    params: Sequence[Param | Purpose] = (),
    body: Body | None = None,
    raises: Sequence[type[BaseException]] = (),
) -> Callable[[Handler], Endpoint]:
    """Declare `handler` as the operation `method path` (see the module docstring)."""

    def declare(handler: Handler) -> Endpoint:
        if not inspect.getdoc(handler):
            raise ValueError(f"{handler.__name__}: an endpoint's docstring is its summary; write one")
        return Endpoint(
            method=method.upper(),
            path=path,
            name=name,
            operation_id=operation_id,
            handler=handler,
            replies=(*((reply,) if reply else ()), *replies),
            access=access,
            params=tuple(params),
            body=body,
            raises=tuple(raises),
        )

    return declare


@functools.cache
def _doc(handler: Handler) -> tuple[str, str]:
    """(summary, description) from a docstring: the first paragraph, then the others, each joined into a line."""
    paragraphs = [" ".join(p.split()) for p in (inspect.getdoc(handler) or "").split("\n\n") if p.strip()]
    summary = paragraphs[0].removesuffix(".") if paragraphs else ""
    return summary, "\n\n".join(paragraphs[1:])
