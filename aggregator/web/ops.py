"""Probes and metrics for whoever runs the service.

    GET /healthz    the process is up (no dependency is asked)
    GET /readyz     the records store and Redis (when configured) answer; 503 naming the one that does not
    GET /metrics    Prometheus text format (see metrics.py)
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aggregator.web.access import services
from aggregator.web.metrics import CONTENT_TYPE
from aggregator.web.problems import NotReady

PROBE_TIMEOUT_S = 2.0


async def healthz(request: Request) -> Response:
    """The process is up."""
    return JSONResponse({"status": "ok"})


async def _check_store(gateway: object) -> str:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            async with gateway.store.engine.connect() as conn:  # type: ignore[attr-defined]
                await conn.execute(sa.text("SELECT 1"))
    except Exception as e:  # noqa: BLE001 - any failure is "not ready", named
        return f"failed: {type(e).__name__}: {e}"[:300]
    return "ok"


async def _check_redis(gateway: object) -> str:
    client = gateway.cache.client  # type: ignore[attr-defined]
    if client is None:
        return "not configured"
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await client.ping()
    except Exception as e:  # noqa: BLE001
        return f"failed: {type(e).__name__}: {e}"[:300]
    return "ok"


async def readyz(request: Request) -> Response:
    """Ready when the records store answers and Redis (if configured) answers; otherwise 503 naming which."""
    gw = services(request).gateway
    store, redis = await asyncio.gather(_check_store(gw), _check_redis(gw))
    checks = {"store": store, "redis": redis}
    if any(v.startswith("failed") for v in checks.values()):
        raise NotReady(checks)
    return JSONResponse({"status": "ready", "checks": checks})


async def metrics(request: Request) -> Response:
    """Prometheus metrics of this process."""
    svc = services(request)
    await svc.metrics.refresh(svc.gateway)
    health = getattr(svc.limiter, "health", None)
    if health is not None:
        svc.metrics.note_redis("rate_limits", bool(health.down))
    return Response(svc.metrics.render(), media_type=CONTENT_TYPE)


def ops_routes() -> list[Route]:
    return [
        Route("/healthz", healthz, methods=["GET"], name="healthz"),
        Route("/readyz", readyz, methods=["GET"], name="readyz"),
        Route("/metrics", metrics, methods=["GET"], name="metrics"),
    ]
