"""The link adapter: no request, only a link to a department's public query page and what a person must do
there (solve the captcha, type the ID number and name). certq never requests these pages and never solves
their captchas; the answer carries the link with outcome `manual`.

    [options]
    path = "/"                             # the query page, under the source's endpoint
    path_with_id = "/query?idCard={id_number}"   # optional: used when the query offers an ID number and the
                                           #   site takes it as a parameter (values are URL-encoded)
    instructions_zh = "打开链接，输入身份证号和姓名，完成验证码后查询。"
    instructions_en = "Open the link, type the ID number and name, solve the captcha, then search."
"""

from __future__ import annotations

import string
from urllib.parse import quote

from pydantic import Field, field_validator

from adapters.request import QUERY_VARS, AdapterConfigError, StrictOptions, query_vars, validate_options
from aggregator.config import SourceConfig
from aggregator.models import ManualLink, Query


def _check(template: str) -> str:
    used = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    unknown = used - set(QUERY_VARS)
    if unknown:
        raise ValueError(f"template {template!r} uses {sorted(unknown)}; known: {list(QUERY_VARS)}")
    return template


class LinkOptions(StrictOptions):
    path: str = "/"
    path_with_id: str | None = None
    instructions_zh: str = Field(min_length=1)
    instructions_en: str = Field(min_length=1)

    @field_validator("path", "path_with_id", "instructions_zh", "instructions_en")
    @classmethod
    def _templates(cls, v: str | None) -> str | None:
        return _check(v) if v is not None else v


class LinkSource:
    """A public query page behind a captcha: `link(query)` says where to go and what to do."""

    def __init__(self, source: SourceConfig) -> None:
        if not source.endpoint:
            raise AdapterConfigError(
                [f"sources/{source.id}.toml: endpoint: a link source needs the public site's address"]
            )
        self.source = source
        self.options: LinkOptions = validate_options(LinkOptions, source)

    def link(self, query: Query) -> ManualLink:
        values = query_vars(query)
        template = self.options.path
        if self.options.path_with_id and values["id_number"]:
            template = self.options.path_with_id
        path = template.format_map({k: quote(v, safe="") for k, v in values.items()})
        base = (self.source.endpoint or "").rstrip("/")
        url = base + ("/" + path.lstrip("/") if path.strip("/") else "/")
        zh = self.options.instructions_zh.format_map(values)
        en = self.options.instructions_en.format_map(values)
        return ManualLink(url=url, instructions=f"{zh} ({en})")
