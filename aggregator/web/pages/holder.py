"""The holder's view: /holder, where a holder gives certificate number + full name + full ID number and sees
who looked their certificates up (PIPL art. 44-45); the same through the API (`web/holders/api.py`).

Every mismatch gets the same words (which detail was wrong is never said); too many attempts lock the address
or the certificate out for a while (`web/holders/guard.py`). "Download CSV" posts the same three details again
(nothing is kept between requests: there is no holder session to steal).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aggregator.audit import action_text, role_text
from aggregator.errors import describe
from aggregator.web.access import client_address, services
from aggregator.web.holders import HolderLocked, HolderNotVerified
from aggregator.web.holders.view import OTHER_NUMBER
from aggregator.web.pages.render import csrf_failed, csrf_ok, field, html_errors, render, urlencoded_form
from aggregator.web.pages.view import verdict_badge

FIELDS = ("number", "name", "id_number")


@html_errors
async def holder_page(request: Request) -> Response:
    """GET /holder: the form. POST /holder: the lookups of the holder's certificates, or why not."""
    if request.method == "GET":
        return render(request, "holder.html", {"report": None})
    form = await urlencoded_form(request)
    if not csrf_ok(request, form.get("csrf")):
        return csrf_failed(request)
    typed = {k: field(form, k)[:64] for k in FIELDS}
    ctx = {"report": None, "form": {"number": typed["number"], "name": typed["name"]}}
    try:
        report = await services(request).holders.report(client_address(request), *typed.values())
    except (HolderNotVerified, HolderLocked) as e:
        status = 403 if isinstance(e, HolderNotVerified) else 429
        headers = getattr(e, "headers", {})
        response = render(request, "holder.html", {**ctx, "refused": describe(e).text}, status=status)
        response.headers.update(headers)
        return response
    if field(form, "format") == "csv":
        return Response(
            report.as_csv(),
            media_type="text/csv; charset=utf-8",
            headers={"Cache-Control": "no-store", "Content-Disposition": 'attachment; filename="certq-my-lookups.csv"'},
        )
    rows = [
        {**r, "role_text": role_text(r["role"]), "action_text": action_text(r["action"]),
         "badge": verdict_badge(r["verdict"]), "other": r["number"] == OTHER_NUMBER}  # fmt: skip
        for r in report.lookups
    ]
    return render(request, "holder.html", {**ctx, "report": report, "rows": rows, "proof": typed})


routes = [Route("/holder", holder_page, methods=["GET", "POST"], name="page_holder")]
