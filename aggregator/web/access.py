"""Small request helpers shared by the API routes and the pages: who is asking, may they, and why.

    principal = caller(request)                         # set by the Gate middleware; anonymous by default
    allow(principal, {Role.EMPLOYER, Role.ADMIN}, "批量核验 / batch verification")
    purpose = stated_purpose(request)                   # X-Purpose header or ?purpose=
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import unquote

from starlette.requests import Request

from aggregator.web.problems import AuthRequired, Forbidden, Unprocessable
from aggregator.web.roles import Principal, Role
from aggregator.web.service import Services

MAX_PURPOSE = 500
MAX_PARAM = 64


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def caller(request: Request) -> Principal:
    principal = request.scope.get("state", {}).get("principal")
    return principal if isinstance(principal, Principal) else Principal.anonymous()


def client_address(request: Request) -> str | None:
    ip = request.scope.get("state", {}).get("client_ip")
    return ip if isinstance(ip, str) else (request.client.host if request.client else None)


def allow(principal: Principal, roles: Collection[Role], action: str) -> None:
    """Raise unless `principal` has one of `roles`: 401 for the anonymous public, 403 for a key."""
    if principal.role in roles:
        return
    if principal.is_anonymous:
        raise AuthRequired()
    raise Forbidden(principal.role.value, action)


def stated_purpose(request: Request, form_value: str | None = None) -> str | None:
    """The purpose of a lookup: the X-Purpose header (UTF-8, optionally percent-encoded), else the
    `purpose` query parameter, else a form/body field."""
    header = request.headers.get("x-purpose")
    text: str | None = None
    if header:
        text = unquote(header.encode("latin-1").decode("utf-8", "replace"))
    text = text or request.query_params.get("purpose") or form_value
    if text and len(text) > MAX_PURPOSE:
        raise Unprocessable(f"用途说明不超过 {MAX_PURPOSE} 字", f"purpose must be at most {MAX_PURPOSE} characters")
    return text.strip() or None if text else None


def short_param(request: Request, name: str) -> str | None:
    """A short optional query parameter (name, id_number): at most 64 characters, blank = absent."""
    value = request.query_params.get(name)
    if value is None or not value.strip():
        return None
    if len(value) > MAX_PARAM:
        raise Unprocessable(
            f"参数 {name} 不超过 {MAX_PARAM} 字", f"parameter {name} must be at most {MAX_PARAM} characters"
        )
    return value.strip()
