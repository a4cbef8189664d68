"""The certq web application: the JSON API, the pages, the docs, probes and metrics, in one Starlette app.

    app = create_app()                                   # Settings.load(), CERTQ_DATABASE_URL / CERTQ_REDIS_URL
    app = create_app(settings, database_url="sqlite+aiosqlite:////tmp/certq.sqlite3", web=WebConfig(ip_per_minute=30))
    app = create_app(gateway=gw)                         # an open gateway (the caller closes it)

    uvicorn --factory aggregator.web.app:create_app      # what `certq serve --workers N` runs

The lifespan opens the gateway (unless one is given), builds the service layer on it (`services.Services`:
handlers reach the gateway only through it) and closes it. Every request passes the middleware in
`middleware.py` (metrics, problem documents for every error, client IP, body limit, key, rate limit).

The routes: the API's declared endpoints (`api.py`, `uploads.py`, `ops.py`; `/openapi.json` is built from
them), the static files and the pages (`pages/`, the docs page among them).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from aggregator.config import Settings
from aggregator.web.api import api_routes
from aggregator.web.campaigns import campaign_routes
from aggregator.web.config import WebConfig
from aggregator.web.holders.api import holder_routes
from aggregator.web.metrics import Metrics
from aggregator.web.middleware import Front, Gate
from aggregator.web.openapi import openapi_routes
from aggregator.web.ops import ops_routes
from aggregator.web.problems import MethodNotAllowed, RouteNotFound, WebError, problem_response
from aggregator.web.receipts import receipt_routes
from aggregator.web.rosters import roster_routes
from aggregator.web.services import Services
from aggregator.web.services.work import start_work
from aggregator.web.source_history import history_routes
from aggregator.web.uploads import upload_routes
from aggregator.web.webhooks import webhook_routes

if TYPE_CHECKING:
    from aggregator.gateway import Gateway

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (no route, wrong method) as problem documents."""
    assert isinstance(exc, HTTPException)
    problem: WebError
    if exc.status_code == 404:
        problem = RouteNotFound(request.url.path)
    elif exc.status_code == 405:
        problem = MethodNotAllowed(request.method, (exc.headers or {}).get("Allow"))
    else:
        from aggregator.web.problems import BadRequest

        problem = BadRequest("请求有误", f"HTTP {exc.status_code}: {exc.detail}")
    return problem_response(problem)


def app_routes() -> list[BaseRoute]:
    """Every route of the app, in the order they are matched."""
    from aggregator.web.pages import page_routes

    return [
        *api_routes(),
        *upload_routes(),
        *roster_routes(),
        *webhook_routes(),
        *holder_routes(),
        *history_routes(),
        *receipt_routes(),
        *campaign_routes(),
        *ops_routes(),
        *openapi_routes(),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
        *page_routes(),
    ]


def create_app(
    settings: Settings | None = None,
    *,
    gateway: Gateway | None = None,
    database_url: str | None = None,
    redis_url: str | None = None,
    web: WebConfig | None = None,
) -> Starlette:
    """The app. Without `gateway`, the lifespan opens one on `settings` (default `Settings.load()`),
    `database_url` (default CERTQ_DATABASE_URL or the SQLite file) and `redis_url` (default CERTQ_REDIS_URL)
    and closes it at shutdown; `web` defaults to `WebConfig.from_env()`."""
    web = web or WebConfig.from_env()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from aggregator.gateway import Gateway
        from aggregator.web.multipart import remove_stale_uploads

        remove_stale_uploads(web.upload_dir)  # temporary uploads of a process that died mid-import
        owned = gateway is None
        gw = gateway
        if gw is None:
            gw = await Gateway.open(
                settings or Settings.load(), database_url=database_url, redis_url=redis_url, deadline_s=web.deadline_s
            )
        try:
            app.state.services = services = Services.on(gw, config=web, metrics=metrics)
            work = start_work(services, web)
            if web.freeze_gc:
                gc.collect()
                gc.freeze()
            yield
            await work.stop()
            await services.aclose()
        finally:
            if owned:
                await gw.close()

    app = Starlette(
        routes=app_routes(),
        middleware=[
            Middleware(Front, metrics=metrics),  # metrics, RateLimit-* headers, problem documents
            Middleware(Gate, config=web, services=lambda: app.state.services),
        ],
        exception_handlers={HTTPException: _http_exception},
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.web_config = web
    return app

