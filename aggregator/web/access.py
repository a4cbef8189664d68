"""Small request helpers shared by the API handlers and the pages: the services, who is asking, may they.

    svc = services(request)                             # the service layer (built by the app's lifespan)
    principal = caller(request)                         # set by the Gate middleware; anonymous by default
    allow(principal, {Role.EMPLOYER, Role.ADMIN}, "批量核验 / batch verification")
    form = await receive_form(request, file_limit=svc.config.upload_limit)   # multipart, file to disk
    body = await read_json(request, MonitoringBody)     # JSON, validated: 415 / 400 / 422 as problems

An endpoint's role check is declared on it (`endpoint.Access`), which calls `allow` before the handler runs.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any, TypeVar, overload

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from aggregator.web.multipart import Multipart, receive_multipart
from aggregator.web.problems import AuthRequired, BadRequest, Forbidden, Unprocessable, UnsupportedMediaType
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


M = TypeVar("M", bound=BaseModel)


def parse_json(body: bytes, content_type: str) -> Any:
    """A JSON request body: 415 for another media type, 400 for text that is not JSON (an empty body is null)."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype not in ("application/json", "") and not ctype.endswith("+json"):
        raise UnsupportedMediaType(ctype, "application/json")
    try:
        return json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest("请求体不是有效的 JSON", f"the body is not valid JSON: {e}") from e


def validate_json(data: Any, model: type[M]) -> M:
    """`data` as `model`, or 422 naming every field that is wrong."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errors = [{"loc": ".".join(str(p) for p in err["loc"]), "msg": err["msg"]} for err in e.errors()]
        raise Unprocessable("请求内容不符合要求", "the request does not match the schema", extra={"errors": errors}) from e


@overload
async def read_json(request: Request) -> Any: ...
@overload
async def read_json(request: Request, model: type[M]) -> M: ...
async def read_json(request: Request, model: type[M] | None = None) -> Any:
    """The request's JSON body (`parse_json`), validated as `model` when one is given (`validate_json`)."""
    data = parse_json(await request.body(), request.headers.get("content-type", ""))
    return data if model is None else validate_json(data, model)
