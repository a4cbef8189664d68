"""The public lookup: the form at / and the result card at /lookup?number=&name= (GET, so a result is a link).

The lookup is the API's (`Services.lookup_for`: purpose rule, name budget, audit, masking), as the caller's
role may see it: the public by default, a signed-in key's role otherwise.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aggregator.asof import FutureDate, InvalidDate
from aggregator.errors import describe
from aggregator.numbers import NumberError
from aggregator.web.access import client_address, services
from aggregator.web.pages import view
from aggregator.web.pages.render import MAX_FORM_FIELD, html_errors, render
from aggregator.web.pages.session import page_principal
from aggregator.web.problems import PurposeRequired
from aggregator.web.roles import Role

NO_NUMBER = "请输入证书编号或身份证号 (enter a certificate or ID number)"


@html_errors
async def home(request: Request) -> Response:
    principal, _ = await page_principal(request)
    return render(
        request, "index.html", {"answer": None, "needs_purpose": principal.role == Role.REGULATOR}, principal=principal
    )


@html_errors
async def lookup_page(request: Request) -> Response:
    """GET /lookup?number=&name=: the result card, as the caller's role may see it (the public by default)."""
    principal, _ = await page_principal(request)
    q = request.query_params
    form = {k: (q.get(k) or "").strip()[:MAX_FORM_FIELD] for k in ("number", "name", "purpose", "as_of")}
    ctx: dict[str, Any] = {"form": form, "answer": None, "needs_purpose": principal.role == Role.REGULATOR}
    if not form["number"]:
        ctx["errors"] = {"number": NO_NUMBER}
        return render(request, "index.html", ctx, status=422, principal=principal)
    svc = services(request)
    try:
        if form["as_of"]:  # the answer as certq knew it on that day
            _, shown = await svc.past.lookup_for(
                principal,
                form["number"],
                on=form["as_of"],
                name=form["name"] or None,
                purpose=form["purpose"] or None,
                client_ip=client_address(request),
            )
        else:
            _, shown = await svc.lookup_for(
                principal,
                form["number"],
                name=form["name"] or None,
                purpose=form["purpose"] or None,
                client_ip=client_address(request),
            )
    except (InvalidDate, FutureDate) as e:
        ctx["errors"] = {"as_of": describe(e).text}
        return render(request, "index.html", ctx, status=422, principal=principal)
    except NumberError as e:
        ctx["errors"] = {"number": describe(e).text}
        return render(request, "index.html", ctx, status=422, principal=principal)
    except PurposeRequired as e:
        ctx["errors"] = {"purpose": describe(e).text}
        return render(request, "index.html", ctx, status=400, principal=principal)
    names = svc.sources.names()
    conflicts = bool(shown.get("conflicts"))
    ctx.update(answer=view.answer_page(shown, names), source_names=names, show_conflicts=conflicts, wide=conflicts)
    return render(request, "index.html", ctx, principal=principal)


routes = [
    Route("/", home, methods=["GET"], name="page_home"),
    Route("/lookup", lookup_page, methods=["GET"], name="page_lookup"),
]
