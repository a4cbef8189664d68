"""The web pages (Jinja2, Chinese first): public lookup, employer batch check, regulator lookup and audit log,
department upload and the sources' health.

    app = Starlette(routes=[*api_routes(), *page_routes(), Mount("/static", StaticFiles(directory=STATIC_DIR))])

Pages go through the same services as the JSON API (`service.Services`): `lookup_for` and `verify_for`
(purpose rule, audit entry, masking for the caller's role), `keys.authenticate` for keys, the store's
import for uploads. So a page can never show more than the API would show the same caller.

Keys on pages: a person signs in with a form; the key is kept in an HttpOnly, SameSite=Strict cookie and
checked with the same `KeyStore.authenticate` the API's `Authorization: Bearer` goes through (a request that
carries a Bearer header acts as that key instead). Every form that changes something or signs in carries a
double-submit CSRF token (a random cookie that the form must repeat).

Everything that came from a source or a user is autoescaped; no template marks such text safe.
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from aggregator.errors import describe
from aggregator.models import DEPARTMENT_NAMES, Department
from aggregator.records.report import AlreadyImported, BatchStatus
from aggregator.numbers import NumberError, parse_number
from aggregator.web import pages_view as v
from aggregator.web.access import caller, client_address, services
from aggregator.web.api import get_sources
from aggregator.web.batch import RowResult, parse_csv_pairs, rows_to_csv
from aggregator.web.multipart import Multipart, SavedFile, receive_multipart
from aggregator.web.problems import InvalidKey, PurposeRequired, WebError
from aggregator.web.roles import Principal, Role
from aggregator.web.uploads import _department, _quarter, _target_department

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATE_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"

KEY_COOKIE = "certq_key"
CSRF_COOKIE = "certq_csrf"
CSRF_FIELD = "csrf"
KEY_COOKIE_MAX_AGE = 8 * 3600  # a working day; the key itself stays valid until revoked
MAX_FORM_FIELD = 500
AUDIT_ROWS = 50

NAV: tuple[tuple[str, str, str], ...] = (
    ("/", "证书查询", "Lookup"),
    ("/employer", "用人单位", "Employers"),
    ("/regulator", "监管", "Regulators"),
    ("/department", "部门上报", "Departments"),
    ("/sources", "数据源", "Sources"),
)
# Which roles may use each signed-in page (the same sets the API uses for the same actions).
PAGE_ROLES: dict[str, frozenset[Role]] = {
    "/employer": frozenset({Role.EMPLOYER, Role.REGULATOR, Role.ADMIN}),
    "/regulator": frozenset({Role.REGULATOR, Role.ADMIN}),
    "/department": frozenset({Role.DEPARTMENT, Role.ADMIN}),
}
PAGE_TEMPLATES = {"/employer": "employer.html", "/regulator": "regulator.html", "/department": "department.html"}
ROLE_NAMES = {
    Role.PUBLIC: "公众",
    Role.EMPLOYER: "用人单位",
    Role.REGULATOR: "监管部门",
    Role.DEPARTMENT: "部门",
    Role.ADMIN: "管理员",
}


def _environment() -> jinja2.Environment:
    """Autoescape everything (not only *.html): nothing a source said is ever rendered as markup."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        key=v._key,
        value=v.fmt_value,
        time=v.fmt_time,
        date=v.fmt_date,
        age=v.fmt_age,
        ms=v.fmt_ms,
        percent=v.fmt_percent,
        safe_url=v.safe_url,
    )
    env.globals.update(
        verdict_badge=v.verdict_badge,
        status_badge=v.status_badge,
        outcome_badge=v.outcome_badge,
        circuit_badge=v.circuit_badge,
        department_name=v.department_name,
        kind_name=v.kind_name,
        error_text=v.error_text,
        get=v.get,
        cert_fields=v.CERT_FIELDS,
        field_names=v.FIELD_NAMES,
        mode_labels=v.MODE_LABELS,
        ok_badge=v.Badge("ok", "✓", "符合", "yes"),
        bad_badge=v.Badge("bad", "✕", "不符", "no"),
        no_badge=v.Badge("none", "–", "不适用", "not eligible"),
        nav=NAV,
    )
    return env


