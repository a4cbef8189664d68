"""Rendering a page: the Jinja environment, the CSRF token every form carries, error pages and small forms.

    response = render(request, "index.html", {"answer": view}, principal=principal)   # no-store, CSRF cookie set
    if not csrf_ok(request, form.get(CSRF_FIELD)):
        return csrf_failed(request)                                                    # 403, "form expired"

    @html_errors                        # anything a page handler lets through: an HTML error page, never a bare 500
    async def some_page(request: Request) -> Response: ...

Everything that came from a source or a user is autoescaped (every template, not only *.html); no template
marks such text safe. Every form that changes something or signs in carries a double-submit CSRF token: a
random HttpOnly, SameSite=Strict cookie that the form must repeat.
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from aggregator.errors import describe
from aggregator.models import DEPARTMENT_NAMES
from aggregator.web.pages import view
from aggregator.web.problems import WebError
from aggregator.web.roles import Principal, Role

log = logging.getLogger("aggregator.web.pages")

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"
CSRF_COOKIE = "certq_csrf"
CSRF_FIELD = "csrf"
MAX_FORM_FIELD = 500

NAV: tuple[tuple[str, str, str], ...] = (
    ("/", "证书查询", "Lookup"),
    ("/employer", "用人单位", "Employers"),
    ("/regulator", "监管", "Regulators"),
    ("/department", "部门上报", "Departments"),
    ("/sources", "数据源", "Sources"),
    ("/recognition", "互认目录", "Recognition"),
    ("/docs", "接口文档", "API"),
)
ROLE_NAMES = {
    Role.PUBLIC: "公众",
    Role.EMPLOYER: "用人单位",
    Role.REGULATOR: "监管部门",
    Role.DEPARTMENT: "部门",
    Role.ADMIN: "管理员",
}

WIDE_TEMPLATES = frozenset({"employer.html", "department.html", "regulator.html", "sources.html", "recognition.html"})

Handler = Callable[[Request], Awaitable[Response]]


def _environment() -> jinja2.Environment:
    """Autoescape everything (not only *.html): nothing a source said is ever rendered as markup."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        key=view._key,
        value=view.fmt_value,
        time=view.unbroken(view.fmt_time),
        date=view.unbroken(view.fmt_date),
        age=view.fmt_age,
        ms=view.unbroken(view.fmt_ms),
        percent=view.fmt_percent,
        safe_url=view.safe_url,
        code=view.inline_code,
    )
    env.globals.update(
        verdict_badge=view.verdict_badge,
        status_badge=view.status_badge,
        outcome_badge=view.outcome_badge,
        source_outcome_badge=view.source_outcome_badge,
        holder_differs_badge=view.HOLDER_DIFFERS,
        conflict_value=view.conflict_value,
        circuit_badge=view.circuit_badge,
        department_name=view.department_name,
        kind_name=view.kind_name,
        error_text=view.error_text,
        get=view.get,
        cert_fields=view.CERT_FIELDS,
        field_names=view.FIELD_NAMES,
        mode_labels=view.MODE_LABELS,
        ok_badge=view.Badge("ok", "✓", "符合", "yes"),
        bad_badge=view.Badge("bad", "✕", "不符", "no"),
        no_badge=view.Badge("none", "–", "不适用", "not eligible"),
        nav=NAV,
        demo_examples=view.demo_examples,
    )
    return env


TEMPLATES = Jinja2Templates(env=_environment())


# --- CSRF ---------------------------------------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    """This browser's CSRF token: the cookie's, or a new one (set on the response by `render`)."""
    token = request.scope.setdefault("state", {}).get("page_csrf")
    if token:
        return str(token)
    cookie = request.cookies.get(CSRF_COOKIE, "")
    token = cookie if 20 <= len(cookie) <= 100 and cookie.isascii() else secrets.token_urlsafe(32)
    request.scope["state"]["page_csrf"] = token
    return token


def csrf_ok(request: Request, submitted: str | None) -> bool:
    """Whether the form repeated the browser's CSRF cookie."""
    cookie = request.cookies.get(CSRF_COOKIE)
    return bool(cookie and submitted) and hmac.compare_digest(cookie.encode(), (submitted or "").encode())


def _set_cookies(request: Request, response: Response) -> None:
    secure = request.url.scheme == "https"
    token = request.scope.get("state", {}).get("page_csrf")
    if token and request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/")


# --- rendering ----------------------------------------------------------------------------------------------


def principal_label(p: Principal) -> str | None:
    if p.is_anonymous:
        return None
    dept = f" · {DEPARTMENT_NAMES[p.department]}" if p.department else ""
    return f"{p.label or p.key_id}（{ROLE_NAMES.get(p.role, p.role.value)} {p.role.value}{dept}）"


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    principal: Principal | None = None,
) -> Response:
    """A page: `template` with `context`, the CSRF token and who is signed in; never cached."""
    ctx: dict[str, Any] = {
        "current": request.url.path,
        "csrf": csrf_token(request),
        "principal_label": principal_label(principal) if principal else None,
        "form": {},
        "errors": {},
        "wide": template in WIDE_TEMPLATES,  # wide tables use the desktop's width
    }
    ctx.update(context)
    response = TEMPLATES.TemplateResponse(request, template, ctx, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    _set_cookies(request, response)
    return response


def error_page(request: Request, exc: BaseException, *, back: str = "/") -> Response:
    """The error page for `exc`, with the status and wording of the one table (`aggregator.errors`)."""
    err = describe(exc)
    if err.status >= 500:
        log.exception("page %s failed", request.url.path, exc_info=exc)
    headers = exc.headers if isinstance(exc, WebError) else {}
    response = render(
        request,
        "error.html",
        {"title_zh": "出错了", "title_en": err.title, "message": err.text, "back": back},
        status=err.status,
    )
    response.headers.update(headers)
    return response


def csrf_failed(request: Request) -> Response:
    return render(
        request,
        "error.html",
        {
            "title_zh": "表单已过期",
            "title_en": "Form expired",
            "message": "表单校验失败，请刷新页面后重试 (the form's security token did not match: reload the page and try again)",
            "back": request.url.path,
        },
        status=403,
    )


def html_errors(handler: Handler) -> Handler:
    """Any exception a page handler lets through becomes an HTML error page with the one table's wording
    (the JSON API answers problem documents instead)."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:  # noqa: BLE001 - a page never shows a bare 500
            return error_page(request, exc, back=request.url.path)

    return wrapped


# --- forms --------------------------------------------------------------------------------------------------


async def urlencoded_form(request: Request) -> dict[str, str]:
    """A small application/x-www-form-urlencoded body (the Gate caps its size), each value trimmed."""
    body = (await request.body()).decode("utf-8", "replace")
    return {k: vals[-1].strip()[:MAX_FORM_FIELD] for k, vals in parse_qs(body, keep_blank_values=True).items()}


def field(form: dict[str, str] | FormData, name: str) -> str:
    """One form field, trimmed and cut to MAX_FORM_FIELD ('' when absent)."""
    value = form.get(name) or ""
    return str(value).strip()[:MAX_FORM_FIELD]
