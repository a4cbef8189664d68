"""Schemathesis against the app's own /openapi.json, in process (ASGI): for every operation, generated valid and
invalid requests as the public, as a regulator (with a purpose, so the authorised paths run) and as an admin
(who may upload), and every response must be no 5xx, have a documented status and content type, and match
its schema. Examples are bounded (and derandomised: the same ones every run) so the file runs in well under
a minute; for a deeper search by hand: CERTQ_SCHEMA_EXAMPLES=500 CERTQ_SCHEMA_RANDOM=1 pytest tests/test_web_schema.py
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

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
from tests.web_support import WebEnv, build_env, quiet_config, records_settings

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

    @settings(
        max_examples=MAX_EXAMPLES,
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
