"""Small request helpers shared by the API handlers and the pages: the services, who is asking, may they.

    svc = services(request)                             # the service layer (built by the app's lifespan)
    principal = caller(request)                         # set by the Gate middleware; anonymous by default
    allow(principal, {Role.EMPLOYER, Role.ADMIN}, "批量核验 / batch verification")
    form = await receive_form(request, file_limit=svc.config.upload_limit)   # multipart, file to disk

An endpoint's role check is declared on it (`endpoint.Access`), which calls `allow` before the handler runs.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.requests import Request

from aggregator.web.multipart import Multipart, receive_multipart
from aggregator.web.problems import AuthRequired, Forbidden
from aggregator.web.roles import Principal, Role
from aggregator.web.services import Services


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


async def receive_form(request: Request, *, file_limit: int) -> Multipart:
    """A multipart/form-data body, its file streamed to the configured upload directory under `file_limit`
    (the caller `discard()`s it when done)."""
    return await receive_multipart(request, dest_dir=services(request).config.upload_dir, file_limit=file_limit)
