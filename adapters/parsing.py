"""Shared parse helpers for adapters: text clean-up, dotted paths, dates, status tables, HTTP status checks,
label/value tables, and turning raw values into a canonical `Certificate` (`FieldRules`, `build_certificate`).

Every helper that can fail raises `ParseError` naming the path or selector it was looking for, so a layout
change reads "parsing error at table.tab_info1", never "no results":

    >>> dotted_get({"data": {"licList": [{"zsbh": "1"}]}}, "data.licList[0].zsbh")
    '1'
    >>> parse_date("2023年6月30日", "fzrq")
    datetime.date(2023, 6, 30)
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from typing import Annotated, Any

from bs4 import BeautifulSoup, Tag
from pydantic import AfterValidator, Field

from adapters.base import (
    AccessDenied,
    HttpResponse,
    Maintenance,
    ParseError,
    SourceError,
    UpstreamError,
)
from adapters.blocks import detect_block, parse_retry_after
from adapters.request import StrictOptions
from aggregator.models import (
    CERTIFICATE_FIELDS,
    DATE_FIELDS,
    Certificate,
    CertKind,
    CertStatus,
    Department,
)
from aggregator.numbers import normalise

# --- Text ---------------------------------------------------------------------------------------

_SPACE = re.compile(r"\s+")


def clean_text(value: object) -> str:
    """A cell or field value as plain text: runs of whitespace (ideographic and no-break spaces included)
    collapsed to one space, trimmed; `None` becomes "". The source's spelling is kept (no NFKC): compare
    with `fold` instead."""
    if value is None:
        return ""
    return _SPACE.sub(" ", str(value)).strip()


def fold(value: object) -> str:
    """Text for comparisons: `clean_text` after NFKC (full-width to half-width, Ⅱ to II)."""
    return clean_text(unicodedata.normalize("NFKC", clean_text(value)))


def label_key(text: str) -> str:
    """A label as compared with the labels in config: NFKC, no whitespace, no trailing colon.

    "职业（工种）：" and "职业(工种)" are the same key."""
    return _SPACE.sub("", unicodedata.normalize("NFKC", text)).rstrip(":：")


# --- Dotted paths -------------------------------------------------------------------------------

MISSING: Any = object()  # what `dotted_get` returns for an absent path (None is a present null)
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _path_parts(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for m in _PATH_PART.finditer(path):
        name, index = m.groups()
        if index is not None:
            parts.append(int(index))
        elif name.isdigit():
            parts.append(int(name))
        else:
            parts.append(name)
    return parts


def check_path(path: str) -> str:
    """Validate a dotted path from config (`data`, `data.licList`, `data[0].certNum`); return it."""
    if not path or not _path_parts(path) or _PATH_PART.sub("", path).replace(".", "") != "":
        raise ValueError(f"not a dotted path: {path!r} (use names joined by dots, list indexes as [0])")
    return path


def dotted_get(obj: Any, path: str, default: Any = MISSING) -> Any:
    """The value at `path` in nested dicts/lists; `default` (or `MISSING`) when any step is absent."""
    cur = obj
    for part in _path_parts(path):
        in_list = isinstance(part, int) and isinstance(cur, list) and -len(cur) <= part < len(cur)
        in_map = isinstance(part, str) and isinstance(cur, Mapping) and part in cur
        if in_list or in_map:
            cur = cur[part]
        else:
            return default
    return cur


# --- Dates --------------------------------------------------------------------------------------

_DATE_PATTERNS = (
    re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T].*)?$"),
    re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})(?: .*)?$"),
    re.compile(r"^(\d{4})\.(\d{1,2})\.(\d{1,2})$"),
    re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日$"),
    re.compile(r"^(\d{4})(\d{2})(\d{2})$"),
)


def parse_date(value: object, where: str) -> date | None:
    """A date as departments write it (2023-06-30, 2023/6/30, 2023.06.30, 2023年6月30日, 20230630, with or
    without a time part). Empty or null is None; anything else that is not a date is a `ParseError`."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = fold(value)
    if not text:
        return None
    for pattern in _DATE_PATTERNS:
        if m := pattern.match(text):
            try:
                return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            except ValueError:
                break
    raise ParseError(where, f"not a date: {text[:40]!r}")


