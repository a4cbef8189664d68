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
import re
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
    DEPARTMENT_SHORT_NAMES,
    DETAIL_FIELDS,
    LIVE_MODES,
    STATUS_LABELS,
    VERDICT_LABELS,
    CertKind,
    CertStatus,
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
_STATUS_LOOKS: dict[CertStatus, tuple[str, str]] = {
    CertStatus.VALID: ("ok", "✓"),
    CertStatus.EXPIRED: ("warn", "!"),
    CertStatus.SUSPENDED: ("bad", "✕"),
    CertStatus.REVOKED: ("bad", "✕"),
    CertStatus.UNKNOWN: ("unsure", "?"),
}
_STATUSES: dict[str, Badge] = {s.value: Badge(*_STATUS_LOOKS[s], zh, en) for s, (zh, en) in STATUS_LABELS.items()}
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


def department_short_name(department: Any) -> str:
    """住建部, 人社部 ...: where a table has room for a short name only."""
    try:
        return DEPARTMENT_SHORT_NAMES[Department(_key(department))]
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


def unbroken(fmt: Any) -> Any:
    """A filter that keeps what `fmt` makes (a date, a time, '12 ms') on one line on the page."""
    from markupsafe import Markup, escape

    def filter_(value: Any, *args: Any) -> Any:
        text = fmt(value, *args)
        return Markup(f'<span class="nowrap">{escape(text)}</span>') if text else text

    filter_.__name__ = fmt.__name__
    return filter_


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


def demo_examples() -> list[tuple[str, str]]:
    """(number, name) pairs that exist in the demo data set (`aggregator.sandbox.fixed`): the form's examples
    and the template's rows, so that trying them in the demo finds a certificate."""
    from aggregator.sandbox.fixed import examples

    picked = [e for e in examples() if e.name][:5]
    by_kind = [picked[0], picked[1], picked[4]]  # an MEM, a MOHURD and a MOHRSS number
    return [(e.number, e.name or "") for e in by_kind]


def template_csv() -> str:
    """The employer's list template: the header `parse_csv_pairs` reads, and example rows from the demo data."""
    buf = io.StringIO()
    buf.write("\ufeff")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(["证书编号", "姓名"])
    for number, name in demo_examples()[:2]:
        writer.writerow([number, name])
    return buf.getvalue()


def inline_code(text: Any) -> Any:
    """Text with `backticks` shown as code: escaped first, so only the <code> tags are markup."""
    from markupsafe import Markup, escape

    escaped = str(escape("" if text is None else str(text)))
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped))


def problem_text(text: str, lang: str) -> str:
    """A problem's registered text for the docs: a placeholder ('{exc.zh}') said in words."""
    if "{" not in text:
        return text
    case = "（具体原因随答复给出）" if lang == "zh" else "(the specific reason is given in the answer)"
    words = re.sub(r"\{exc\.(zh|en)\}", "", text)
    words = re.sub(r"\{[^{}]*\}", "…", words).strip(" ：:")
    return words or case


# --- the result card's page model ----------------------------------------------------------------------------

_ANSWERED = ("found", "not_found")
_STATUS_VERDICTS = ("valid", "expired", "suspended", "revoked")
HOLDER_DIFFERS = Badge("bad", "✕", "持证人不符", "not this holder")


def source_label(source_id: str, names: Mapping[str, str], error_kind: Any = None) -> str:
    """A source as the public reads it: its Chinese name, and what happened in words ('住建部…（数据源要求人工验证码）')."""
    label = names.get(source_id, source_id)
    if error_kind:
        try:
            label += f"（{SOURCE_ERROR_TEXT[ErrorKind(_key(error_kind))][0]}）"
        except ValueError:
            label += "（出错）"
    return label


