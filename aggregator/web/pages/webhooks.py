"""The employer page's webhooks panel (part of the rosters section): the organisation's endpoints (the URL's host,
event types, enabled or disabled and why), add one (its secret shown once, on the page after the redirect),
rotate a secret, enable / disable, and one endpoint's delivery log (attempts, status codes, latency) with replay.

    GET  /employer?webhook=ID#webhooks                       the panel, with ID's delivery log (`context`)
    POST /employer/webhooks                                  add (url, event_types*, description; CSRF) -> 303
                                                             /employer/webhooks?shown=TOKEN
    POST /employer/webhooks/{webhook_id}/rotate              a new secret (CSRF) -> 303 /employer/webhooks?shown=TOKEN
    GET  /employer/webhooks?shown=TOKEN                      the page with the new secret, once (no-store); again:
                                                             the page without it, and a note that it was shown
    POST /employer/webhooks/{webhook_id}/enabled             enabled=true|false (CSRF) -> /employer?webhook=ID
    POST /employer/webhooks/deliveries/{delivery_id}/replay  (CSRF) -> /employer?webhook=ID

POST/redirect/GET, so that reloading the page does not add a second endpoint or rotate again: the new secret is
kept a few minutes in the database for this key and browser (`web.onetime`), never in a URL, a cookie or a log;
the token in the URL only finds it, once.

Everything goes through `services.webhooks` (SSRF checks, the organisation rule, the audit entries): a page
handler only reads the form and chooses what to show. Employers and admins only (`roles.ROSTER_KEEPERS`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from aggregator.errors import describe
from aggregator.records.schema import EVENT_TYPES
from aggregator.rosters.webhook_urls import UnsafeWebhookUrl
from aggregator.web.access import services
from aggregator.web.onetime import OneTimeSecrets
from aggregator.web.pages.render import CSRF_COOKIE, CSRF_FIELD, csrf_failed, csrf_ok, html_errors
from aggregator.web.problems import RouteNotFound, Unprocessable
from aggregator.web.roles import Principal

PATH = "/employer"
SHOWN_PATH = "/employer/webhooks"  # GET ?shown=TOKEN: the page after adding an endpoint or rotating its secret
MAX_DELIVERIES = 50
DELIVERY_WORDS = {"pending": "待发送 pending", "sending": "发送中 sending", "delivered": "已送达 delivered",
                  "failed": "失败 failed"}


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or url
    except ValueError:
        return url


def endpoint_row(e: Any, labels: dict[str, str]) -> dict[str, Any]:
    return {"id": e.id, "host": _host(e.url), "url": e.url, "description": e.description or "",
            "types": [labels.get(t, t) for t in e.event_types], "enabled": e.enabled,
            "disabled_reason": e.disabled_reason or "", "disabled_at": e.disabled_at, "created_at": e.created_at,
            "rotating_until": e.rotating_until}


def delivery_row(d: Any, labels: dict[str, str]) -> dict[str, Any]:
    return {"id": d.id, "msg_id": d.msg_id, "type": labels.get(d.event_type, d.event_type), "status": d.status,
            "status_text": DELIVERY_WORDS.get(d.status, d.status), "attempts": d.attempts, "created_at": d.created_at,
            "code": d.last_status_code, "latency": d.last_latency_ms, "error": d.last_error or "",
            "next_at": d.next_attempt_at, "replay_of": d.replay_of,
            "log": [{"n": a.attempt, "at": a.at, "code": a.status_code, "latency": a.latency_ms, "error": a.error or ""}
                    for a in d.log]}


async def context(request: Request, principal: Principal, labels: dict[str, str]) -> dict[str, Any]:
    """The panel: the organisation's endpoints, and the delivery log of the one asked for (?webhook=)."""
    svc = services(request).webhooks
    endpoints = await svc.list(principal)
    ctx: dict[str, Any] = {"webhooks": [endpoint_row(e, labels) for e in endpoints], "webhook_event_types":
                           [(t, labels.get(t, t)) for t in EVENT_TYPES]}
    chosen = request.query_params.get("webhook") or None
    if chosen and any(e.id == chosen for e in endpoints):
        ctx["webhook_chosen"] = chosen
        ctx["deliveries"] = [delivery_row(d, labels) for d in await svc.deliveries(principal, chosen,
                                                                                  limit=MAX_DELIVERIES)]
    return ctx


async def _form(request: Request) -> tuple[dict[str, Any], list[str]] | None:
    """The posted fields and its event types; None when the CSRF check failed."""
    form = await request.form()
    try:
        if not csrf_ok(request, str(form.get(CSRF_FIELD) or "")):
            return None
        fields = {k: str(v).strip() for k, v in form.items() if isinstance(v, str)}
        return fields, [str(t) for t in form.getlist("event_types") if t in EVENT_TYPES]
    finally:
        await form.close()


