"""The status page: every source's state now, its availability over 24 h / 30 d / 90 d, its incidents, and each
department's upload freshness; from the same services as GET /api/v1/sources and .../{id}/history."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aggregator.web.access import services
from aggregator.web.pages.render import html_errors, render
from aggregator.web.pages.session import page_principal
from aggregator.web.pages.view import Badge, fmt_time

STATE_BADGES: dict[str, Badge] = {
    "up": Badge("ok", "●", "正常", "up"),
    "degraded": Badge("warn", "◐", "部分失败", "degraded"),
    "down": Badge("bad", "✕", "不可用", "down"),
    "idle": Badge("muted", "○", "近期无调用", "no recent calls"),
    "off": Badge("muted", "–", "未启用", "not configured"),
    "manual": Badge("info", "↗", "人工查询", "link-out"),
}
WINDOW_NAMES = {"24h": ("过去 24 小时", "24 hours"), "30d": ("过去 30 天", "30 days"), "90d": ("过去 90 天", "90 days")}


def bar_look(availability: float | None, down_below: float) -> tuple[str, str]:
    """A bar's css class and the words for its availability (never colour alone)."""
    if availability is None:
        return "none", "无调用 no calls"
    words = f"可用率 {availability * 100:.1f}%"
    if availability >= 0.99:
        return "ok", words
    if availability >= 0.95:
        return "minor", words
    if availability >= down_below:
        return "warn", words
    return "bad", words


def _history_view(item: Any, down_below: float) -> dict[str, Any]:
    data = item.model_dump()
    data["badge"] = STATE_BADGES.get(item.state, STATE_BADGES["idle"])
    for window in data["windows"]:
        window["zh"], window["en"] = WINDOW_NAMES.get(window["window"], (window["window"], window["window"]))
        daily = window["bar_minutes"] >= 24 * 60
        for bar in window["bars"]:
            bar["css"], bar["words"] = bar_look(bar["availability"], down_below)
            start = fmt_time(bar["start"])
            bar["label"] = start[:10] if daily else f"{start} – {fmt_time(bar['end'])[11:]}"  # Beijing time
    return data


@html_errors
async def sources_page(request: Request) -> Response:
    """Every source: state now (and its circuit), recent calls in this process, availability bars and incidents
    from the shared history, and the departments' upload freshness."""
    principal, _ = await page_principal(request)
    svc = services(request).sources
    health = await svc.health()
    histories = await svc.status()
    config = svc.health_config()
    down_below = config.down_below
    views = [_history_view(h, down_below) for h in histories]
    uploads = [h for h in histories if h.upload is not None]
    return render(
        request,
        "sources.html",
        {
            "sources": health,
            "states": {v["id"]: v["badge"] for v in views},
            "histories": views,
            "uploads": uploads,
            "incident_min": config.incident_min_minutes,
            "overdue_days": config.upload_overdue_days,
        },
        principal=principal,
    )


routes = [Route("/sources", sources_page, methods=["GET"], name="page_sources")]