TEMPLATES = Jinja2Templates(env=_environment())


# --- request helpers --------------------------------------------------------------------------------


def _csrf_token(request: Request) -> str:
    """This browser's CSRF token: the cookie's, or a new one (set on the response by `_render`)."""
    token = request.scope.setdefault("state", {}).get("page_csrf")
    if token:
        return str(token)
    cookie = request.cookies.get(CSRF_COOKIE, "")
    token = cookie if 20 <= len(cookie) <= 100 and cookie.isascii() else secrets.token_urlsafe(32)
    request.scope["state"]["page_csrf"] = token
    return token


def _csrf_ok(request: Request, submitted: str | None) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE)
    return bool(cookie and submitted) and hmac.compare_digest(cookie.encode(), (submitted or "").encode())


def _set_cookies(request: Request, response: Response) -> None:
    secure = request.url.scheme == "https"
    token = request.scope.get("state", {}).get("page_csrf")
    if token and request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/")


async def _page_principal(request: Request) -> tuple[Principal, str | None]:
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


def _principal_label(p: Principal) -> str | None:
    if p.is_anonymous:
        return None
    dept = f" · {DEPARTMENT_NAMES[p.department]}" if p.department else ""
    return f"{p.label or p.key_id}（{ROLE_NAMES.get(p.role, p.role.value)} {p.role.value}{dept}）"


def _source_names(request: Request) -> dict[str, str]:
    return {s.id: s.name for s in services(request).gateway.settings.sources}


