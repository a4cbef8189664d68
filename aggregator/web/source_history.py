"""The sources' health history over the API: `GET /api/v1/sources/{source_id}/history` (anyone).

The same data as the /sources status page (`services.sources.history`): the source's state now, its
availability bars over 24 h / 30 d / 90 d, incidents of the last 90 days and, for uploaded records, the
department's upload freshness. Health counts say nothing about anybody, so everyone may read them.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aggregator.web.access import services
from aggregator.web.endpoint import Reply, endpoint, path_param
from aggregator.web.problems import RouteNotFound
from aggregator.web.schemas import SourceHistoryView

SOURCE_ID = path_param(
    "source_id", "数据源 id, as GET /api/v1/sources lists them", example="mem_api", type="string", maxLength=64
)


@endpoint(
    "GET",
    "/api/v1/sources/{source_id}/history",
    name="api_source_history",
    operation_id="getSourceHistory",
    reply=Reply.json(SourceHistoryView, "The source's history"),
    params=(SOURCE_ID,),
    raises=(RouteNotFound,),
)
async def get_source_history(request: Request) -> Response:
    """数据源历史 One source's health history: state now, 24 h / 30 d / 90 d availability, incidents.

    Counted per 5-minute bucket by every instance into one database: calls by outcome, latency (p50/p95 from a
    latency histogram), circuit openings. Bars are hourly over 24 h and daily (China time) over 30 and 90 days;
    availability is the share of calls the source answered (rate-limited calls count neither way). An incident
    is a span during which the source was down for at least `incident_min_minutes`, with its error kind. For
    uploaded records: the newest quarter uploaded, when, and whether the last complete quarter is overdue.
    """
    view = await services(request).sources.history(request.path_params["source_id"])
    return JSONResponse(view.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


def history_routes() -> list[Route]:
    return [get_source_history.route()]
