"""The sources' health, from the same service as GET /api/v1/sources."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aggregator.web.access import services
from aggregator.web.pages.render import html_errors, render
from aggregator.web.pages.session import page_principal


@html_errors
async def sources_page(request: Request) -> Response:
    """Every source's health: mode, circuit, recent success rate and latency, last error, newest upload."""
    principal, _ = await page_principal(request)
    health = await services(request).sources.health()
    return render(request, "sources.html", {"sources": health}, principal=principal)


routes = [Route("/sources", sources_page, methods=["GET"], name="page_sources")]
