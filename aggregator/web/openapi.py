"""The API description, `/openapi.json` (OpenAPI 3.1), built by walking the app's routes for their endpoint
declarations (`endpoint.py`), as Starlette's `SchemaGenerator` walks `app.routes` and Litestar builds each
operation from its handler. Nothing here names a path, a parameter or a status: each operation comes from its
declaration, its schemas from the pydantic models it names, its error responses from the problems it raises
(`raises=`) and those of the layers around it:

- behind the Gate (every endpoint but the probes): an invalid key (401) and a rate limit (429), the RateLimit-*
  headers on every response, and for an endpoint with a body, a body (or upload) over the size limit (413);
- an endpoint that not every role may call: no key (401), a key of another role (403);
- an endpoint with path parameters: 404 for a value that names nothing.

Every response schema forbids properties it does not list (`ClosedModels`), so an answer that drifts from its
model fails the schema test. The document is built once per set of routes and served as prepared bytes.

    spec = openapi_spec()                 # the app's own routes
    spec = openapi_spec(app.routes)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from aggregator.web.endpoint import Content, Endpoint, EndpointRoute, Param, Reply
from aggregator.web.problems import (
    AuthRequired,
    BodyTooLarge,
    Forbidden,
    InvalidKey,
    RouteNotFound,
    TooManyRequests,
    UploadTooLarge,
    problem_type,
)
from aggregator.web.ratelimit import RATELIMIT_HEADER_DOCS
from aggregator.web.roles import Role

REF = "#/components/schemas/{model}"
BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]
OPTIONAL_BEARER: list[dict[str, list[str]]] = [{}, {"bearerAuth": []}]
API_VERSION = "1.0.0"
INFO = {
    "title": "certq API",
    "version": API_VERSION,
    "description": "职业技能证书一网查询: one lookup over every department source, merged. Errors are RFC 9457 "
    "problem documents with the message in Chinese and English. Keys: `Authorization: Bearer <key>` (from "
    "`certq keys create`).",
}
MULTIPART = "multipart/form-data"
ROLES_KEY = "x-certq-roles"  # who may call an operation (the role matrix, per operation)
PROBLEMS_KEY = "x-certq-problems"  # the problem types (titles) an error response may carry


class ClosedModels(GenerateJsonSchema):
    """Object schemas of models that do not say what to do with unknown properties forbid them (as
    `extra="forbid"` does): the API's answers have exactly the members their models list. A model that says
    `extra="ignore"` (a form whose other fields are ignored) stays open."""

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        json_schema = super().model_schema(schema)
        if "extra" not in schema["cls"].model_config and json_schema.get("type") == "object":
            json_schema.setdefault("additionalProperties", False)
        return json_schema


def endpoints_of(routes: Iterable[BaseRoute]) -> tuple[Endpoint, ...]:
    """The declared endpoints among `routes`, in order."""
    return tuple(r.declared for r in routes if isinstance(r, EndpointRoute))


def _problem_classes(e: Endpoint) -> list[type[BaseException]]:
    """What the endpoint raises, and what the layers around it raise for it."""
    classes: list[type[BaseException]] = []
    if e.access.keyed:  # the Gate
        classes += [InvalidKey, TooManyRequests]
        if e.body is not None:
            media = set(e.body.content)
            if MULTIPART in media:
                classes.append(UploadTooLarge)
            if media - {MULTIPART}:
                classes.append(BodyTooLarge)
    if e.access.roles is not None:  # the endpoint's role check
        classes += [AuthRequired, Forbidden]
    if any(isinstance(p, Param) and p.where == "path" for p in e.params):  # the router
        classes.append(RouteNotFound)
    return classes + list(e.raises)


def _headers(docs: dict[str, tuple[str, str]]) -> dict[str, Any]:
    return {name: {"description": what, "schema": {"type": kind}} for name, (kind, what) in docs.items()}


class _Builder:
    """One document: the components first (every model any operation names), then the operations."""

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self.endpoints = endpoints
        wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = []
        for e in endpoints:
            for reply in e.replies:
                wanted += [(m, "serialization") for m in reply.content.values() if m is not str]
            if e.body is not None:
                wanted += [(m, "validation") for m in e.body.content.values() if m is not str]
            wanted += [(problem_type(c).document, "serialization") for c in _problem_classes(e)]
        unique = list(dict.fromkeys(wanted))
        refs, defs = models_json_schema(unique, ref_template=REF, schema_generator=ClosedModels)
        self.refs = refs
        self.schemas: dict[str, Any] = dict(sorted(defs.get("$defs", {}).items()))

    def schema(self, model: Content, mode: JsonSchemaMode) -> dict[str, Any]:
        if model is str:
            return {"type": "string"}
        return dict(self.refs[(model, mode)])  # type: ignore[index]

    def operation(self, e: Endpoint) -> dict[str, Any]:
        op: dict[str, Any] = {"operationId": e.operation_id, "summary": e.summary}
        if e.description:
            op["description"] = e.description
        if e.access.keyed:
            op["security"] = OPTIONAL_BEARER if e.access.roles is None else BEARER
            op[ROLES_KEY] = [r.value for r in Role if e.access.roles is None or r in e.access.roles]
        params = [p for param in e.params for p in param.openapi()]
        if params:
            op["parameters"] = params
        if e.body is not None:
            content: dict[str, Any] = {}
            for media, model in e.body.content.items():
                content[media] = {"schema": self.schema(model, "validation")}
            if e.body.example is not None:
                content[next(iter(content))]["example"] = e.body.example
            op["requestBody"] = {"required": e.body.required, "content": content}
        responses = {str(r.status): self.reply(e, r) for r in e.replies}
        responses.update(self.problems(e))
        op["responses"] = dict(sorted(responses.items()))
        return op

    def reply(self, e: Endpoint, reply: Reply) -> dict[str, Any]:
        out: dict[str, Any] = {
            "description": reply.description,
            "content": {media: {"schema": self.schema(m, "serialization")} for media, m in reply.content.items()},
        }
        headers = {k: ("string", v) for k, v in reply.headers.items()}
        if e.access.keyed:
            headers.update(RATELIMIT_HEADER_DOCS)
        if headers:
            out["headers"] = _headers(headers)
        return out

    def problems(self, e: Endpoint) -> dict[str, Any]:
        by_status: dict[int, list[Any]] = {}
        for cls in _problem_classes(e):
            t = problem_type(cls)
            if t not in by_status.setdefault(t.status, []):
                by_status[t.status].append(t)
        out: dict[str, Any] = {}
        for status, types in sorted(by_status.items()):
            documents = list(dict.fromkeys(t.document for t in types))
            refs = [self.schema(d, "serialization") for d in documents]
            headers: dict[str, tuple[str, str]] = {}
            for t in types:
                headers.update(t.headers)
            if e.access.keyed:
                headers.update(RATELIMIT_HEADER_DOCS)
            response: dict[str, Any] = {
                "description": "; ".join(f"{t.title}: {t.about}" for t in types),
                PROBLEMS_KEY: [t.title for t in types],
                "content": {"application/problem+json": {"schema": refs[0] if len(refs) == 1 else {"anyOf": refs}}},
            }
            if headers:
                response["headers"] = _headers(headers)
            out[str(status)] = response
        return out

    def document(self) -> dict[str, Any]:
        paths: dict[str, dict[str, Any]] = {}
        for e in self.endpoints:
            paths.setdefault(e.path, {})[e.method.lower()] = self.operation(e)
        return {
            "openapi": "3.1.0",
            "info": dict(INFO),
            "paths": paths,
            "components": {
                "schemas": self.schemas,
                "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "description": "certq API key"}},
            },
        }


@lru_cache(maxsize=8)
def _built(endpoints: tuple[Endpoint, ...]) -> tuple[dict[str, Any], bytes]:
    spec = _Builder(endpoints).document()
    return spec, JSONResponse(spec).body


def endpoints_in(routes: Iterable[BaseRoute] | None) -> tuple[Endpoint, ...]:
    """The declared endpoints among `routes` (default: the app's routes)."""
    if routes is None:
        from aggregator.web.app import app_routes  # imported late: the app imports this module

        routes = app_routes()
    return endpoints_of(routes)


def document_of(endpoints: tuple[Endpoint, ...]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `endpoints` (built once per set; do not modify it)."""
    return _built(endpoints)[0]


def openapi_spec(routes: Iterable[BaseRoute] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the endpoints among `routes` (default: the app's)."""
    return document_of(endpoints_in(routes))


async def openapi_json(request: Request) -> Response:
    """The API description, as prepared bytes (built on the first request, then kept)."""
    return Response(_built(endpoints_of(request.app.routes))[1], media_type="application/json")


def openapi_routes() -> list[Route]:
    return [Route("/openapi.json", openapi_json, methods=["GET"], name="openapi", include_in_schema=False)]
