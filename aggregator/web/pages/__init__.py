"""The web pages (Jinja2, Chinese first): public lookup, employer batch check, regulator lookup and audit log,
department upload, the sources' health and the API docs, one module each; `render` (templates, CSRF, error
pages) and `session` (sign-in) are what they share, `view` the labels and filters their templates use.

    app = Starlette(routes=[*api_routes(), *page_routes(), Mount("/static", StaticFiles(directory=STATIC_DIR))])

Pages call the same service layer as the JSON API (`web.services.Services`: `lookup_for`, `verify_for`,
`uploads`, `sources`, the audit log and the key store), never the API's handlers, so a page can never show
more than the API would show the same caller.
"""

from __future__ import annotations

from starlette.routing import BaseRoute


def page_routes() -> list[BaseRoute]:
    """The pages' routes; the app mounts them beside the API and serves the static files at /static."""
    from aggregator.web.pages import (
        campaigns,
        department,
        docs,
        employer,
        holder,
        lookup,
        notfound,
        recognition,
        regulator,
        session,
        sources,
    )

    return [
        *lookup.routes,
        *employer.routes,
        *regulator.routes,
        *campaigns.routes,
        *department.routes,
        *sources.routes,
        *docs.routes,
        *recognition.routes,
        *holder.routes,
        *session.routes,
        *notfound.routes,  # last: an unknown page, for a browser (Accept: text/html)
    ]
