"""The receipt pages: issuing one from the lookup result (POST /receipts), the verify page /r/{id}, its PDF
(/r/{id}.pdf) and the signed file (/r/{id}.jwt).

The verify page says, first, what a reader must know: whether the signature verifies against the published
keys, whether the receipt has expired, whether a later lookup superseded it (and since when); then the receipt
as it was issued; and beside it a "check again now" answer: the same number looked up now, as the reader may
(without the name), and what changed since. Everything goes through `Services.receipts` (the API's path).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from aggregator.audit import role_text
from aggregator.errors import describe
from aggregator.numbers import NumberError
from aggregator.web.access import client_address, services
from aggregator.web.pages import view
from aggregator.web.pages.render import CSRF_FIELD, csrf_failed, csrf_ok, html_errors, render, urlencoded_form
from aggregator.web.pages.session import page_principal
from aggregator.web.problems import PurposeRequired
from aggregator.web.receipts import base_url, find_receipt
from aggregator.web.roles import Role

PDF_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _subject_as_answer(credential: dict[str, Any]) -> dict[str, Any]:
    """The credential's subject in the shape the result card reads."""
    subject = dict(credential.get("credentialSubject") or {})
    subject["query"] = {**(subject.get("query") or {}), "formats": []}
    return subject


@html_errors
async def issue(request: Request) -> Response:
    """POST /receipts (the lookup result's button): issue a receipt of that lookup, then show its verify page."""
    principal, _ = await page_principal(request)
    form = await urlencoded_form(request)
    if not csrf_ok(request, form.get(CSRF_FIELD)):
        return csrf_failed(request)
    number = form.get("number", "")
    try:
        state = await services(request).receipts.issue(
            principal,
            number,
            name=form.get("name") or None,
            purpose=form.get("purpose") or None,
            client_ip=client_address(request),
            base_url=base_url(request),
        )
    except (NumberError, PurposeRequired) as e:
        ctx = {"form": form, "answer": None, "needs_purpose": principal.role == Role.REGULATOR}
        ctx["errors"] = {"purpose" if isinstance(e, PurposeRequired) else "number": describe(e).text}
        return render(request, "index.html", ctx, status=describe(e).status, principal=principal)
    return RedirectResponse(f"/r/{state.stored.id}", status_code=303)


@html_errors
async def verify_page(request: Request) -> Response:
    """GET /r/{id}: the receipt, checked now, and the same number looked up again."""
    principal, _ = await page_principal(request)
    svc = services(request)
    state = await find_receipt(request, request.path_params["receipt_id"])
    again: dict[str, Any] | None = None
    again_error: str | None = None
    try:
        again = await svc.receipts.check_again(principal, state, client_ip=client_address(request))
        state = await find_receipt(request, state.stored.id)  # the fresh lookup may have superseded it
    except Exception as e:  # noqa: BLE001 - the receipt is still shown; the fresh lookup says why it failed
        again_error = describe(e).text
    names = svc.sources.names()
    ctx = {
        "r": state.as_json(),
        "answer": view.answer_page(_subject_as_answer(state.check.credential), names),
        "source_names": names,
        "again": again,
        "again_verdict": view.verdict_badge(again["verdict"]) if again else None,
        "again_error": again_error,
        "role_text": role_text(str(state.as_json().get("role") or "")),
        "wide": True,
    }
    return render(request, "receipt.html", ctx, principal=principal)


@html_errors
async def pdf(request: Request) -> Response:
    """GET /r/{id}.pdf: the printable receipt."""
    state = await find_receipt(request, request.path_params["receipt_id"])
    data = await services(request).receipts.pdf(state)
    headers = {**PDF_HEADERS, "Content-Disposition": f'inline; filename="certq-receipt-{state.stored.id}.pdf"'}
    return Response(data, media_type="application/pdf", headers=headers)


@html_errors
async def signed_file(request: Request) -> Response:
    """GET /r/{id}.jwt: the signed receipt, for `certq receipts verify FILE`."""
    state = await find_receipt(request, request.path_params["receipt_id"])
    headers = {**PDF_HEADERS, "Content-Disposition": f'attachment; filename="certq-receipt-{state.stored.id}.jwt"'}
    return Response(state.stored.token + "\n", media_type="application/vc+jwt", headers=headers)


routes = [
    Route("/receipts", issue, methods=["POST"], name="page_receipt_issue"),
    Route("/r/{receipt_id}.pdf", pdf, methods=["GET"], name="page_receipt_pdf"),
    Route("/r/{receipt_id}.jwt", signed_file, methods=["GET"], name="page_receipt_jwt"),
    Route("/r/{receipt_id}", verify_page, methods=["GET"], name="page_receipt"),
]
