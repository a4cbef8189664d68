"""Fault switches for the sandbox sites: what can go wrong, and the generic pages that say so.

    >>> f = Faults.model_validate({"error_rate": "0.5", "error_kinds": "502,reset"})
    >>> f.error_kinds
    ['502', 'reset']
    >>> parse_fault_option("mem:captcha=1")
    ('mem', 'captcha', '1')

The switches are those of docs/sources.md ("Sandbox fault switches"). A site keeps one `FaultState`:
the switches plus the `fail_next` countdown and a seeded random generator, so a run is repeatable.
"""

from __future__ import annotations

import random
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ErrorKindName = Literal["500", "502", "504", "reset", "hang"]
DEFAULT_ERROR_KINDS: tuple[ErrorKindName, ...] = ("500", "502", "504")
BAN_MESSAGE = "您的IP最近有可疑的攻击行为，请明日再试"


class Faults(BaseModel):
    """One site's fault switches. All off by default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    latency_ms: float = Field(default=0.0, ge=0)
    latency_jitter_ms: float = Field(default=0.0, ge=0)
    # uniform: jitter drawn from [0, latency_jitter_ms]; exponential: a long tail with mean latency_jitter_ms
    latency_distribution: Literal["uniform", "exponential"] = "uniform"
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_kinds: list[ErrorKindName] = Field(default_factory=lambda: list(DEFAULT_ERROR_KINDS), min_length=1)
    captcha: bool = False
    ban: bool = False
    rate_limit_retry_after: int = Field(default=0, ge=0)  # seconds; 0 = off
    maintenance: bool = False
    garbage: bool = False
    layout_changed: bool = False
    fail_next: int = Field(default=0, ge=0)

    @field_validator("error_kinds", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        if isinstance(v, list):
            return [str(k) for k in v]
        return v


class FaultError(ValueError):
    """A fault setting that cannot be applied; the message names the key."""


def parse_fault_option(option: str) -> tuple[str, str, str]:
    """`SITE:KEY=VALUE` (as given to `certq sandbox --fault`) -> (site, key, value)."""
    site, sep, rest = option.partition(":")
    key, eq, value = rest.partition("=")
    if not sep or not eq or not site.strip() or not key.strip():
        raise FaultError(f"fault {option!r} is not SITE:KEY=VALUE (e.g. mem:captcha=1, samr:latency_ms=200)")
    return site.strip(), key.strip(), value.strip()


def _explain(e: ValidationError) -> str:
    problems = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or "faults"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown switch {where!r} (known: {', '.join(Faults.model_fields)})")
        else:
            problems.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(problems)


class FaultState:
    """The live fault switches of one site, with the fail_next countdown and a seeded generator."""

    def __init__(self, site: str, initial: dict[str, Any] | None = None) -> None:
        self.site = site
        self.rng = random.Random(f"sandbox-faults:{site}")
        self.faults = Faults()
        self.update(initial or {})

    def update(self, changes: dict[str, Any]) -> Faults:
        """Apply some switches (the others keep their value); raises `FaultError` naming a bad key."""
        if not isinstance(changes, dict):
            raise FaultError("faults must be a JSON object of switch: value")
        try:
            self.faults = Faults.model_validate({**self.faults.model_dump(), **changes})
        except ValidationError as e:
            raise FaultError(f"{self.site}: {_explain(e)}") from None
        return self.faults

    def clear(self) -> Faults:
        self.faults = Faults()
        return self.faults

    def delay_s(self) -> float:
        f = self.faults
        extra = 0.0
        if f.latency_jitter_ms > 0:
            if f.latency_distribution == "exponential":
                extra = self.rng.expovariate(1.0 / f.latency_jitter_ms)
            else:
                extra = self.rng.uniform(0.0, f.latency_jitter_ms)
        return (f.latency_ms + extra) / 1000.0

    def take_fail_next(self) -> bool:
        """True (and one fewer to go) while `fail_next` requests remain to fail."""
        if self.faults.fail_next > 0:
            self.faults = self.faults.model_copy(update={"fail_next": self.faults.fail_next - 1})
            return True
        return False

    def draw_error(self) -> str | None:
        """One of `error_kinds` with probability `error_rate`, else None."""
        f = self.faults
        if f.error_rate > 0 and self.rng.random() < f.error_rate:
            return self.rng.choice(f.error_kinds)
        return None


# --- generic pages (the same whichever site: they come from the server or WAF in front of it) -------------

_PAGE = '<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title></head><body>{body}</body></html>'


def status_page(status: int) -> web.Response:
    """A bare gateway error page (500/502/504)."""
    reason = {500: "Internal Server Error", 502: "Bad Gateway", 504: "Gateway Time-out"}.get(status, "Error")
    body = f"<center><h1>{status} {reason}</h1></center><hr><center>nginx</center>"
    return web.Response(status=status, text=_PAGE.format(title=f"{status} {reason}", body=body),
                        content_type="text/html")  # fmt: skip


def ban_page() -> web.Response:
    body = f'<div class="waf-block"><h2>访问被拒绝</h2><p>{BAN_MESSAGE}</p></div>'
    return web.Response(status=403, text=_PAGE.format(title="访问被拒绝", body=body), content_type="text/html")


def rate_limited_page(retry_after_s: int) -> web.Response:
    body = "<h2>请求过于频繁，请稍后再试</h2>"
    return web.Response(status=429, text=_PAGE.format(title="429 Too Many Requests", body=body),
                        content_type="text/html", headers={"Retry-After": str(retry_after_s)})  # fmt: skip


def maintenance_page() -> web.Response:
    body = '<div class="maintain"><h1>系统维护中</h1><p>系统维护，暂停服务，给您带来不便敬请谅解。</p></div>'
    return web.Response(status=503, text=_PAGE.format(title="系统维护", body=body), content_type="text/html")


_GARBAGE_HTML = [
    '<div id="app"></div><script src="/static/js/chunk-vendors.3f2a1c.js"></script>',
    "<h3>加载中，请稍候……</h3><noscript>请启用JavaScript</noscript>",
    '<div class="news-list"><ul><li><a href="/news/1">关于开展2026年度特种作业人员复审工作的通知</a></li></ul></div>',
]


def garbage_response(rng: random.Random) -> web.Response:
    """HTTP 200 with a body that is neither a result nor a not-found: random bytes, a page shell, cut JSON."""
    choice = rng.randrange(4)
    if choice == 0:
        return web.Response(status=200, body=rng.randbytes(rng.randint(64, 512)), content_type="application/json")
    if choice == 1:
        return web.Response(status=200, text='{"code": 200, "msg": "查询成功", "da', content_type="application/json")
    html = _GARBAGE_HTML[rng.randrange(len(_GARBAGE_HTML))]
    return web.Response(status=200, text=_PAGE.format(title="", body=html), content_type="text/html")
