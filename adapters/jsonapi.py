"""The generic JSON adapter: a source described in TOML alone (request shape, outcome conditions, where the
records are and how their fields map to a certificate).

    [options]
    records = "data"                                   # dotted path of the record list (an object: one record)
    message = "message"                                # dotted path of the source's own message
    found = [{ path = "code", equals = "0" }]          # all must hold, and the record list be non-empty
    not_found = [{ path = "code", equals = "0" }, { path = "data", empty = true }]
    captcha = [{ path = "msg", contains = ["验证码"] }] # optional groups: captcha, banned, rate_limited,
    error = [{ path = "code", equals = "1" }]          #   maintenance, error (upstream_error)
    [options.fields]                                   # canonical field -> dotted path in a record
    number = "certNum"
    valid_until = "expiringDate"
    status = "certState"
    [options.status_map]
    "01" = "valid"

Every mapped path must be present in every record (null is fine) unless listed in `optional`: a renamed
field is a parse error naming it, not a silently empty value. A body that satisfies neither `found` nor
`not_found` is a recognised block page or a parse error naming the first `found` condition that failed.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, field_validator, model_validator

from adapters.base import (
    Banned,
    Captcha,
    HttpResponse,
    LookupFlow,
    Maintenance,
    NotFound,
    ParseError,
    RateLimited,
    SourceError,
    UpstreamError,
)
from adapters.blocks import detect_block
from adapters.parsing import (
    MISSING,
    CanonicalField,
    FieldRules,
    blocked_or_parse_error,
    build_certificate,
    check_path,
    check_status,
    clean_text,
    dotted_get,
    retry_after_s,
)
from adapters.request import (
    HttpSource,
    RequestShape,
    StrictOptions,
    check_shapes_cover_patterns,
    choose_shape,
    query_vars,
    validate_options,
)
from aggregator.config import SourceConfig
from aggregator.models import Certificate, Query

_PREDICATES = ("equals", "not_equals", "one_of", "contains", "empty", "exists")


def _same(value: Any, expected: Any) -> bool:
    if isinstance(value, bool) or isinstance(expected, bool):
        return str(value).lower() == str(expected).lower()
    return str(value) == str(expected)


class Condition(StrictOptions):
    """One test on a JSON body: the value at `path` and exactly one predicate."""

    path: str
    equals: Any = None
    not_equals: Any = None
    one_of: list[Any] | None = None
    contains: list[str] | None = None  # the value (a string) contains any of these
    empty: bool | None = None  # true: null, "", [] or {}; false: anything else that is present
    exists: bool | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return check_path(v)

    @model_validator(mode="after")
    def _one_predicate(self) -> Condition:
        given = [p for p in _PREDICATES if p in self.model_fields_set]
        if len(given) != 1:
            raise ValueError(f"a condition needs exactly one of {list(_PREDICATES)}; got {given or 'none'}")
        return self

    def holds(self, body: Any) -> bool:
        value = dotted_get(body, self.path)
        if "exists" in self.model_fields_set:
            return (value is not MISSING) == bool(self.exists)
        if value is MISSING:
            return False
        if "equals" in self.model_fields_set:
            return _same(value, self.equals)
        if "not_equals" in self.model_fields_set:
            return not _same(value, self.not_equals)
        if "one_of" in self.model_fields_set:
            return any(_same(value, e) for e in self.one_of or [])
        if "contains" in self.model_fields_set:
            return isinstance(value, str) and any(s in value for s in self.contains or [])
        is_empty = value is None or value == "" or value == [] or value == {}
        return is_empty == bool(self.empty)

    def describe(self) -> str:
        p = next(p for p in _PREDICATES if p in self.model_fields_set)
        return f"{self.path} {p} {getattr(self, p)!r}"


def all_hold(conditions: list[Condition], body: Any) -> bool:
    """An empty group never holds (a group that is not configured must not match every body)."""
    return bool(conditions) and all(c.holds(body) for c in conditions)


class RecordFields(FieldRules):
    """Where a JSON record's values are: canonical field -> dotted path within one record."""

    fields: dict[CanonicalField, str]
    optional: list[str] = Field(default_factory=list)  # record paths that may be absent

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: dict[str, str]) -> dict[str, str]:
        if "number" not in v:
            raise ValueError("fields.number is required: the path of the certificate number")
        for path in v.values():
            check_path(path)
        return v


class JsonApiOptions(RecordFields):
    requests: list[RequestShape] = Field(min_length=1)
    records: str  # dotted path of the record list
    message: str | None = None  # dotted path of the source's message, quoted in errors
    found: list[Condition] = Field(min_length=1)
    not_found: list[Condition] = Field(min_length=1)
    captcha: list[Condition] = Field(default_factory=list)
    banned: list[Condition] = Field(default_factory=list)
    rate_limited: list[Condition] = Field(default_factory=list)
    maintenance: list[Condition] = Field(default_factory=list)
    error: list[Condition] = Field(default_factory=list)

    @field_validator("records", "message")
    @classmethod
    def _paths(cls, v: str | None) -> str | None:
        return check_path(v) if v is not None else v


