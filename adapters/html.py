"""The generic HTML adapter: a source described in TOML alone (request shape, result and not-found markers as
CSS selectors, and label/value tables whose labels map to canonical fields). beautifulsoup4 with lxml.

    [options]
    found = "table.tab_info1"             # the page has a result when this selector matches
    not_found = "#nores_txt h2"           # ... and says "nothing" when this one matches
    not_found_text = ["没有查到相关信息"]   #     with one of these texts
    tables = "table.tab_info1"            # label/value tables: the first `shared_tables` describe the person,
    shared_tables = 1                     #     each further one is a certificate
    label_cells = "th, td.lab"            # labels; the value is the next cell of the row
    [options.labels]                      # label text (NFKC, no spaces or colon) -> canonical field
    "证书编号" = "number"

A page with neither marker is a recognised block page or a parse error naming the `found` selector; a
certificate table without a required label is a parse error naming the table and the label.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bs4 import BeautifulSoup
from pydantic import Field, field_validator

from adapters.base import HttpResponse, LookupFlow, NotFound, ParseError
from adapters.parsing import (
    CanonicalField,
    FieldRules,
    blocked_or_parse_error,
    build_certificate,
    check_status,
    clean_text,
    fold,
    label_key,
    label_values,
    select_all,
    parsed_html,
)
from adapters.request import (
    AdapterConfigError,
    HttpSource,
    RequestShape,
    check_shapes_cover_patterns,
    choose_shape,
    query_vars,
    validate_options,
)
from aggregator.config import SourceConfig
from aggregator.models import Certificate, CertKind, Query


def _number_only() -> list[CanonicalField]:
    return ["number"]


class HtmlOptions(FieldRules):
    requests: list[RequestShape] = Field(min_length=1)
    found: str = Field(min_length=1)
    not_found: str = Field(min_length=1)
    not_found_text: list[str] = Field(default_factory=list)
    tables: str = Field(min_length=1)
    shared_tables: int = Field(0, ge=0)
    label_cells: str = "th, td.lab"
    labels: dict[str, CanonicalField]
    required: list[CanonicalField] = Field(default_factory=_number_only)
    # A complete page ends with this; a page without it was cut short (None: do not check).
    complete_marker: str | None = "</html>"

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        if "number" not in v.values():
            raise ValueError("some label must map to 'number' (the certificate number)")
        return {label_key(k): f for k, f in v.items()}


class HtmlAdapter(HttpSource):
    """An HTML source configured by `HtmlOptions`. Department modules subclass it for what config cannot say."""

    accept = "text/html,application/xhtml+xml"
    options_model: type[HtmlOptions] = HtmlOptions

    def __init__(self, source: SourceConfig) -> None:
        super().__init__(source)
        self.options = validate_options(self.options_model, source)
        check_shapes_cover_patterns(self.options.requests, source)
        missing = [f for f in self.options.required if f not in self.options.labels.values()]
        if missing:
            raise AdapterConfigError(
                [f"sources/{source.id}.toml: options.required: {missing} have no label in options.labels"]
            )

    # --- request ------------------------------------------------------------------------------

    def lookup(self, query: Query) -> LookupFlow:
        values = query_vars(query)
        shape = choose_shape(self.options.requests, values, self.source.id)
        resp = yield shape.build(self.endpoint, values, self.headers())
        return self.parse(resp)

    # --- response -----------------------------------------------------------------------------

    def parse(self, resp: HttpResponse) -> list[Certificate]:
        check_status(resp)
        o = self.options
        with parsed_html(resp.text or "") as soup:
            if select_all(soup, o.found):
                if o.complete_marker and o.complete_marker.lower() not in (resp.text or "").lower():
                    raise ParseError("body", f"page cut short: no {o.complete_marker}")
                return self.certificates(soup)
            markers = select_all(soup, o.not_found)
            texts = [clean_text(m.get_text(" ")) for m in markers]
        wanted = [fold(t) for t in o.not_found_text]
        if markers and (not wanted or any(t in fold(text) for text in texts for t in wanted)):
            raise NotFound(texts[0] or "not found")
        raise blocked_or_parse_error(
            resp, o.found, f"neither the result marker nor the not-found marker ({o.not_found}) is on the page"
        )

    def label_for(self, field: str) -> str:
        return next((label for label, f in self.options.labels.items() if f == field), field)

    def certificates(self, soup: BeautifulSoup) -> list[Certificate]:
        o = self.options
        tables = select_all(soup, o.tables)
        if len(tables) <= o.shared_tables:
            raise ParseError(
                o.tables,
                f"expected {o.shared_tables} person table(s) and at least one certificate table, found {len(tables)}",
            )
        shared: dict[str, Any] = {}
        for table in tables[: o.shared_tables]:
            for label, value in label_values(table, o.label_cells):
                if (field := o.labels.get(label)) and value:
                    shared.setdefault(field, value)
        out = []
        for index in range(o.shared_tables, len(tables)):
            raw = dict(shared)
            seen: set[str] = set()
            for label, value in label_values(tables[index], o.label_cells):
                if field := o.labels.get(label):
                    seen.add(field)
                    if value or field not in raw:
                        raw[field] = value
            where_table = f"{o.tables}[{index}]"
            missing = [f for f in o.required if f not in seen and f not in shared]
            if missing:
                labels = "/".join(self.label_for(f) for f in missing)
                raise ParseError(f"{where_table} {labels}", f"label missing (labels are {o.label_cells})")
            raw = self.adjust(raw, where_table)
            out.append(
                build_certificate(
                    raw,
                    o,
                    department=self.source.department,
                    kind=self.kind_for(raw),
                    where=self._where(where_table),
                )
            )
        return self.finish(out)

    def _where(self, table: str) -> Callable[[str], str]:
        """Names a field's origin for errors: the table and the field's label."""
        return lambda field: f"{table} {self.label_for(field)}"

    def kind_for(self, raw: dict[str, Any]) -> CertKind:
        """The kind used when no `kind` label maps one: the source's first kind."""
        return self.source.kinds[0]

    def adjust(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        """Hook for department modules: rewrite raw values before they become a certificate."""
        return raw

    def finish(self, certificates: list[Certificate]) -> list[Certificate]:
        """Hook for department modules: choose among the parsed certificates (non-empty, or raise)."""
        return certificates
