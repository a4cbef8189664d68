"""What every sandbox site shares: the aiohttp app, fault injection, token check, stats and data indexes.

A department site (mem.py, samr.py, mohrss.py, mohurd.py) subclasses `Site`, adds its routes and says how
it renders a captcha and an error in its own shape. Faults are applied by one middleware, in this order:
latency, fail_next (502), error_rate (500/502/504/reset/hang), maintenance (503), ban (403), 429, captcha
(200), garbage (200); `layout_changed` is left to the handler (`self.layout_changed(request)`).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from datetime import date
from typing import Any, ClassVar

from aiohttp import web

from aggregator.models import Certificate, CertStatus, Department
from aggregator.sandbox.dataset import Dataset
from aggregator.sandbox.faults import (
    FaultError,
    FaultState,
    ban_page,
    garbage_response,
    maintenance_page,
    rate_limited_page,
    status_page,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONTROL_PREFIX = "/_sandbox/"
_LAYOUT_KEY = web.RequestKey("layout_changed", bool)


def json_response(data: Any, status: int = 200) -> web.Response:
    """JSON with Chinese left as UTF-8 (as the real sites send it), so body markers can be read as text."""
    return web.Response(
        status=status, text=json.dumps(data, ensure_ascii=False), content_type="application/json", charset="utf-8"
    )


def iso(d: date | None) -> str | None:
    return d.isoformat() if d else None


def index(certs: Iterable[Certificate]) -> tuple[dict[str, list[Certificate]], dict[str, list[Certificate]]]:
    """Certificates by holder ID number and by certificate number, for O(1) lookups."""
    by_id: dict[str, list[Certificate]] = {}
    by_number: dict[str, list[Certificate]] = {}
    for c in certs:
        if c.holder_id_number:
            by_id.setdefault(c.holder_id_number, []).append(c)
        by_number.setdefault(c.number, []).append(c)
    return by_id, by_number


def is_valid_today(cert: Certificate, today: date) -> bool:
    return cert.effective_status(today) == CertStatus.VALID


class Site:
    """One department's sandbox site. Subclasses set the class attributes and implement the three hooks."""

    name: ClassVar[str]  # mem | samr | mohrss | mohurd
    source_id: ClassVar[str]  # mem_api | samr_api | mohrss_html | mohurd_api
    department: ClassVar[Department]

    def __init__(
        self, dataset: Dataset, *, faults: dict[str, Any] | None = None, require_token: str | None = None
    ) -> None:
        self.dataset = dataset
        self.today = dataset.today
        self.state = FaultState(self.name, faults)
        self.require_token = require_token
        self.by_id, self.by_number = index(dataset.live[self.department])
        self.requests: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.closing = asyncio.Event()  # set on shutdown: releases hung requests

    def set_status(self, number: str, status: CertStatus) -> int:
        """Change what the site says about a certificate from now on (tests: a card revoked or suspended while
        it is monitored); the number of cards changed."""
        changed = 0
        for index_ in (self.by_id, self.by_number):
            for certs in index_.values():
                for i, c in enumerate(certs):
                    if c.number == number and c.status != status:
                        certs[i] = c.model_copy(update={"status": status, "status_text": None})
                        changed += 1
        return changed

    # --- hooks ---

    def add_routes(self, router: web.UrlDispatcher) -> None:
        raise NotImplementedError

    def captcha_response(self) -> web.Response:
        """HTTP 200 with the site's own captcha page or message."""
        raise NotImplementedError

    def error_response(self, status: int, message: str) -> web.Response:
        """An error in the site's own shape (bad parameters, missing token)."""
        raise NotImplementedError

    # --- the application ---

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get(CONTROL_PREFIX + "faults", self._get_faults)
        app.router.add_post(CONTROL_PREFIX + "faults", self._post_faults)
        app.router.add_delete(CONTROL_PREFIX + "faults", self._delete_faults)
        app.router.add_get(CONTROL_PREFIX + "stats", self._get_stats)
        self.add_routes(app.router)
        return app

    def stats(self) -> dict[str, Any]:
        return {
            "site": self.name,
            "total": sum(self.requests.values()),
            "endpoints": dict(self.requests),
            "faults": dict(self.injected),
        }

    def layout_changed(self, request: web.Request) -> bool:
        return request.get(_LAYOUT_KEY, False)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        self.requests[request.path] += 1
        if self.require_token and request.headers.get("Authorization") != f"Bearer {self.require_token}":
            self.injected["unauthorised"] += 1
            return self.error_response(401, "未授权：缺少或无效的访问令牌")
        delay = self.state.delay_s()
        if delay > 0:
            await asyncio.sleep(delay)
        fault = await self._fault(request)
        if fault is not None:
            return fault
        request[_LAYOUT_KEY] = self.state.faults.layout_changed
        return await handler(request)

    async def _fault(self, request: web.Request) -> web.StreamResponse | None:
        """The response a switched-on fault gives instead of the answer, or None."""
        f = self.state.faults
        if self.state.take_fail_next():
            return self._count("fail_next", status_page(502))
        kind = self.state.draw_error()
        if kind == "reset":
            self.injected["reset"] += 1
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)  # never reaches the client: the connection is gone
        if kind == "hang":
            self.injected["hang"] += 1
            await self.closing.wait()
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=503)
        if kind is not None:
            return self._count(kind, status_page(int(kind)))
        if f.maintenance:
            return self._count("maintenance", maintenance_page())
        if f.ban:
            return self._count("ban", ban_page())
        if f.rate_limit_retry_after:
            return self._count("rate_limit", rate_limited_page(f.rate_limit_retry_after))
        if f.captcha:
            return self._count("captcha", self.captcha_response())
        if f.garbage:
            return self._count("garbage", garbage_response(self.state.rng))
        return None

    def _count(self, what: str, response: web.Response) -> web.Response:
        self.injected[what] += 1
        return response

    # --- control endpoints ---

    async def _get_faults(self, request: web.Request) -> web.Response:
        return json_response(self.state.faults.model_dump())

    async def _post_faults(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
        except ValueError:
            return json_response({"error": "body must be a JSON object of switch: value"}, status=400)
        try:
            faults = self.state.update(changes)
        except FaultError as e:
            return json_response({"error": str(e)}, status=400)
        return json_response(faults.model_dump())

    async def _delete_faults(self, request: web.Request) -> web.Response:
        return json_response(self.state.clear().model_dump())

    async def _get_stats(self, request: web.Request) -> web.Response:
        return json_response(self.stats())
