"""The regulator's page: a full-record lookup with a stated purpose, and the audit log, searchable.

Each field's problem is shown beside it (the number and the ID number are checked here too, so that the
reason lands on the right field); the lookup itself is the API's (`Services.lookup_for`), audited.
The audit search is a GET form on the same page (number, holder ID number, organisation, role, action,
verdict, purpose, dates; a job's lookups folded into one line; a next-page link); `?format=csv` with the same
filters downloads the page as CSV. Its rules are the API's (`Services.audit_search`).
"""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aggregator.audit import ACTIONS, ROLE_ZH, AuditPage, AuditQuery, action_text, role_text, to_csv
from aggregator.errors import describe
from aggregator.models import Verdict
from aggregator.numbers import NumberError, parse_number
from aggregator.web.access import client_address, services
from aggregator.web.pages import view
from aggregator.web.pages.lookup import NO_NUMBER
from aggregator.web.pages.render import (
    CSRF_FIELD,
    csrf_failed,
    csrf_ok,
    field,
    html_errors,
    render,
    urlencoded_form,
)
from aggregator.web.pages.session import signed_in
from aggregator.web.problems import PurposeRequired, WebError

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
    wanted = {k: (request.query_params.get(k) or "").strip()[:200] for k in SEARCH_FIELDS}
    query: AuditQuery | None = None
    try:
        query = AuditQuery(
            number=wanted["number"] or None, holder_id_number=wanted["holder_id_number"] or None,
            role=wanted["role"] or None, action=wanted["action"] or None, verdict=wanted["verdict"] or None,
            purpose=wanted["purpose"] or None, since=_day(wanted["since"]), until=_day(wanted["until"]),
            job_id=wanted["job_id"] or None, limit=AUDIT_ROWS, cursor=wanted["cursor"] or None,
        )  # fmt: skip
        page, labels = await svc.audit_search.search_for(principal, query, organisation=wanted["organisation"])
    except (ValueError, WebError) as e:
        ctx["audit_error"] = describe(e).text if isinstance(e, WebError) else str(e)
        page, labels = AuditPage([], None), {}
        status = 422 if status == 200 else status
    if request.query_params.get("format") == "csv" and "audit_error" not in ctx:
        text = to_csv(page.items, labels=labels, show_holder=svc.audit_search.shows_holder(principal))
        return Response("\ufeff" + text, media_type="text/csv; charset=utf-8", headers=CSV_HEADERS)
    ctx["audit"] = [svc.audit_search.view(item, labels, principal) for item in page.items]
    ctx["audit_form"] = wanted
    ctx["audit_searched"] = any(v for k, v in wanted.items() if k != "cursor")
    ctx["show_holder"] = svc.audit_search.shows_holder(principal)
    kept = {k: v for k, v in wanted.items() if v and k != "cursor"}
    ctx["csv_link"] = f"{PATH}?{urlencode({**kept, 'cursor': wanted['cursor'], 'format': 'csv'})}"
    ctx["next_link"] = f"{PATH}?{urlencode({**kept, 'cursor': page.cursor})}#audit-title" if page.cursor else None
    ctx["roles"] = [(r, role_text(r)) for r in ROLE_ZH]
    ctx["actions"] = [(a, action_text(a)) for a in ACTIONS]
    ctx["verdicts"] = [(v.value, f"{view.verdict_badge(v.value).zh} {v.value}") for v in Verdict]
    return render(request, "regulator.html", ctx, status=status, principal=principal)


SEARCH_FIELDS = ("number", "holder_id_number", "organisation", "role", "action", "verdict", "purpose", "since",
                 "until", "job_id", "cursor")  # fmt: skip
CSV_HEADERS = {"Cache-Control": "no-store", "Content-Disposition": 'attachment; filename="audit.csv"'}


def _day(text: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"日期应写作 2026-12-01 (a date such as 2026-12-01): {text}") from None


routes = [Route(PATH, regulator_page, methods=["GET", "POST"], name="page_regulator")]
