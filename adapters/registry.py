"""Which adapter a source uses: `build_adapter(source)` by the `adapter` name in its TOML.

    html      generic HTML (adapters/html.py)          jsonapi   generic JSON (adapters/jsonapi.py)
    link      link-out to a public page (link.py)      mem       MEM JSON, current vs history (mem.py)
    samr      SAMR two-step JSON (samr.py)             mohrss    MOHRSS HTML (mohrss.py)
    mohurd    MOHURD exchange-schema JSON (mohurd.py)

Each adapter validates `source.options` with its own pydantic model; a mistake is an `AdapterConfigError`
(a `ConfigError` and a `ValueError`) naming `sources/<id>.toml: options.<key>`. Uploaded-records sources are
not adapters: the gateway reads the records store for them.
"""

from __future__ import annotations

from collections.abc import Callable

from adapters.base import Adapter, LinkAdapter
from adapters.html import HtmlAdapter
from adapters.jsonapi import JsonApiAdapter
from adapters.link import LinkSource
from adapters.mem import MemAdapter
from adapters.mohurd import MohurdAdapter
from adapters.mohrss import MohrssAdapter
from adapters.request import AdapterConfigError
from adapters.samr import SamrAdapter
from aggregator.config import SourceConfig
from aggregator.models import Mode

HTTP_ADAPTERS: dict[str, Callable[[SourceConfig], Adapter]] = {
    "html": HtmlAdapter,
    "jsonapi": JsonApiAdapter,
    "mem": MemAdapter,
    "samr": SamrAdapter,
    "mohrss": MohrssAdapter,
    "mohurd": MohurdAdapter,
}
LINK_ADAPTERS: dict[str, Callable[[SourceConfig], LinkAdapter]] = {"link": LinkSource}
ADAPTER_NAMES: tuple[str, ...] = (*HTTP_ADAPTERS, *LINK_ADAPTERS)


def build_adapter(source: SourceConfig) -> Adapter | LinkAdapter:
    """The adapter for `source`, its options validated. Raises `AdapterConfigError` naming file and key."""
    where = f"sources/{source.id}.toml"
    if source.mode == Mode.RECORDS or source.adapter == "records":
        raise AdapterConfigError(
            [f"{where}: adapter: uploaded-records sources are read from the records store, not built as adapters"]
        )
    if source.adapter in LINK_ADAPTERS:
        if source.mode != Mode.LINK:
            raise AdapterConfigError(
                [f"{where}: mode: adapter {source.adapter!r} needs mode 'link', not {str(source.mode)!r}"]
            )
        return LINK_ADAPTERS[source.adapter](source)
    if source.adapter in HTTP_ADAPTERS:
        if source.mode not in (Mode.API, Mode.HTML):
            raise AdapterConfigError(
                [f"{where}: mode: adapter {source.adapter!r} needs mode 'api' or 'html', not {str(source.mode)!r}"]
            )
        return HTTP_ADAPTERS[source.adapter](source)
    raise AdapterConfigError([f"{where}: adapter: unknown adapter {source.adapter!r}; known: {list(ADAPTER_NAMES)}"])