def public_reason(reason: str, sources: list[Mapping[str, Any]], names: Mapping[str, str]) -> str:
    """`verdict_reason` with every source id replaced by the source's name and every `id(kind)` by the name and
    the error kind's words, built from the structured `sources` lines (the JSON keeps the ids)."""
    ids = sorted(set(names) | {str(s.get("source") or "") for s in sources}, key=len, reverse=True)
    ids = [i for i in ids if i]
    if not ids:
        return reason
    pattern = re.compile(
        r"(?<![A-Za-z0-9_])(" + "|".join(re.escape(i) for i in ids) + r")(?:\((\w+)\))?(?![A-Za-z0-9_])"
    )

    return pattern.sub(lambda m: source_label(m.group(1), names, m.group(2)), reason)


def name_check_line(answer: Mapping[str, Any]) -> tuple[str, Badge] | None:
    """With a name (or ID number) given: whether it matches, in words, for the role's view."""
    query = answer.get("query") or {}
    if not (query.get("name_given") or query.get("id_number_given")):
        return None
    verdict = _key(answer.get("verdict"))
    if verdict == "name_mismatch":
        return "所填姓名与证书记录不符 The name does not match the certificate's holder", Badge("bad", "✕", "姓名不符", "mismatch")
    if verdict not in _STATUS_VERDICTS:
        return "未找到可核对的证书 Nothing to compare the name with", Badge("muted", "–", "无法核对", "not checked")
    if "name_matches" in answer:  # the employer's view: the answer says
        matches = answer.get("name_matches")
    else:  # a full view has it per certificate; the public's view hides it
        checks = [c.get("name_matches") for c in answer.get("certificates") or [] if c.get("name_matches") is not None]
        matches = any(checks) if checks else ("no-mismatch" if answer.get("view", {}).get("masked") else None)
    if matches is True:
        return "所填姓名与证书记录一致 The name matches the certificate's holder", Badge("ok", "✓", "姓名一致", "match")
    if matches == "no-mismatch":
        return "未发现姓名不符 No name mismatch found", Badge("ok", "✓", "未发现不符", "no mismatch")
    return "数据源未记录持证人姓名，无法核对 The sources record no name to compare", Badge("muted", "–", "无法核对", "not checked")


def answer_page(answer: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """The result card's model: the answer (as the role may see it) plus what the page shows in words — the
    reason without ids, the sources asked first and the skipped ones folded into one line, whether a person must
    check by hand (only when no live source answered), and the name check."""
    sources = [dict(s) for s in answer.get("sources") or []]
    for s in sources:
        s["name"] = names.get(s.get("source", ""), s.get("source", ""))
    asked = [s for s in sources if _key(s.get("outcome")) != "skipped"]
    skipped = [s for s in sources if _key(s.get("outcome")) == "skipped"]
    live_answered = any(_key(s.get("mode")) in LIVE_MODES and _key(s.get("outcome")) in _ANSWERED for s in sources)
    manual_needed = not live_answered and _key(answer.get("verdict")) in ("not_found", "inconclusive")
    order = {"found": 0, "not_found": 1, "unavailable": 2, "manual": 3}
    asked.sort(key=lambda s: order.get(_key(s.get("outcome")), 9))
    page = dict(answer)
    page.update(
        page_reason=public_reason(str(answer.get("verdict_reason") or ""), sources, names),
        asked=asked,
        skipped=skipped,
        manual_needed=manual_needed,
        name_check=name_check_line(answer),
        holder_differs=_key(answer.get("verdict")) == "name_mismatch",
    )
    return page


def source_outcome_badge(s: Mapping[str, Any], manual_needed: bool) -> Badge:
    """A source's outcome; a link-out says '需人工查询' only when no live source answered."""
    if _key(s.get("outcome")) == "manual" and not manual_needed:
        return Badge("muted", "→", "可人工核实", "optional check by hand")
    return outcome_badge(s.get("outcome"))


def conflict_value(field: str, value: Any) -> str:
    """A conflict's value in words: a status as '暂扣', a kind or department by its name, nothing as '（空）'."""
    if value is None or value == "":
        return "（空）"
    if field in ("status", "effective"):
        return status_badge(value).zh
    if field == "kind":
        return kind_name(value)
    if field == "department":
        return department_name(value)
    return fmt_value(value)
