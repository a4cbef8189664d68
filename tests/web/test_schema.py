"""Schemathesis against the app's own /openapi.json, in process (ASGI): for every operation, generated valid and
invalid requests as the public, as a regulator (with a purpose, so the authorised paths run) and as an admin
(who may upload), and every response must be no 5xx, have a documented status and content type, and match
its schema. Examples are bounded (and derandomised: the same ones every run) so the file runs in well under
a minute; for a deeper search by hand: CERTQ_SCHEMA_EXAMPLES=500 CERTQ_SCHEMA_RANDOM=1 pytest tests/web/test_schema.py

The description is derived from the endpoints' declarations and its response schemas forbid members they do
not list, so an answer that drifts from its model fails here: the last tests pin that, and that every role's
view of an answer matches the one lookup schema.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from aggregator.web.app import create_app
from aggregator.web.openapi import openapi_spec
from tests.web_support import (
    MEM_NUMBER,
    MOHURD_NUMBER,
    TestClient,
    WebEnv,
    build_env,
    quiet_config,
    records_settings,
)

# Per operation, caller and mode.
MAX_EXAMPLES = int(os.environ.get("CERTQ_SCHEMA_EXAMPLES", "25"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
OPERATIONS = [(method.upper(), path) for path, methods in openapi_spec()["paths"].items() for method in methods]
# Operations with something to get wrong (parameters or a body); the others have no invalid request to make,
# so they are fuzzed with valid requests only.
WITH_INPUT = {
    (method.upper(), path)
    for path, methods in openapi_spec()["paths"].items()
    for method, op in methods.items()
    if op.get("parameters") or op.get("requestBody")
}
CALLERS = ("public", "regulator", "admin")
# Who may call each operation (its declared roles): a caller who may not is refused before anything is read
# (401/403), whatever the request, so a few examples show that as well as 25 would.
ROLES = {
    (method.upper(), path): set(op.get("x-certq-roles", []))
    for path, methods in openapi_spec()["paths"].items()
    for method, op in methods.items()
}
REFUSED_EXAMPLES = 3


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> WebEnv:
    return build_env(tmp_path_factory.mktemp("web-schema"))


@pytest.fixture(scope="module")
def schema(env: WebEnv) -> Iterator[Any]:
    """The schema as the running app serves it; its requests go to the same app, in process."""
    from schemathesis.python import asgi

    app = create_app(records_settings(), database_url=env.database_url, redis_url="", web=quiet_config())
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the app's lifespan
    try:
        yield loaded
    finally:
        asgi.shutdown_lifespans()  # closes the gateway (and its database) the lifespan opened


def test_the_served_description_is_the_one_fuzzed_here(schema: Any) -> None:
    assert schema.raw_schema == openapi_spec()
    labels = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    assert labels == set(OPERATIONS) and len(labels) >= 12


CASES = [
    pytest.param(method, path, caller, mode, id=f"{method} {path} as {caller}, {mode.value}")
    for method, path in OPERATIONS
    for caller in CALLERS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode == GenerationMode.POSITIVE or (method, path) in WITH_INPUT
]


@pytest.mark.parametrize(("method", "path", "caller", "mode"), CASES)
def test_no_5xx_and_responses_match_the_schema(
    schema: Any, env: WebEnv, method: str, path: str, caller: str, mode: GenerationMode
) -> None:
    operation = schema[path][method]
    headers = env.auth(None if caller == "public" else caller, purpose="schema test" if caller == "regulator" else None)
    statuses: list[int] = []

    allowed = caller in ROLES[(method, path)]

    @settings(
        max_examples=MAX_EXAMPLES if allowed else min(REFUSED_EXAMPLES, MAX_EXAMPLES),
        deadline=None,
        database=None,
        derandomize=os.environ.get("CERTQ_SCHEMA_RANDOM") != "1",  # the same examples every run by default
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(headers=headers)
        statuses.append(response.status_code)
        assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
        case.validate_response(response, checks=CHECKS, headers=headers)

    run()
    assert statuses, "no request was made"


# --- drift: a member the description does not know fails the schema -------------------------------------------


@pytest.fixture(scope="module")
def client(env: WebEnv) -> Iterator[TestClient]:
    app = create_app(records_settings(), database_url=env.database_url, redis_url="", web=quiet_config())
    with TestClient(app) as c:
        yield c


def _with_body(r: httpx.Response, body: Any) -> httpx.Response:
    """The same response with another JSON body."""
    altered = httpx.Response(r.status_code, headers=r.headers, content=json.dumps(body).encode(), request=r.request)
    altered.read()
    altered.elapsed = r.elapsed
    return altered


def _first(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda body: body[key][0]


DRIFTS = [
    pytest.param("GET", "/api/v1/sources", "/api/v1/sources", None, _first("sources"), id="a source"),
    pytest.param("GET", "/api/v1/certificates/{number}", f"/api/v1/certificates/{MEM_NUMBER}?name=张小三", "employer",
                 lambda body: body, id="a lookup answer"),
    pytest.param("GET", "/api/v1/certificates/{number}", f"/api/v1/certificates/{MEM_NUMBER}", None,
                 lambda body: body["certificates"][0], id="a certificate in a public answer"),
    pytest.param("GET", "/api/v1/certificates/{number}", f"/api/v1/certificates/{MEM_NUMBER}", None,
                 lambda body: body["sources"][0], id="a source line of an answer"),
    pytest.param("GET", "/api/v1/uploads", "/api/v1/uploads", "regulator", _first("batches"), id="an upload"),
    pytest.param("GET", "/api/v1/whoami", "/api/v1/whoami", "admin", lambda body: body, id="whoami"),
    pytest.param("GET", "/api/v1/recognition", "/api/v1/recognition", None, _first("entries"), id="the catalogue"),
    pytest.param("GET", "/api/v1/audit", "/api/v1/audit", None, lambda body: body, id="a problem document"),
    pytest.param("GET", "/readyz", "/readyz", None, lambda body: body["checks"], id="readiness checks"),
]


@pytest.mark.parametrize(("method", "template", "url", "who", "part"), DRIFTS)
def test_a_member_the_description_does_not_know_fails_the_schema(
    schema: Any, client: TestClient, env: WebEnv, method: str, template: str, url: str, who: str | None,
    part: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    operation = schema[template][method]
    r = client.request(method, url, headers=env.auth(who, purpose="schema test" if who == "regulator" else None))
    operation.validate_response(r)  # as answered: valid
    body = r.json()
    part(body)["surprise"] = 1
    with pytest.raises(AssertionError, match="surprise"):
        operation.validate_response(_with_body(r, body))


@pytest.mark.parametrize("who", ["public", "employer", "regulator", "department-mem", "admin"])
def test_every_roles_view_of_an_answer_matches_the_one_lookup_schema(
    schema: Any, client: TestClient, env: WebEnv, who: str
) -> None:
    caller = None if who == "public" else who
    headers = env.auth(caller, purpose="schema test" if who == "regulator" else None)
    for number, name in ((MEM_NUMBER, "张小三"), (MOHURD_NUMBER, "王五"), (MEM_NUMBER, None)):
        r = client.get(f"/api/v1/certificates/{number}", params={"name": name} if name else {}, headers=headers)
        assert r.status_code == 200, r.text
        schema["/api/v1/certificates/{number}"]["GET"].validate_response(r)
    if who in ("employer", "regulator", "admin"):
        pairs = {"pairs": [{"number": MEM_NUMBER, "name": "张小三"}, {"number": "T1101<05"}], "purpose": "schema test"}
        r = client.post("/api/v1/verifications", json=pairs, headers=headers)
        assert r.status_code == 200, r.text
        schema["/api/v1/verifications"]["POST"].validate_response(r)