def _pending(request: Request) -> OneTimeSecrets:
    return OneTimeSecrets(services(request).webhooks.engine)


async def _show_after_redirect(request: Request, principal: Principal, endpoint: Any, secret: str) -> Response:
    """303 to the page that shows `secret` once; the URL carries a token that finds it, not the secret."""
    token = await _pending(request).keep(secret, subject=endpoint.id, key_id=principal.key_id or "",
                                         browser=request.cookies.get(CSRF_COOKIE, ""))
    return RedirectResponse(f"{SHOWN_PATH}?shown={token}#webhooks", status_code=303,
                            headers={"Cache-Control": "no-store"})


@html_errors
async def shown(request: Request) -> Response:
    """GET /employer/webhooks?shown=TOKEN: the employer page with the new secret, this once; a reload, another
    key or another browser gets the page with a note instead."""
    from aggregator.web.pages.employer import render_employer
    from aggregator.web.pages.rosters import keeper

    principal, login = await keeper(request)
    if login is not None:
        return login
    token = request.query_params.get("shown")
    if not token:
        return RedirectResponse(f"{PATH}#webhooks", status_code=303)
    found = await _pending(request).take(token, key_id=principal.key_id or "",
                                         browser=request.cookies.get(CSRF_COOKIE, ""))
    extra: dict[str, Any] = {"current": PATH}  # the navigation's employer page, and where sign-out returns to
    if found is None:
        extra["webhook_secret_gone"] = True
    else:
        extra.update(webhook_secret=found.secret, webhook_secret_for=found.subject)
    response = await render_employer(request, principal, extra)  # no-store, as every page
    response.headers["Referrer-Policy"] = "no-referrer"  # the token stays on this site
    return response


@html_errors
async def create(request: Request) -> Response:
    from aggregator.web.pages.rosters import keeper

    principal, login = await keeper(request)
    if login is not None:
        return login
    posted = await _form(request)
    if posted is None:
        return csrf_failed(request)
    fields, types = posted
    url = fields.get("url", "")
    try:
        if not url:
            raise Unprocessable("请填写回调地址（URL）", "give the endpoint's URL")
        endpoint, secret = await services(request).webhooks.create(
            principal, url=url, event_types=types, description=fields.get("description") or None)
    except (UnsafeWebhookUrl, Unprocessable) as e:
        from aggregator.web.pages.employer import render_employer

        return await render_employer(request, principal, {"webhook_error": describe(e).text,
                                                          "webhook_form": {"url": url, "types": types,
                                                                           "description": fields.get("description")}},
                                     status=422)
    return await _show_after_redirect(request, principal, endpoint, secret)


@html_errors
async def rotate(request: Request) -> Response:
    from aggregator.web.pages.rosters import keeper

    principal, login = await keeper(request)
    if login is not None:
        return login
    if await _form(request) is None:
        return csrf_failed(request)
    endpoint, secret = await services(request).webhooks.rotate(principal, str(request.path_params["webhook_id"]))
    return await _show_after_redirect(request, principal, endpoint, secret)


@html_errors
async def set_enabled(request: Request) -> Response:
    from aggregator.web.pages.rosters import keeper

    principal, login = await keeper(request)
    if login is not None:
        return login
    posted = await _form(request)
    if posted is None:
        return csrf_failed(request)
    enabled = posted[0].get("enabled") == "true"
    endpoint = await services(request).webhooks.update(principal, str(request.path_params["webhook_id"]),
                                                       enabled=enabled)
    return RedirectResponse(f"{PATH}?webhook={endpoint.id}#webhooks", status_code=303)


@html_errors
async def replay(request: Request) -> Response:
    from aggregator.web.pages.rosters import keeper

    principal, login = await keeper(request)
    if login is not None:
        return login
    if await _form(request) is None:
        return csrf_failed(request)
    raw = str(request.path_params["delivery_id"])
    if not raw.isdigit() or len(raw) > 18:
        raise RouteNotFound(f"delivery {raw}")
    replayed = await services(request).webhooks.replay(principal, int(raw))
    return RedirectResponse(f"{PATH}?webhook={replayed.endpoint_id}#webhooks", status_code=303)


routes = [
    Route(SHOWN_PATH, create, methods=["POST"], name="page_webhook_create"),
    Route(SHOWN_PATH, shown, methods=["GET"], name="page_webhook_shown"),
    Route("/employer/webhooks/{webhook_id}/rotate", rotate, methods=["POST"], name="page_webhook_rotate"),
    Route("/employer/webhooks/{webhook_id}/enabled", set_enabled, methods=["POST"], name="page_webhook_enabled"),
    Route("/employer/webhooks/deliveries/{delivery_id}/replay", replay, methods=["POST"], name="page_webhook_replay"),
]
