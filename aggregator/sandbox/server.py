"""Run the four department sandbox sites on loopback, together, from one data set.

    async with Sandbox(generate(today=TODAY), faults={"mem": {"captcha": True}}) as sb:
        sb.urls["mem_api"]                      # 'http://127.0.0.1:40123'
        await sb.set_faults("samr", latency_ms=200)
        sb.stats("samr")["total"]

Ports: `None` or 0 gives ephemeral ports (tests); an int > 0 is a base (mem, samr, mohrss, mohurd get
base, base+1, base+2, base+3; `DEFAULT_PORT_BASE` = 18701); or a mapping site -> port.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from aggregator.sandbox.dataset import Dataset
from aggregator.sandbox.mem import MemSite
from aggregator.sandbox.mohrss import MohrssSite
from aggregator.sandbox.mohurd import MohurdSite
from aggregator.sandbox.samr import SamrSite
from aggregator.sandbox.sites import Site

HOST = "127.0.0.1"
DEFAULT_PORT_BASE = 18701
SITE_CLASSES: tuple[type[Site], ...] = (MemSite, SamrSite, MohrssSite, MohurdSite)
SITE_NAMES: tuple[str, ...] = tuple(c.name for c in SITE_CLASSES)


def default_ports(base: int = DEFAULT_PORT_BASE) -> dict[str, int]:
    """mem, samr, mohrss, mohurd on base .. base+3 (base 0: all ephemeral)."""
    return {name: (base + i if base else 0) for i, name in enumerate(SITE_NAMES)}


class Sandbox:
    """The four sites, started and stopped together; `urls` maps source ids to base URLs once started."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        faults: Mapping[str, Mapping[str, Any]] | None = None,
        ports: Mapping[str, int] | int | None = None,
        require_token: str | None = None,
    ) -> None:
        faults = dict(faults or {})
        unknown = [k for k in faults if self._resolve_name(k) is None]
        if unknown:
            raise ValueError(f"unknown sandbox site(s) {unknown}; known: {list(SITE_NAMES)} or their source ids")
        by_site = {self._resolve_name(k): dict(v) for k, v in faults.items()}
        self.sites: dict[str, Site] = {
            cls.name: cls(dataset, faults=by_site.get(cls.name), require_token=require_token) for cls in SITE_CLASSES
        }
        if ports is None or isinstance(ports, int):
            self.ports = default_ports(ports or 0)
        else:
            self.ports = {**default_ports(0), **{self._name(k): int(v) for k, v in ports.items()}}
        self.dataset = dataset
        self._runners: list[web.AppRunner] = []
        self.urls: dict[str, str] = {}

    @staticmethod
    def _resolve_name(site: str) -> str | None:
        for cls in SITE_CLASSES:
            if site in (cls.name, cls.source_id):
                return cls.name
        return None

    def _name(self, site: str) -> str:
        name = self._resolve_name(site)
        if name is None:
            raise KeyError(f"unknown sandbox site {site!r}; known: {list(SITE_NAMES)} or their source ids")
        return name

    def site(self, site: str) -> Site:
        """A site by name (mem) or source id (mem_api)."""
        return self.sites[self._name(site)]

    async def start(self) -> None:
        try:
            for name, site in self.sites.items():
                site.closing = asyncio.Event()
                runner = web.AppRunner(site.app(), handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
                await runner.setup()
                self._runners.append(runner)
                await web.TCPSite(runner, HOST, self.ports[name]).start()
                port = runner.addresses[0][1]
                self.urls[site.source_id] = f"http://{HOST}:{port}"
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        for site in self.sites.values():
            site.closing.set()
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()
        self.urls = {}

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def url(self, site: str) -> str:
        """The base URL of a site by name or source id."""
        return self.urls[self.site(site).source_id]

    async def set_faults(self, site: str, **faults: Any) -> dict[str, Any]:
        """Switch faults on a running site (the others keep their value); returns all its switches."""
        return self.site(site).state.update(faults).model_dump()

    async def clear_faults(self, site: str | None = None) -> None:
        """Switch every fault off on one site, or on all of them."""
        for s in [self.site(site)] if site else self.sites.values():
            s.state.clear()

    def faults(self, site: str) -> dict[str, Any]:
        return self.site(site).state.faults.model_dump()

    def stats(self, site: str) -> dict[str, Any]:
        """Requests served: {"site", "total", "endpoints": {path: n}, "faults": {kind: n}}."""
        return self.site(site).stats()
