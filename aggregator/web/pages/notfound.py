"""An unknown page, for a browser: the HTML error page (status 404, the one error table's wording).

The route matches only a GET or HEAD whose Accept names text/html, outside /api/ and /static/; everything else
falls through to the app's own 404, a problem+json document from the same table (`RouteNotFound`), so API
clients keep problem+json."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from aggregator.web.pages.render import error_page
from aggregator.web.problems import RouteNotFound

_NOT_PAGES = ("/api/", "/static/")


def wants_html(scope: Scope) -> bool:
    """Whether a request asks for a page: a browser's Accept names text/html (`*/*` alone does not)."""
    for name, value in scope.get("headers") or []:
        if name == b"accept":
            return b"text/html" in value.lower()
    return False


class PageNotFoundRoute(Route):
    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
            return Match.NONE, {}
        if str(scope.get("path", "")).startswith(_NOT_PAGES) or not wants_html(scope):
            return Match.NONE, {}
        return super().matches(scope)


async def not_found_page(request: Request) -> Response:
    return error_page(request, RouteNotFound(request.url.path), back="/")


routes = [PageNotFoundRoute("/{path:path}", not_found_page, methods=["GET", "HEAD"], include_in_schema=False)]
