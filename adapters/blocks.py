"""Recognising captcha, WAF, ban, rate-limit and maintenance pages: one place for every source.

The runner applies `detect_block` to every response before an adapter sees it, so no parser ever reads a
challenge page as data (maigret's lesson: an HTTP 200 challenge page once made every check "found").

    err = detect_block(resp)          # an HttpResponse
    if err is not None:
        raise err                     # Captcha, Banned, RateLimited, AccessDenied or Maintenance

What is looked at, and why:
- Status: 429 is RateLimited (with Retry-After, seconds or an HTTP date); 403 is AccessDenied unless its
  body says more precisely what it is (captcha, ban).
- A JSON body that is a successful result (a list, or an object whose `code`/`status`/`success` says so)
  is never inspected: a record with a field named `captcha` is data. Other JSON objects are judged only by
  their top-level message fields (`msg`, `message`, `messageText`, `error` ...), never by their keys.
- An HTML or text body is judged by its visible text (scripts, styles and tags removed) when the page is
  short or an HTTP error, and by its <title> alone when it is a long 200 page: a real result page can
  carry a search form labelled 验证码, while a challenge or ban page is short. A missed block page is not
  dangerous either way, because adapters need positive evidence (it becomes parse_error, not not_found).
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from adapters.base import AccessDenied, Banned, Captcha, HttpResponse, Maintenance, RateLimited, SourceError

# Markers are matched case-insensitively on NFKC-normalised text, in this order (the first kind found wins).
BAN_MARKERS = (
    "您的ip最近有可疑的攻击行为",
    "ip已被封",
    "ip被封",
    "您的访问已被禁止",
    "ip地址已被限制",
    "your ip has been banned",
)
RATE_MARKERS = (
    "访问过于频繁",
    "请求过于频繁",
    "操作过于频繁",
    "访问频率过高",
    "too many requests",
    "rate limit exceeded",
)
CAPTCHA_MARKERS = (
    "验证码",
    "captcha",
    "滑动验证",
    "拖动滑块",
    "请完成安全验证",
    "安全验证",
    "人机验证",
    "just a moment...",
    "checking your browser",
)
DENIED_MARKERS = (
    "access denied",
    "403 forbidden",
    "request blocked",
    "the requested url was rejected",
    "您的访问被阻断",
    "对网站造成安全威胁",
    "网站防火墙",
    "web应用防火墙",
    "疑似黑客攻击",
    "非法请求",
    "attention required! | cloudflare",
)
MAINTENANCE_MARKERS = ("系统维护", "系统升级中", "维护中", "暂停服务", "under maintenance")

BAN_SUSPEND_S = 3600.0  # "请明日再试": a ban lasts; the breaker may stay open at least this long
SHORT_PAGE_CHARS = 3000  # visible text at or under this is judged whole; longer 200 pages by title only

JSON_MESSAGE_FIELDS = ("msg", "message", "messageText", "error", "errmsg", "errMsg", "errorMsg", "detail", "tips")
JSON_STATUS_FIELDS = ("code", "status", "errcode", "errCode", "resultCode", "retCode", "ret")
JSON_SUCCESS_VALUES = {"0", "00", "0000", "200", "ok", "success", "true"}

_SCRIPT_STYLE = re.compile(r"<(script|style|noscript)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_TITLE = re.compile(r"<title\b[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent/invalid."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def detect_block(resp: HttpResponse) -> SourceError | None:
    """The block, challenge or maintenance page `resp` is, or None when it may be handed to the adapter."""
    retry_after = parse_retry_after(_header(resp.headers, "Retry-After"))
    if resp.status == 429:
        return RateLimited("HTTP 429 Too Many Requests", retry_after_s=retry_after)
    text = _inspectable_text(resp)
    found = _match(text, retry_after) if text else None
    if resp.status == 403:
        return found if isinstance(found, AccessDenied) else AccessDenied("HTTP 403 Forbidden")
    return found


def _match(text: str, retry_after: float | None) -> SourceError | None:
    folded = unicodedata.normalize("NFKC", text).lower()

    def first(markers: tuple[str, ...]) -> str | None:
        return next((m for m in markers if m in folded), None)

    if m := first(BAN_MARKERS):
        return Banned(f"ban page ({m!r})", suspend_s=max(retry_after or 0.0, BAN_SUSPEND_S))
    if m := first(RATE_MARKERS):
        return RateLimited(f"rate-limit page ({m!r})", retry_after_s=retry_after)
    if m := first(CAPTCHA_MARKERS):
        return Captcha(f"captcha page ({m!r})")
    if m := first(DENIED_MARKERS):
        return AccessDenied(f"access-denied page ({m!r})")
    if m := first(MAINTENANCE_MARKERS):
        return Maintenance(f"maintenance page ({m!r})", suspend_s=retry_after)
    return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lower), None)


def _inspectable_text(resp: HttpResponse) -> str:
    """The part of the body that may reveal a block page (empty for a successful JSON result)."""
    body = resp.text
    stripped = body.lstrip()
    content_type = (_header(resp.headers, "Content-Type") or "").lower()
    if "json" in content_type or stripped[:1] in ("{", "["):
        try:
            data = json.loads(body)
        except ValueError:
            pass
        else:
            return _json_messages(data)
    visible = _visible_text(body)
    if resp.status >= 400 or len(visible) <= SHORT_PAGE_CHARS:
        return visible
    title = _TITLE.search(body)
    return _visible_text(title.group(1)) if title else ""


def _json_messages(data: Any) -> str:
    if not isinstance(data, dict) or _json_success(data):
        return ""
    parts: list[str] = []
    for name in JSON_MESSAGE_FIELDS:
        value = data.get(name)
        if isinstance(value, dict):
            value = value.get("message") or value.get("msg")
        if isinstance(value, str):
            parts.append(value)
    return " ".join(parts)


def _json_success(data: dict[str, Any]) -> bool:
    if isinstance(data.get("success"), bool):
        return bool(data["success"])
    for name in JSON_STATUS_FIELDS:
        if name in data:
            value = data[name]
            if isinstance(value, bool):
                return value
            return str(value).strip().lower() in JSON_SUCCESS_VALUES
    return False


def _visible_text(markup: str) -> str:
    text = _COMMENT.sub(" ", markup)
    text = _SCRIPT_STYLE.sub(" ", text)
    text = _TAG.sub(" ", text)
    return _SPACE.sub(" ", html.unescape(text)).strip()
