"""Presentation helpers for the web pages: labels, Jinja filters and the employer's CSV template.

Pure functions with no I/O, used by the page modules and their templates. Values may arrive as pydantic models
(enums, dates) or as the JSON form of an answer (plain strings), so every helper accepts both.

    >>> verdict_badge("valid").zh
    '有效'
    >>> safe_url("javascript:alert(1)")
    '#'
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from aggregator.errors import SOURCE_ERROR_TEXT
from aggregator.models import (
    CERT_KIND_NAMES,
    CERTIFICATE_FIELDS,
    DEPARTMENT_NAMES,
    DETAIL_FIELDS,
    VERDICT_LABELS,
    CertKind,
    Department,
    ErrorKind,
    Verdict,
    field_label,
)

BEIJING = timezone(timedelta(hours=8), "北京时间")  # China has no daylight saving time


@dataclass(frozen=True)
class Badge:
    """A status shown as colour *and* words *and* a symbol, so it never relies on colour alone."""

    css: str
    symbol: str
    zh: str
    en: str


_VERDICT_LOOKS: dict[Verdict, tuple[str, str]] = {
    Verdict.VALID: ("ok", "✓"),
    Verdict.EXPIRED: ("warn", "!"),
    Verdict.SUSPENDED: ("bad", "✕"),
    Verdict.REVOKED: ("bad", "✕"),
    Verdict.NOT_FOUND: ("none", "?"),
    Verdict.NAME_MISMATCH: ("bad", "✕"),
    Verdict.INCONCLUSIVE: ("unsure", "?"),
}
_VERDICTS: dict[str, Badge] = {
    v.value: Badge(*_VERDICT_LOOKS[v], zh, en) for v, (zh, en) in VERDICT_LABELS.items()
}
_STATUSES: dict[str, Badge] = {
    "valid": Badge("ok", "✓", "有效", "valid"),
    "expired": Badge("warn", "!", "已过期", "expired"),
    "suspended": Badge("bad", "✕", "暂扣", "suspended"),
    "revoked": Badge("bad", "✕", "吊销/撤销/注销", "revoked"),
    "unknown": Badge("unsure", "?", "状态不明", "unknown"),
}
_OUTCOMES: dict[str, Badge] = {
    "found": Badge("ok", "●", "查到", "found"),
    "not_found": Badge("none", "○", "未查到", "not found"),
    "unavailable": Badge("bad", "✕", "不可用", "unavailable"),
    "manual": Badge("info", "→", "需人工查询", "check by hand"),
    "skipped": Badge("muted", "–", "未询问", "skipped"),
}
MODE_LABELS: dict[str, str] = {
    "records": "上报数据 records",
    "api": "接口 API",
    "html": "网页 HTML",
    "link": "链接查询 link-out",
}
CIRCUIT_LABELS: dict[str, Badge] = {
    "closed": Badge("ok", "●", "正常", "closed"),
    "half_open": Badge("warn", "◐", "试探中", "half-open"),
    "open": Badge("bad", "✕", "已熔断", "open"),
}
# Certificate fields in the order a card shows them, with their labels (from the model).
CERT_FIELDS: tuple[tuple[str, str], ...] = tuple((name, field_label(name)) for name in DETAIL_FIELDS)
FIELD_NAMES: dict[str, str] = {name: field_label(name) for name in CERTIFICATE_FIELDS}


def _key(value: Any) -> str:
    """The string form of an enum member or a plain string (the JSON form of an answer)."""
    return str(getattr(value, "value", value) or "")


def verdict_badge(verdict: Any) -> Badge:
    return _VERDICTS.get(_key(verdict), Badge("unsure", "?", _key(verdict), _key(verdict)))


def status_badge(status: Any) -> Badge:
    return _STATUSES.get(_key(status), _STATUSES["unknown"])


def outcome_badge(outcome: Any) -> Badge:
    return _OUTCOMES.get(_key(outcome), Badge("muted", "?", _key(outcome), _key(outcome)))


def circuit_badge(state: Any) -> Badge:
    return CIRCUIT_LABELS.get(_key(state), Badge("muted", "?", _key(state) or "未知", "unknown"))


def department_name(department: Any) -> str:
    try:
        return DEPARTMENT_NAMES[Department(_key(department))]
    except ValueError:
        return _key(department)


def kind_name(kind: Any) -> str:
    try:
        return CERT_KIND_NAMES[CertKind(_key(kind))]
    except ValueError:
        return _key(kind)


def error_text(kind: Any) -> str:
    """The one wording of a source error kind (aggregator.errors), Chinese then English."""
    try:
        zh, en = SOURCE_ERROR_TEXT[ErrorKind(_key(kind))]
    except ValueError:
        return _key(kind)
    return f"{zh} ({en})"


def _as_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def fmt_date(value: Any) -> str:
    """A date as YYYY-MM-DD; an ISO string passes through; nothing stays empty."""
    if value is None or value == "":
        return ""
    if isinstance(value, datetime):
        return value.astimezone(BEIJING).date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def fmt_time(value: Any) -> str:
    """A moment in Beijing time, to the minute: '2026-11-25 14:03'."""
    dt = _as_datetime(value)
    return dt.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M") if dt else ""


def fmt_age(value: Any, now: Any = None) -> str:
    """How long ago a moment was, in words: '刚刚 just now', '5 分钟前 5 min ago', '3 天前 3 days ago'."""
    dt = _as_datetime(value)
    if dt is None:
        return ""
    ref = _as_datetime(now) or datetime.now(UTC)
    seconds = (ref - dt).total_seconds()
    if seconds < 60:
        return "刚刚 just now"
    for size, zh, en in ((86400, "天", "days"), (3600, "小时", "h"), (60, "分钟", "min")):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {zh}前 {n} {en} ago"
    return ""


def fmt_value(value: Any) -> str:
    """Any certificate field as text: dates ISO, lists joined by 和, enums by their value."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return "和".join(fmt_value(v) for v in value)
    if isinstance(value, date | datetime):
        return fmt_date(value)
    return _key(value)


def fmt_percent(value: Any) -> str:
    if value is None or value == "":
        return "—"
    try:
        return f"{float(value) * 100:.0f}%"
    except (TypeError, ValueError):
        return str(value)


def fmt_ms(value: Any) -> str:
    if value is None or value == "":
        return "—"
    try:
        return f"{float(value):.0f} ms"
    except (TypeError, ValueError):
        return str(value)


def safe_url(url: Any) -> str:
    """An http(s) URL as given, anything else (javascript:, data:, relative junk) as '#'.

    Autoescaping stops markup injection in an href, not a `javascript:` scheme, so links that came from
    configuration or an upstream go through here."""
    text = str(url or "").strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        return "#"
    return text if parts.scheme in ("http", "https") and parts.netloc else "#"


def get(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute of a model or key of a dict, so templates and code take either form of an answer."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


# --- CSV ------------------------------------------------------------------------------------------


def template_csv() -> str:
    """The employer's list template: the header `parse_csv_pairs` reads, and two example rows."""
    buf = io.StringIO()
    buf.write("\ufeff")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(["证书编号", "姓名"])
    writer.writerow(["T110105199003071239", "张伟"])
    writer.writerow(["吉A012024000123", "李娜"])
    return buf.getvalue()
