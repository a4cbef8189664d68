"""The API docs page, /docs: every operation of /openapi.json with who may call it, its parameters, its
answers and problems and an example request, then the roles, every problem type and an example answer.

In the site's layout with its navigation (no CDN, no script; `templates/docs.html`), `backticks` shown as code and made only from the API description
(`openapi.py`) and the one table of problem texts (`aggregator.errors.registered`), once per set of routes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from aggregator.errors import registered
from aggregator.web.endpoint import Endpoint
from aggregator.web.openapi import (
    BEARER,
    PROBLEMS_KEY,
    REF,
    ROLES_KEY,
    document_of,
    endpoints_in,
)
from aggregator.web.pages.render import TEMPLATES
from aggregator.web.pages.view import problem_text

BASE_URL = "http://127.0.0.1:8000"
EXAMPLE_ANSWER = {
    "verdict": "valid",
    "certificates": [{"holder_name": "张*三"}],
    "view": {"role": "public", "masked": True},
}
_REF_PREFIX = REF.format(model="")


def curl(method: str, path: str, op: dict[str, Any], schemas: dict[str, Any]) -> str:
    """An example request: path and query parameters from their examples, the body from the body's example
    (a form's binary fields as curl's @file)."""
    url = BASE_URL + path
    query = []
    for p in op.get("parameters") or []:
        if "example" not in p:
            continue
        if p["in"] == "path":
            url = url.replace("{" + p["name"] + "}", quote(str(p["example"]), safe=""))
        elif p["in"] == "query":
            query.append(f"{p['name']}={quote(str(p['example']), safe='')}")
    if query:
        url += "?" + "&".join(query)
    lines = [f"curl -sS -X {method.upper()}"]
    if op.get("security") == BEARER:
        lines.append('  -H "Authorization: Bearer $CERTQ_KEY"')
    for media, body in ((op.get("requestBody") or {}).get("content") or {}).items():
        if "example" not in body:
            continue
        if media == "multipart/form-data":
            schema = schemas.get(body["schema"].get("$ref", "").removeprefix(_REF_PREFIX), body["schema"])
            binary = {k for k, v in (schema.get("properties") or {}).items() if v.get("format") == "binary"}
            lines.append("  " + " ".join(f"-F {k}={'@' if k in binary else ''}{v}" for k, v in body["example"].items()))
        else:
            lines.append(f"  -H 'Content-Type: {media}'")
            lines.append(f"  -d '{json.dumps(body['example'], ensure_ascii=False, separators=(',', ':'))}'")
    lines.append(f"  '{url}'")
    return " \\\n".join(lines)


def _operations(spec: dict[str, Any]) -> list[dict[str, Any]]:
    schemas = spec["components"]["schemas"]
    return [
        {
            "id": op["operationId"],
            "method": method.upper(),
            "path": path,
            "summary": op["summary"],
            "description": [p for p in op.get("description", "").split("\n\n") if p],
            "roles": op.get(ROLES_KEY),
            "parameters": op.get("parameters") or [],
            "responses": [(status, r.get(PROBLEMS_KEY, [])) for status, r in op["responses"].items()],
            "example": curl(method, path, op, schemas),
        }
        for path, methods in spec["paths"].items()
        for method, op in methods.items()
    ]


@lru_cache(maxsize=8)
def _page(endpoints: tuple[Endpoint, ...]) -> str:
    spec = document_of(endpoints)
    return TEMPLATES.get_template("docs.html").render(
        spec=spec,
        operations=_operations(spec),
        problems=registered(),
        example_answer=json.dumps(EXAMPLE_ANSWER, ensure_ascii=False, indent=2),
        problem_text=problem_text,
        current="/docs",
        wide=True,
    )


def docs_html(routes: Iterable[BaseRoute] | None = None) -> str:
    """The docs page of the endpoints among `routes` (default: the app's)."""
    return _page(endpoints_in(routes))


async def docs_page(request: Request) -> Response:
    """The API docs (built on the first request, then kept)."""
    return HTMLResponse(docs_html(request.app.routes))


routes = [Route("/docs", docs_page, methods=["GET"], name="docs", include_in_schema=False)]