def _render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    principal: Principal | None = None,
) -> Response:
    ctx: dict[str, Any] = {
        "current": request.url.path,
        "csrf": _csrf_token(request),
        "principal_label": _principal_label(principal) if principal else None,
        "form": {},
        "errors": {},
    }
    ctx.update(context)
    response = TEMPLATES.TemplateResponse(request, template, ctx, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    _set_cookies(request, response)
    return response


def _error_page(request: Request, exc: BaseException, *, back: str = "/") -> Response:
    err = describe(exc)
    if err.status >= 500:
        log.exception("page %s failed", request.url.path, exc_info=exc)
    headers = exc.headers if isinstance(exc, WebError) else {}
    response = _render(
        request,
        "error.html",
        {"title_zh": "出错了", "title_en": err.title, "message": err.text, "back": back},
        status=err.status,
    )
    response.headers.update(headers)
    return response


def _csrf_failed(request: Request) -> Response:
    return _render(
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


Handler = Callable[[Request], Awaitable[Response]]


def _html_errors(handler: Handler) -> Handler:
    """Any exception a page handler lets through becomes an HTML error page with the one table's wording
    (the JSON API answers problem documents instead)."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:  # noqa: BLE001 - a page never shows a bare 500
            return _error_page(request, exc, back=request.url.path)

    return wrapped


async def _urlencoded_form(request: Request) -> dict[str, str]:
    """A small application/x-www-form-urlencoded body (the Gate caps its size), each value trimmed."""
    body = (await request.body()).decode("utf-8", "replace")
    return {k: vals[-1].strip()[:MAX_FORM_FIELD] for k, vals in parse_qs(body, keep_blank_values=True).items()}


def _field(form: dict[str, str] | FormData, name: str) -> str:
    value = form.get(name) or ""
    return str(value).strip()[:MAX_FORM_FIELD]


def _number_error(exc: NumberError) -> str:
    return describe(exc).text


# --- public lookup ------------------------------------------------------------------------------------


@_html_errors
async def home(request: Request) -> Response:
    principal, _ = await _page_principal(request)
    return _render(request, "index.html", {"answer": None, "needs_purpose": principal.role == Role.REGULATOR},
                   principal=principal)


@_html_errors
async def lookup_page(request: Request) -> Response:
    """GET /lookup?number=&name=: the result card, as the caller's role may see it (the public by default)."""
    principal, _ = await _page_principal(request)
    q = request.query_params
    form = {k: (q.get(k) or "").strip()[:MAX_FORM_FIELD] for k in ("number", "name", "purpose")}
    ctx: dict[str, Any] = {"form": form, "answer": None, "needs_purpose": principal.role == Role.REGULATOR}
    if not form["number"]:
        ctx["errors"] = {"number": "请输入证书编号或身份证号 (enter a certificate or ID number)"}
        return _render(request, "index.html", ctx, status=422, principal=principal)
    try:
        _, view = await services(request).lookup_for(
            principal,
            form["number"],
            name=form["name"] or None,
            purpose=form["purpose"] or None,
            client_ip=client_address(request),
        )
    except NumberError as e:
        ctx["errors"] = {"number": _number_error(e)}
        return _render(request, "index.html", ctx, status=422, principal=principal)
    except PurposeRequired as e:
        ctx["errors"] = {"purpose": describe(e).text}
        return _render(request, "index.html", ctx, status=400, principal=principal)
    ctx.update(answer=view, source_names=_source_names(request), show_conflicts=bool(view.get("conflicts")))
    return _render(request, "index.html", ctx, principal=principal)


# --- sign in / out ----------------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    """Only our own signed-in pages are redirect targets (no open redirect)."""
    return value if value in PAGE_ROLES or value == "/" else "/"


async def _signed_in_page(request: Request, path: str) -> tuple[Principal, Response | None]:
    """The principal for a signed-in page, or the login page to show instead (401 / 403)."""
    principal, note = await _page_principal(request)
    roles = PAGE_ROLES[path]
    if principal.role in roles:
        return principal, None
    if not principal.is_anonymous:
        allowed = "、".join(f"{ROLE_NAMES[r]} {r.value}" for r in sorted(roles))
        note = f"当前密钥的角色不能使用此页面，需要：{allowed} (this key's role cannot use this page)"
    ctx = {"need_login": True, "login_note": note, "login_error": None}
    status = 401 if principal.is_anonymous else 403
    return principal, _render(request, PAGE_TEMPLATES[path], ctx, status=status, principal=principal)


async def login(request: Request) -> Response:
    """POST /login: check the key with the API's key store, keep it in an HttpOnly cookie, go back."""
    form = await _urlencoded_form(request)
    if not _csrf_ok(request, form.get(CSRF_FIELD)):
        return _csrf_failed(request)
    target = _safe_next(form.get("next"))
    try:
        principal = await services(request).keys.authenticate(form.get("key", ""))
    except InvalidKey as e:
        template = PAGE_TEMPLATES.get(target, "error.html")
        ctx: dict[str, Any] = {"need_login": True, "login_error": describe(e).text, "current": target}
        if template == "error.html":
            ctx.update(title_zh="登录失败", title_en="Sign-in failed", message=describe(e).text, back=target)
        return _render(request, template, ctx, status=401)
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
    form = await _urlencoded_form(request)
    if not _csrf_ok(request, form.get(CSRF_FIELD)):
        return _csrf_failed(request)
    response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
    response.delete_cookie(KEY_COOKIE, path="/", httponly=True, samesite="strict")
    return response


# --- employer batch -------------------------------------------------------------------------------------


def _result_row(r: RowResult) -> dict[str, Any]:
    """One row of the results table, from the masked view only (never the raw answer's personal data)."""
    certs = (r.view or {}).get("certificates") or []
    described = []
    for c in certs:
        status = v.status_badge(c.get("effective"))
        item = c.get("operation_item") or c.get("category") or ""
        described.append(f"{v.kind_name(c.get('kind'))} {item} ({status.zh})".replace("  ", " "))
    return {
        "line": r.pair.row,
        "number": r.number_norm or r.pair.number,
        "name": r.pair.name or "",
        "verdict": r.answer.verdict.value if r.answer else None,
        "name_matches": r.name_matches,
        "certificate": "；".join(described),
        "valid_until": "；".join(v.fmt_date(c.get("valid_until")) for c in certs if c.get("valid_until")),
        "error": (r.error or {}).get("detail") if r.answer is None else None,
        "name_check": r.name_check.value if r.name_check else None,
    }


def _summary(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    counts = Counter("invalid" if r["error"] else r["verdict"] for r in rows)
    out = []
    for key, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        label = "输入有误 invalid" if key == "invalid" else f"{v.verdict_badge(key).zh} {key}"
        out.append((label, n))
    not_checked = sum(1 for r in rows if r.get("name_check") == "not_checked")
    if not_checked:  # the daily name-check budget: these rows' names were not compared
        out.append(("姓名未核对（今日核对次数已达上限或暂不可用）names not checked (daily budget spent)", not_checked))
    return out


async def _read_upload(request: Request, file_limit: int) -> Multipart:
    svc = services(request)
    return await receive_multipart(request, dest_dir=svc.config.upload_dir, file_limit=file_limit)


@_html_errors
async def employer_page(request: Request) -> Response:
    principal, login_page = await _signed_in_page(request, "/employer")
    if login_page is not None:
        return login_page
    svc = services(request)
    ctx: dict[str, Any] = {
        "need_login": False,
        "batch_max": svc.config.batch_max,
        "rows": None,
        "needs_purpose": principal.role == Role.REGULATOR,
    }
    if request.method == "GET":
        return _render(request, "employer.html", ctx, principal=principal)

    form = await _read_upload(request, svc.config.body_limit)
    try:
        if not _csrf_ok(request, form.fields.get(CSRF_FIELD)):
            return _csrf_failed(request)
        if form.file is None or form.file.size == 0:
            ctx["file_error"] = "请选择一个 CSV 文件 (choose a CSV file)"
            return _render(request, "employer.html", ctx, status=422, principal=principal)
        raw = form.file.path.read_bytes()
    finally:
        form.discard()
    try:
        pairs = parse_csv_pairs(raw, limit=svc.config.batch_max)
    except WebError as e:
        ctx["file_error"] = describe(e).text
        return _render(request, "employer.html", ctx, status=describe(e).status, principal=principal)
    results = await svc.verify_for(
        principal,
        pairs,
        purpose=form.fields.get("purpose") or None,
        client_ip=client_address(request),
        rate_state=request.scope.setdefault("state", {}),
    )
    csv_text = rows_to_csv(results)
    if form.fields.get("output") == "csv":
        return Response(
            csv_text,
            media_type="text/csv; charset=utf-8",
            headers={"Cache-Control": "no-store", "Content-Disposition": 'attachment; filename="certq-results.csv"'},
        )
    rows = [_result_row(r) for r in results]
    ctx.update(rows=rows, summary=_summary(rows), csv_text=csv_text)
    return _render(request, "employer.html", ctx, principal=principal)


async def employer_template(request: Request) -> Response:
    return Response(
        v.template_csv(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="certq-template.csv"'},
    )


# --- regulator --------------------------------------------------------------------------------------------


@_html_errors
async def regulator_page(request: Request) -> Response:
    principal, login_page = await _signed_in_page(request, "/regulator")
    if login_page is not None:
        return login_page
    svc = services(request)
    ctx: dict[str, Any] = {"need_login": False, "answer": None, "source_names": _source_names(request)}
    status = 200
    if request.method == "POST":
        form = await _urlencoded_form(request)
        if not _csrf_ok(request, form.get(CSRF_FIELD)):
            return _csrf_failed(request)
        fields = {k: _field(form, k) for k in ("number", "name", "id_number", "purpose")}
        ctx["form"] = fields
        errors: dict[str, str] = {}
        if not fields["number"]:
            errors["number"] = "请输入证书编号或身份证号 (enter a certificate or ID number)"
        for name in ("number", "id_number"):  # checked here too, so the reason shows next to its own field
            if fields[name] and (reason := _number_problem(fields[name])):
                errors[name] = reason
        if not fields["purpose"]:
            errors["purpose"] = describe(PurposeRequired()).text
        if not errors:
            _, ctx["answer"] = await svc.lookup_for(
                principal,
                fields["number"],
                name=fields["name"] or None,
                id_number=fields["id_number"] or None,
                purpose=fields["purpose"],
                client_ip=client_address(request),
            )
        if errors:
            ctx["errors"] = errors
            status = 422 if ("number" in errors or "id_number" in errors) else 400
    ctx["audit"] = await svc.audit.read(limit=AUDIT_ROWS)
    return _render(request, "regulator.html", ctx, status=status, principal=principal)


def _number_problem(text: str) -> str | None:
    """Why `text` cannot be looked up (the NumberError's reason), or None."""
    try:
        parse_number(text)
    except NumberError as e:
        return _number_error(e)
    return None


# --- department upload ------------------------------------------------------------------------------------


def _department_choices(principal: Principal) -> list[tuple[str, str]]:
    """Departments a signed-in key may upload for: its own (department keys) or any (admin)."""
    if principal.role == Role.ADMIN:
        return [(d.value, f"{DEPARTMENT_NAMES[d]} {d.value}") for d in Department]
    return []


@_html_errors
async def department_page(request: Request) -> Response:
    principal, login_page = await _signed_in_page(request, "/department")
    if login_page is not None:
        return login_page
    svc = services(request)
    own = principal.department
    ctx: dict[str, Any] = {
        "need_login": False,
        "departments": _department_choices(principal),
        "own_department": f"{DEPARTMENT_NAMES[own]} {own.value}" if own else "",
        "report": None,
    }
    if request.method == "GET":
        return _render(request, "department.html", ctx, principal=principal)

    form = await _read_upload(request, svc.config.upload_limit)
    try:
        if not _csrf_ok(request, form.fields.get(CSRF_FIELD)):
            return _csrf_failed(request)
        fields = {k: _field(form.fields, k) for k in ("quarter", "department", "partial")}
        ctx["form"] = fields
        errors: dict[str, str] = {}
        department = quarter = None
        try:  # the API's own checks: a department key uploads only its own records
            department = _target_department(principal, _department(fields["department"]))
        except WebError as e:
            errors["department"] = describe(e).text
        try:
            quarter = _quarter(fields["quarter"])
        except WebError as e:
            errors["quarter"] = describe(e).text
        if form.file is None or form.file.size == 0:
            errors["file"] = "请选择要上传的数据文件 (choose a records file)"
        if errors or form.file is None or department is None or quarter is None:
            ctx["errors"] = errors
            return _render(request, "department.html", ctx, status=422, principal=principal)
        report, status = await _import(request, principal, form.file, department, quarter, fields["partial"] == "1")
    finally:
        form.discard()
    ctx["report"] = report
    return _render(request, "department.html", ctx, status=status, principal=principal)


async def _import(
    request: Request, principal: Principal, file: SavedFile, department: Department, quarter: str, partial: bool
) -> tuple[Any, int]:
    """Import as POST /api/v1/uploads does (same store call, same uploader text), then make this process's
    cached answers for the department unreachable. Returns the report and the page's status."""
    svc = services(request)
    try:
        report = await svc.gateway.store.import_file(
            file.path,
            department=department,
            quarter=quarter,
            uploaded_by=f"{principal.label or principal.role.value} (key {principal.key_id})",
            partial=partial,
            file_name=file.name,
        )
    except AlreadyImported as e:
        already = {
            "status": "already_imported",
            "id": e.batch_id,
            "department": department.value,
            "quarter": quarter,
            "file_name": file.name,
            "message": str(e),
        }
        return already, 409
    if report.status == BatchStatus.REJECTED:
        return report, 422
    svc.gateway.forget_generation(department)
    return report, 200


# --- sources ------------------------------------------------------------------------------------------------


@_html_errors
async def sources_page(request: Request) -> Response:
    """Every source's health, from the same data as GET /api/v1/sources."""
    import json

    principal, _ = await _page_principal(request)
    body = json.loads(bytes((await get_sources(request)).body))
    return _render(request, "sources.html", {"sources": body["sources"]}, principal=principal)


def page_routes() -> list[BaseRoute]:
    """The pages' routes; the app mounts them beside the API and serves STATIC_DIR at /static."""
    return [
        Route("/", home, methods=["GET"], name="page_home"),
        Route("/lookup", lookup_page, methods=["GET"], name="page_lookup"),
        Route("/employer", employer_page, methods=["GET", "POST"], name="page_employer"),
        Route("/employer/template.csv", employer_template, methods=["GET"], name="page_employer_template"),
        Route("/regulator", regulator_page, methods=["GET", "POST"], name="page_regulator"),
        Route("/department", department_page, methods=["GET", "POST"], name="page_department"),
        Route("/sources", sources_page, methods=["GET"], name="page_sources"),
        Route("/login", _html_errors(login), methods=["POST"], name="page_login"),
        Route("/logout", _html_errors(logout), methods=["POST"], name="page_logout"),
    ]
