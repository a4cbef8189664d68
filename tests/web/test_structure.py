"""The web layer's structure, as issue 9 left it: every API route is a declared endpoint (and /openapi.json is
made from the declarations), declarations cost nothing on the busy path, and handlers and pages reach the
gateway only through the service layer."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from aggregator.web import api
from aggregator.web.app import app_routes
from aggregator.web.endpoint import PROBE, EndpointRoute
from aggregator.web.middleware import UNLIMITED_PREFIXES
from aggregator.web.openapi import openapi_spec

WEB = Path(api.__file__).resolve().parent
# Modules that read requests and write responses: they call the services, never the gateway or its store.
HANDLER_MODULES = sorted([WEB / "api.py", WEB / "uploads.py", WEB / "ops.py", *(WEB / "pages").glob("*.py")])


def test_every_api_route_is_a_declared_endpoint_and_in_the_description() -> None:
    routes = app_routes()
    api_paths = {(m, r.path) for r in routes if getattr(r, "methods", None) for m in r.methods if m != "HEAD"}
    api_paths = {(m, p) for m, p in api_paths if p.startswith("/api/") or p in ("/healthz", "/readyz", "/metrics")}
    declared = {(r.declared.method, r.path) for r in routes if isinstance(r, EndpointRoute)}
    assert api_paths == declared
    described = {(m.upper(), p) for p, ops in openapi_spec()["paths"].items() for m in ops}
    assert described == declared


def test_a_declaration_costs_nothing_on_the_lookup_path() -> None:
    """The lookup (anyone may call it) runs its handler itself: no wrapper, no per-request reading of its
    declaration; only endpoints some roles may not call get a role check in front."""
    [route] = [r for r in app_routes() if isinstance(r, EndpointRoute) and r.declared is api.get_certificate]
    assert route.endpoint is api.get_certificate.handler
    for r in app_routes():
        if isinstance(r, EndpointRoute) and r.declared.access.roles is None:
            assert r.endpoint is r.declared.handler, r.path


def test_probes_are_declared_as_such_and_the_gate_agrees() -> None:
    for r in app_routes():
        if isinstance(r, EndpointRoute):
            assert (r.declared.access is PROBE) == r.path.startswith(UNLIMITED_PREFIXES), r.path


@pytest.mark.parametrize("path", HANDLER_MODULES, ids=lambda p: str(p.relative_to(WEB)))
def test_handlers_reach_the_gateway_only_through_the_services(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    touched = sorted({node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)} & {"gateway", "store"})
    assert touched == [], f"{path.name} uses .{', .'.join(touched)}: go through the service layer"


def test_every_endpoint_says_what_it_does() -> None:
    for r in app_routes():
        if isinstance(r, EndpointRoute):
            assert r.declared.summary and inspect.getdoc(r.declared.handler), r.path
