"""Signing in on the pages: who a page request acts as, the signed-in pages' roles, and /login and /logout.

    principal, note = await page_principal(request)          # anyone may see the page
    principal, login = await signed_in(request, "/employer")  # login is the sign-in page to show instead (401/403)

A person signs in with a form; the key is kept in an HttpOnly, SameSite=Strict cookie and checked with the same
`KeyStore.authenticate` the API's `Authorization: Bearer` goes through (a request that carries a Bearer header
acts as that key instead, checked by the Gate). Signing in and out are forms with the CSRF token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from aggregator.errors import describe
from aggregator.web.access import caller, services
from aggregator.web.pages.render import (
    CSRF_FIELD,
    ROLE_NAMES,
    csrf_failed,
    csrf_ok,
    html_errors,
    log,
    render,
    urlencoded_form,
)
from aggregator.web.problems import InvalidKey
from aggregator.web.roles import AUDITORS, UPLOADERS, VERIFIERS, Principal, Role

KEY_COOKIE = "certq_key"
KEY_COOKIE_MAX_AGE = 8 * 3600  # a working day; the key itself stays valid until revoked


@dataclass(frozen=True)
class SignedInPage:
    roles: frozenset[Role]  # the same sets the API uses for the same actions
    template: str


SIGNED_IN_PAGES: dict[str, SignedInPage] = {
    "/employer": SignedInPage(VERIFIERS, "employer.html"),
    "/regulator": SignedInPage(AUDITORS, "regulator.html"),
    "/regulator/campaigns": SignedInPage(AUDITORS, "campaigns.html"),  # spot-check campaigns (issue 14)
    "/department": SignedInPage(UPLOADERS, "department.html"),
}


async def page_principal(request: Request) -> tuple[Principal, str | None]:
    """Who a page request acts as: the Bearer key (checked by the Gate), else the signed-in cookie key.

    Returns the principal and, when a cookie key no longer works (revoked, malformed), why."""
    principal = caller(request)
    if not principal.is_anonymous:
        return principal, None
    secret = request.cookies.get(KEY_COOKIE)
    if not secret:
        return principal, None
    try:
        return await services(request).keys.authenticate(secret), None
    except InvalidKey:
        return Principal.anonymous(), "登录的密钥已失效或被吊销，请重新登录 (the signed-in key is no longer valid)"


async def signed_in(request: Request, path: str) -> tuple[Principal, Response | None]:
    """The principal for a signed-in page, or the sign-in page to show instead (401 / 403)."""
    principal, note = await page_principal(request)
    page = SIGNED_IN_PAGES[path]
    if principal.role in page.roles:
        return principal, None
    if not principal.is_anonymous:
        allowed = "、".join(f"{ROLE_NAMES[r]} {r.value}" for r in sorted(page.roles))
        note = f"当前密钥的角色不能使用此页面，需要：{allowed} (this key's role cannot use this page)"
    ctx = {"need_login": True, "login_note": note, "login_error": None}
    status = 401 if principal.is_anonymous else 403
    return principal, render(request, page.template, ctx, status=status, principal=principal)


def _safe_next(value: str | None) -> str:
    """Only our own signed-in pages are redirect targets (no open redirect)."""
    return value if value in SIGNED_IN_PAGES or value == "/" else "/"


async def login(request: Request) -> Response:
    """POST /login: check the key with the API's key store, keep it in an HttpOnly cookie, go back."""
    form = await urlencoded_form(request)
    if not csrf_ok(request, form.get(CSRF_FIELD)):
        return csrf_failed(request)
    target = _safe_next(form.get("next"))
    try:
        principal = await services(request).keys.authenticate(form.get("key", ""))
    except InvalidKey as e:
        page = SIGNED_IN_PAGES.get(target)
        template = page.template if page else "error.html"
        ctx: dict[str, Any] = {"need_login": True, "login_error": describe(e).text, "current": target}
        if template == "error.html":
            ctx.update(title_zh="登录失败", title_en="Sign-in failed", message=describe(e).text, back=target)
        return render(request, template, ctx, status=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        KEY_COOKIE,
        form.get("key", "").strip(),
        max_age=KEY_COOKIE_MAX_AGE,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    log.info("page sign-in: key %s (%s)", principal.key_id, principal.role.value)
    return response


async def logout(request: Request) -> Response:
    """POST /logout: forget the signed-in key."""
    form = await urlencoded_form(request)
    if not csrf_ok(request, form.get(CSRF_FIELD)):
        return csrf_failed(request)
    response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
    response.delete_cookie(KEY_COOKIE, path="/", httponly=True, samesite="strict")
    return response


routes = [
    Route("/login", html_errors(login), methods=["POST"], name="page_login"),
    Route("/logout", html_errors(logout), methods=["POST"], name="page_logout"),
]
