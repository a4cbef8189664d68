"""Probes and metrics for whoever runs the service.

    GET /healthz    the process is up (no dependency is asked)
    GET /readyz     the records store and Redis (when configured) answer; 503 naming the one that does not
    GET /metrics    Prometheus text format (see metrics.py)

They are neither authenticated nor rate limited (`PROBE`): a load balancer's stray Authorization header is ignored.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aggregator.web.access import services
from aggregator.web.endpoint import PROBE, Reply, endpoint
from aggregator.web.metrics import CONTENT_TYPE
from aggregator.web.problems import NotReady
from aggregator.web.schemas import Health, Readiness


@endpoint("GET", "/healthz", name="healthz", operation_id="healthz", reply=Reply.json(Health, "Up"), access=PROBE)
async def healthz(request: Request) -> Response:
    """存活 The process is up."""
    return JSONResponse({"status": "ok"})


@endpoint(
    "GET",
    "/readyz",
    name="readyz",
    operation_id="readyz",
    reply=Reply.json(Readiness, "Ready"),
    access=PROBE,
    raises=(NotReady,),
)
async def readyz(request: Request) -> Response:
    """就绪 The records store and Redis (when configured) answer.

    Otherwise 503, naming which does not.
    """
    checks = await services(request).probes.readiness()
    return JSONResponse({"status": "ready", "checks": checks})


@endpoint(
    "GET",
    "/metrics",
    name="metrics",
    operation_id="metrics",
    reply=Reply(200, {"text/plain": str}, "Text format"),
    access=PROBE,
)
async def metrics(request: Request) -> Response:
    """监控指标 Prometheus metrics.

    Of this process: requests by route and status, lookups by verdict, source calls by outcome, cache events,
    circuits, rate limits, Redis health.
    """
    return Response(await services(request).probes.metrics_text(), media_type=CONTENT_TYPE)


def ops_routes() -> list[Route]:
    return [e.route() for e in (healthz, readyz, metrics)]
