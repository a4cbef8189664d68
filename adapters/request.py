"""Request building shared by the HTTP adapters: which identifiers a query offers, request shapes from config,
and the headers every institutional request carries.

A request shape is data (`[[options.requests]]` in a source's TOML); the first shape whose `requires` the
query satisfies is sent. Values are templates over the query variables:

    number       the normalised number as typed (T110105199003071239)
    id_number    the holder's ID: the query's id_number, else the number when it is an ID, else the ID inside
                 a MEM T+ID number ("" when none of these)
    cert_number  the number when it is not an ID or T+ID ("" otherwise): what sites call 证书编号
    name         the holder's name, or ""

    [[options.requests]]
    method = "GET"
    path = "/api/v1/certs"
    params = { certNum = "{cert_number}" }
    requires = ["cert_number"]
"""

from __future__ import annotations

import os
import string
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adapters.base import HttpRequest, HttpResponse, LookupFlow
from aggregator.config import ConfigError, SourceConfig
from aggregator.models import Query
from aggregator.numbers import classify

QueryVar = Literal["number", "id_number", "cert_number", "name"]
QUERY_VARS: tuple[str, ...] = ("number", "id_number", "cert_number", "name")
_ID_FORMATS = {"id18", "id15", "mem_t_id"}


class AdapterConfigError(ConfigError, ValueError):
    """A source's options are wrong for its adapter; each problem names `sources/<id>.toml: options.<key>`."""