# --- Status tables ------------------------------------------------------------------------------


class StatusTable:
    """The source's status words or codes mapped to `CertStatus`. Unmapped words are `unknown`, never valid."""

    def __init__(self, table: Mapping[str, CertStatus]) -> None:
        self._table = {fold(k): CertStatus(v) for k, v in table.items()}

    def map(self, raw: object) -> CertStatus:
        return self._table.get(fold(raw), CertStatus.UNKNOWN)


# --- Status and block pages ----------------------------------------------------------------------
# Captcha, WAF, ban, rate-limit and maintenance pages are recognised in one place, adapters/blocks.py (the
# runner applies it to every response first); adapters call it again so that they are safe on their own.


def header(resp: HttpResponse, name: str) -> str | None:
    """A response header, case-insensitively."""
    value = resp.headers.get(name)
    if value is not None:
        return value
    lname = name.lower()
    return next((v for k, v in resp.headers.items() if k.lower() == lname), None)


def retry_after_s(resp: HttpResponse) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), or None when absent or unreadable."""
    return parse_retry_after(header(resp, "Retry-After"))


def _snippet(text: str) -> str:
    return clean_text(BeautifulSoup(text[:4000], "lxml").get_text(" ") if "<" in text[:200] else text[:400])[:120]


def check_status(resp: HttpResponse) -> None:
    """Raise the typed error a response's status (with its body) means; return for 2xx.

    A recognised block page first (429 rate_limited, 403 blocked, captcha, ban, maintenance: see
    adapters/blocks.py); then 401 blocked (credentials refused), 503 maintenance, other 5xx upstream_error
    (retryable), other 4xx an upstream error that is not retried."""
    status = resp.status
    if 200 <= status < 300:
        return
    if blocked := detect_block(resp):
        raise blocked
    text = resp.text or ""
    if status == 401:
        raise AccessDenied(f"HTTP 401 凭证被拒绝 (credentials refused) {_snippet(text)}".strip())
    if status == 503:
        raise Maintenance(f"HTTP 503 服务暂不可用 (service unavailable) {_snippet(text)}".strip())
    if status >= 500:
        raise UpstreamError(f"HTTP {status} {_snippet(text)}".strip())
    raise SourceError(f"HTTP {status} {_snippet(text)}".strip())


def blocked_or_parse_error(resp: HttpResponse, where: str, detail: str) -> SourceError:
    """What a 2xx answer without result or not-found markers is: a recognised block page, else a ParseError."""
    return detect_block(resp) or ParseError(where, detail)


# --- HTML label/value tables --------------------------------------------------------------------


def soup_of(text: str) -> BeautifulSoup:
    return BeautifulSoup(text, "lxml")


@contextmanager
def parsed_html(text: str) -> Iterator[BeautifulSoup]:
    """The page's tree for the duration of a parse, then destroyed: a BeautifulSoup tree is a web of
    parent/child reference cycles that only the garbage collector would otherwise free, and under load
    those full collections are the long tail of lookup latency (bench/bench_fanout.py)."""
    soup = soup_of(text)
    try:
        yield soup
    finally:
        soup.decompose()


def select_all(root: BeautifulSoup | Tag, selector: str) -> list[Tag]:
    """`root.select(selector)`; an invalid selector from config is a ParseError naming it."""
    try:
        return list(root.select(selector))
    except Exception as e:  # soupsieve raises its own SelectorSyntaxError
        raise ParseError(selector, f"invalid CSS selector: {e}") from e


def label_values(table: Tag, label_selector: str) -> list[tuple[str, str]]:
    """The (label, value) pairs of a label/value table: each cell matching `label_selector` is a label and
    the next `<td>` in its row that is not itself a label is its value. Labels come back as `label_key`s."""
    label_cells = select_all(table, label_selector)
    labels = {id(c) for c in label_cells}
    pairs: list[tuple[str, str]] = []
    for cell in label_cells:
        value_cell = cell.find_next_sibling(["td", "th"])
        if value_cell is None or id(value_cell) in labels:
            pairs.append((label_key(cell.get_text()), ""))
        else:
            pairs.append((label_key(cell.get_text()), clean_text(value_cell.get_text(" "))))
    return pairs


# --- Canonical fields -----------------------------------------------------------------------------

def _canonical(name: str) -> str:
    if name not in CANONICAL_FIELDS:
        raise ValueError(f"unknown certificate field {name!r}; one of {', '.join(CANONICAL_FIELDS)}")
    return name


#: What a source's options may map its values to: the certificate's fields (see `models.Certificate`), but
#: the department (the source's own) and the source's own wording (kept as read).
CANONICAL_FIELDS: tuple[str, ...] = tuple(f for f in CERTIFICATE_FIELDS if f not in ("department", "status_text"))
CanonicalField = Annotated[str, AfterValidator(_canonical)]


class FieldRules(StrictOptions):
    """How a source's values become canonical fields; shared by the `jsonapi` and `html` options.

    status_map   the source's status words or codes -> valid | expired | suspended | revoked | unknown
    status_text  code -> the words shown as `status_text` (when the source gives codes; else its own words)
    value_maps   per field, source value -> canonical value (e.g. gender {"1" = "男", "2" = "女"})
    kind_map     value of the `kind` field -> certificate kind
    defaults     per field, the value used when the source gives none
    default_status  the status when the source states none at all (e.g. a register that lists only
                 certificates in force); unset means `unknown`
    """

    status_map: dict[str, CertStatus] = Field(default_factory=dict)
    status_text: dict[str, str] = Field(default_factory=dict)
    value_maps: dict[CanonicalField, dict[str, str]] = Field(default_factory=dict)
    kind_map: dict[str, CertKind] = Field(default_factory=dict)
    defaults: dict[CanonicalField, str] = Field(default_factory=dict)
    default_status: CertStatus | None = None
    items_separator: str = "和"


def build_certificate(
    raw: Mapping[str, Any],
    rules: FieldRules,
    *,
    department: Department,
    kind: CertKind,
    where: Callable[[str], str],
) -> Certificate:
    """A `Certificate` from raw values keyed by canonical field. `where(field)` names the path or selector a
    value came from, for errors. `kind` is used unless a `kind` value maps through `kind_map`."""
    status_table = StatusTable(rules.status_map)
    value_maps = {f: {fold(k): v for k, v in m.items()} for f, m in rules.value_maps.items()}
    status_text = {fold(k): v for k, v in rules.status_text.items()}
    kind_map = {fold(k): v for k, v in rules.kind_map.items()}
    values: dict[str, Any] = {"department": department, "kind": kind}
    for f in set(raw) | set(rules.defaults):
        value = raw.get(f)
        if f == "items" and isinstance(value, list):
            values["items"] = [t for t in (clean_text(x) for x in value) if t]
            continue
        text = clean_text(value)
        if not text and f in rules.defaults:
            value = text = rules.defaults[f]
        if f in value_maps and fold(text) in value_maps[f]:
            value = text = value_maps[f][fold(text)]
        if f == "number":
            if not text:
                raise ParseError(where(f), "empty certificate number")
            values["number"] = normalise(text)
        elif f in DATE_FIELDS:
            values[f] = parse_date(value, where(f))
        elif f == "status":
            if text:
                values["status"] = status_table.map(text)
                values["status_text"] = status_text.get(fold(text), text)
        elif f == "items":
            values["items"] = [p for p in (clean_text(x) for x in text.split(rules.items_separator)) if p]
        elif f == "kind":
            if text:
                if fold(text) not in kind_map:
                    raise ParseError(where(f), f"unknown certificate type {text!r}; known: {sorted(rules.kind_map)}")
                values["kind"] = kind_map[fold(text)]
        else:
            values[f] = text or None
    if "number" not in values:
        raise ParseError(where("number"), "no certificate number")
    if "status" not in values and rules.default_status is not None:
        values["status"] = rules.default_status
    return Certificate(**values)
