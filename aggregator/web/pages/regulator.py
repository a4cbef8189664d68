"""The regulator's page: a full-record lookup with a stated purpose, and the latest audit log entries.

Each field's problem is shown beside it (the number and the ID number are checked here too, so that the
reason lands on the right field); the lookup itself is the API's (`Services.lookup_for`), audited.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aggregator.errors import describe
from aggregator.numbers import NumberError, parse_number
from aggregator.web.access import client_address, services
from aggregator.web.pages import view
from aggregator.web.pages.lookup import NO_NUMBER
from aggregator.web.pages.render import (
    CSRF_FIELD,
    ROLE_NAMES,
    csrf_failed,
    csrf_ok,
    field,
    html_errors,
    render,
    urlencoded_form,
)
from aggregator.web.pages.session import signed_in
from aggregator.web.problems import PurposeRequired

PATH = "/regulator"
AUDIT_ROWS = 50


def _number_problem(text: str) -> str | None:
    """Why `text` cannot be looked up (the NumberError's reason), or None."""
    try:
        parse_number(text)
    except NumberError as e:
        return describe(e).text
    return None


@html_errors
async def regulator_page(request: Request) -> Response:
    principal, login_page = await signed_in(request, PATH)
    if login_page is not None:
        return login_page
    svc = services(request)
    ctx: dict[str, Any] = {"need_login": False, "answer": None, "source_names": svc.sources.names()}
    status = 200
    if request.method == "POST":
        form = await urlencoded_form(request)
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return csrf_failed(request)
        fields = {k: field(form, k) for k in ("number", "name", "id_number", "purpose")}
        ctx["form"] = fields
        errors: dict[str, str] = {}
        if not fields["number"]:
            errors["number"] = NO_NUMBER
        for name in ("number", "id_number"):  # checked here too, so the reason shows next to its own field
            if fields[name] and (reason := _number_problem(fields[name])):
                errors[name] = reason
        if not fields["purpose"]:
            errors["purpose"] = describe(PurposeRequired()).text
        if not errors:
            _, answer = await svc.lookup_for(
                principal,
                fields["number"],
                name=fields["name"] or None,
                id_number=fields["id_number"] or None,
                purpose=fields["purpose"],
                client_ip=client_address(request),
            )
            ctx["answer"] = view.answer_page(answer, ctx["source_names"])
        if errors:
            ctx["errors"] = errors
            status = 422 if ("number" in errors or "id_number" in errors) else 400
    ctx["audit"] = await svc.audit.read(limit=AUDIT_ROWS)
    # the organisation's label, not the key's hex id
    ctx["key_labels"] = {k.key_id: k.label for k in await svc.keys.list_keys()}
    ctx["role_names"] = {r.value: f"{name} {r.value}" for r, name in ROLE_NAMES.items()}
    return render(request, "regulator.html", ctx, status=status, principal=principal)


routes = [Route(PATH, regulator_page, methods=["GET", "POST"], name="page_regulator")]