class StrictOptions(BaseModel):
    """Base of every adapter's options model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def validate_options(model: type[StrictOptions], source: SourceConfig) -> Any:
    """`model.model_validate(source.options)`, with errors naming the source file and key."""
    try:
        return model.model_validate(source.options)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"sources/{source.id}.toml: options.{key}: {err['msg']}")
        raise AdapterConfigError(problems) from e


def query_vars(query: Query) -> dict[str, str]:
    """The template variables a query offers (see the module docstring)."""
    names = classify(query.number).names
    if query.id_number:
        id_number = query.id_number
    elif "id18" in names:
        id_number = query.number
    elif "mem_t_id" in names:
        id_number = query.number[1:]
    else:
        id_number = ""
    cert_number = "" if names & _ID_FORMATS else query.number
    return {"number": query.number, "id_number": id_number, "cert_number": cert_number, "name": query.name or ""}


def vars_for_format(fmt: str) -> set[str]:
    """Which query variables are non-empty for a number of format `fmt` ("*": any number) without a name."""
    if fmt == "id18":
        return {"number", "id_number"}
    if fmt == "mem_t_id":
        return {"number", "id_number"}
    if fmt == "id15":
        return {"number"}
    return {"number", "cert_number"}


def _template_fields(template: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise ValueError(f"bad template {template!r}: {e}") from e


def _check_template(template: str) -> str:
    unknown = _template_fields(template) - set(QUERY_VARS)
    if unknown:
        raise ValueError(f"template {template!r} uses {sorted(unknown)}; known: {list(QUERY_VARS)}")
    return template


def render(template: str, values: dict[str, str]) -> str:
    return template.format_map(values)


class RequestShape(StrictOptions):
    """One HTTP request a source answers, with values templated from the query variables."""

    method: Literal["GET", "POST"] = "GET"
    path: str = Field(min_length=1)
    params: dict[str, str] = Field(default_factory=dict)  # query string
    form: dict[str, str] = Field(default_factory=dict)  # form body (POST)
    json_body: dict[str, str] | None = Field(None, alias="json")  # JSON body (POST)
    headers: dict[str, str] = Field(default_factory=dict)
    requires: list[QueryVar] = Field(default_factory=list)  # all must be non-empty for this shape to be used
    requires_any: list[QueryVar] = Field(default_factory=list)  # and at least one of these (when given)
    omit_empty: bool = True  # leave out fields whose value renders empty

    @field_validator("path")
    @classmethod
    def _path_template(cls, v: str) -> str:
        return _check_template(v)

    @field_validator("params", "form", "json_body", "headers")
    @classmethod
    def _value_templates(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for value in (v or {}).values():
            _check_template(value)
        return v

    def applies(self, values: dict[str, str]) -> bool:
        if not all(values.get(r) for r in self.requires):
            return False
        return not self.requires_any or any(values.get(r) for r in self.requires_any)

    def fits(self, have: set[str]) -> bool:
        """Whether a query offering the variables `have` satisfies this shape."""
        return set(self.requires) <= have and (not self.requires_any or bool(set(self.requires_any) & have))

    def _fields(self, fields: dict[str, str], values: dict[str, str]) -> dict[str, str]:
        out = {k: render(t, values) for k, t in fields.items()}
        return {k: v for k, v in out.items() if v or not self.omit_empty}

    def build(self, endpoint: str, values: dict[str, str], headers: dict[str, str]) -> HttpRequest:
        url = endpoint.rstrip("/") + "/" + render(self.path, values).lstrip("/")
        return HttpRequest(
            method=self.method,
            url=url,
            params=self._fields(self.params, values) or None,
            data=self._fields(self.form, values) or None,
            json=self._fields(self.json_body, values) if self.json_body is not None else None,
            headers={**headers, **self._fields(self.headers, values)},
        )


def choose_shape(shapes: list[RequestShape], values: dict[str, str], source_id: str) -> RequestShape:
    """The first shape the query satisfies. None satisfied means routing sent a query this source's config
    cannot express: a configuration error, reported as such (never as not found)."""
    for shape in shapes:
        if shape.applies(values):
            return shape
    have = sorted(k for k, v in values.items() if v)
    need = [{"requires": s.requires, "requires_any": s.requires_any} for s in shapes]
    problem = f"no request shape fits this query (it has {have}; shapes need {need})"
    raise AdapterConfigError([f"sources/{source_id}.toml: options.requests: {problem}"])


def check_shapes_cover_patterns(shapes: list[RequestShape], source: SourceConfig, key: str = "requests") -> None:
    """Every number format the source claims (`patterns`), and an explicit ID number, must fit some shape."""
    problems = []
    cases = [(p, vars_for_format(p)) for p in source.patterns if p != "*"]
    if "*" in source.patterns:
        cases.append(("*", vars_for_format("*")))
    if "id18" in source.patterns:
        cases.append(("an explicit id_number", {"number", "id_number"}))
    for label, have in cases:
        if not any(s.fits(have) for s in shapes):
            problems.append(
                f"sources/{source.id}.toml: options.{key}: no request shape can ask for a number of format "
                f"{label!r} (it offers {sorted(have)})"
            )
    if problems:
        raise AdapterConfigError(problems)


class HttpSource:
    """What every HTTP adapter holds: its source config, and the headers each request carries."""

    accept = "application/json"

    def __init__(self, source: SourceConfig) -> None:
        if not source.endpoint:
            raise AdapterConfigError([f"sources/{source.id}.toml: endpoint: an HTTP source needs an endpoint"])
        self.source = source
        self.endpoint = source.endpoint

    def headers(self) -> dict[str, str]:
        """Accept, and `Authorization: Bearer <token>` when `credentials_env` names a set variable. Read at
        request time, so a rotated token applies without a restart."""
        out = {"Accept": self.accept}
        if self.source.credentials_env:
            token = os.environ.get(self.source.credentials_env, "").strip()
            if token:
                out["Authorization"] = f"Bearer {token}"
        return out

    def url(self, path: str) -> str:
        return self.endpoint.rstrip("/") + "/" + path.lstrip("/")


def replay(flow: LookupFlow, responses: Iterable[HttpResponse]) -> tuple[list[HttpRequest], Any]:
    """Drive a lookup flow with canned responses, in order, without any I/O (fixtures, tests, debugging).

    Returns the requests the flow made and its result; the flow's own errors propagate. Raises
    `RuntimeError` when the flow asks for more requests than there are responses, or stops before using
    them all."""
    requests: list[HttpRequest] = []
    pending = list(responses)
    try:
        request = next(flow)
        while True:
            requests.append(request)
            if not pending:
                raise RuntimeError(
                    f"the flow made request {len(requests)} but only {len(requests) - 1} response(s) were given"
                )
            request = flow.send(pending.pop(0))
    except StopIteration as stop:
        if pending:
            raise RuntimeError(f"the flow finished with {len(pending)} response(s) unused") from None
        return requests, stop.value