def decode_json(resp: HttpResponse) -> dict[str, Any]:
    """The body as a JSON object. Not JSON (cut short, an HTML page) is a recognised block page or a
    ParseError at `body`."""
    try:
        body = json.loads(resp.text)
    except json.JSONDecodeError as e:
        raise blocked_or_parse_error(resp, "body", f"not valid JSON ({e.msg} at char {e.pos})") from e
    if not isinstance(body, dict):
        raise blocked_or_parse_error(resp, "body", f"expected a JSON object, got {type(body).__name__}")
    return body


class JsonRecords:
    """Turns JSON records into certificates by `RecordFields`; mixed into the JSON adapters."""

    source: SourceConfig
    options: RecordFields

    def raw_fields(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        """Canonical field -> raw value, every mapped path present unless `optional`."""
        raw: dict[str, Any] = {}
        for field, path in self.options.fields.items():
            value = dotted_get(record, path)
            if value is MISSING:
                if path in self.options.optional:
                    continue
                raise ParseError(f"{where}.{path}", "field missing")
            raw[field] = value
        return raw

    def to_certificate(self, record: dict[str, Any], where: str) -> Certificate:
        raw = self.raw_fields(record, where)
        return build_certificate(
            self.adjust(record, raw, where),
            self.options,
            department=self.source.department,
            kind=self.source.kinds[0],
            where=lambda f: f"{where}.{self.options.fields.get(f, f)}",  # type: ignore[call-overload]
        )

    def adjust(self, record: dict[str, Any], raw: dict[str, Any], where: str) -> dict[str, Any]:
        """Hook for department modules: rewrite raw values before they become a certificate."""
        return raw


class JsonApiAdapter(HttpSource, JsonRecords):
    """A JSON source configured by `JsonApiOptions`. Department modules subclass it for what config cannot say."""

    options_model: type[JsonApiOptions] = JsonApiOptions
    options: JsonApiOptions

    def __init__(self, source: SourceConfig) -> None:
        super().__init__(source)
        self.options = validate_options(self.options_model, source)
        check_shapes_cover_patterns(self.options.requests, source)

    # --- request ------------------------------------------------------------------------------

    def lookup(self, query: Query) -> LookupFlow:
        values = query_vars(query)
        shape = choose_shape(self.options.requests, values, self.source.id)
        resp = yield shape.build(self.endpoint, values, self.headers())
        return self.parse(resp)

    # --- response -----------------------------------------------------------------------------

    def parse(self, resp: HttpResponse) -> list[Certificate]:
        check_status(resp)
        body = decode_json(resp)
        return self.parse_body(resp, body)

    def message_of(self, body: dict[str, Any]) -> str:
        if not self.options.message:
            return ""
        value = dotted_get(body, self.options.message, None)
        return clean_text(value) if value is not None and value is not MISSING else ""

    def parse_body(self, resp: HttpResponse, body: dict[str, Any]) -> list[Certificate]:
        o = self.options
        msg = self.message_of(body)
        if all_hold(o.found, body):
            records = dotted_get(body, o.records)
            if isinstance(records, dict):
                records = [records]
            if isinstance(records, list) and records:
                return self.certificates(records)
            if records is not MISSING and records is not None and not isinstance(records, list):
                raise ParseError(o.records, f"expected a list of records, got {type(records).__name__}")
            if not all_hold(o.not_found, body):
                raise ParseError(o.records, f"no records and no not-found message (message: {msg!r})")
        if all_hold(o.not_found, body):
            raise NotFound(msg or "not found")
        self.raise_for_condition_groups(resp, body, msg)
        failed = next((c for c in o.found if not c.holds(body)), o.found[0])
        got = dotted_get(body, failed.path)
        got_text = "absent" if got is MISSING else repr(got)[:80]
        raise blocked_or_parse_error(resp, failed.path, f"expected {failed.describe()}, got {got_text}")

    def raise_for_condition_groups(self, resp: HttpResponse, body: dict[str, Any], msg: str) -> None:
        o = self.options
        groups: list[tuple[list[Condition], SourceError]] = [
            (o.captcha, Captcha(f"验证码 (captcha): {msg}")),
            (o.banned, Banned(f"封禁 (banned): {msg}")),
            (o.rate_limited, RateLimited(f"限流 (rate limited): {msg}", retry_after_s=retry_after_s(resp))),
            (o.maintenance, Maintenance(f"系统维护 (maintenance): {msg}")),
            (o.error, UpstreamError(f"数据源报错 (source error): {msg}")),
        ]
        for conditions, err in groups[:-1]:
            if all_hold(conditions, body):
                raise err
        if blocked := detect_block(resp):  # a captcha or ban message the config did not name
            raise blocked
        if all_hold(*groups[-1][:1], body):
            raise groups[-1][1]

    def certificates(self, records: list[Any]) -> list[Certificate]:
        out = []
        for i, record in enumerate(records):
            where = f"{self.options.records}[{i}]"
            if not isinstance(record, dict):
                raise ParseError(where, f"expected an object, got {type(record).__name__}")
            out.append(self.to_certificate(record, where))
        return self.finish(records, out)

    def finish(self, records: list[Any], certificates: list[Certificate]) -> list[Certificate]:
        """Hook for department modules: choose among the parsed certificates. Must return a non-empty list
        or raise."""
        return certificates
