"""The holder's view: a holder proves control of a certificate (number + full name + full ID number) and sees
who looked their certificates up (PIPL art. 44-45).

    holders = HolderService(engine, redis_client)                    # built by `Services.on`
    report = await holders.report(client_ip, number, name, id_number)
    report.lookups        # by organisations with a key: organisation, role, purpose, time, verdict
    report.public_days    # anonymous public lookups per day (counts only)
    holders.public.count(number)                                     # on every anonymous lookup (services)

Refusals are `HolderNotVerified` (403: the same answer for a wrong number, a wrong name and a wrong ID number)
and `HolderLocked` (429 with Retry-After: an IP or certificate over its attempt limit, decided before anything
is compared). See `guard.py` for the limits and `view.py` for what is read.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.numbers import normalise
from aggregator.web.config import WebConfig
from aggregator.web.holders.guard import HolderGuard, Limits, create_holder_guard
from aggregator.web.holders.view import PublicLookupCounts, holder_numbers, keyed_lookups, public_days
from aggregator.web.namebudget import caller_for
from aggregator.web.problems import WebError, _register, has_control_characters
from aggregator.web.roles import Principal

__all__ = ["HolderLocked", "HolderNotVerified", "HolderReport", "HolderService", "Limits", "holder_limits"]

MAX_FIELD = 64


class HolderNotVerified(WebError):
    """The number, name and ID number do not all match one certificate (which of them does not is not said)."""

    def __init__(self) -> None:
        super().__init__("holder not verified")


class HolderLocked(WebError):
    """Too many attempts from this address or on this certificate: locked out for a while."""

    header_docs: ClassVar[dict[str, tuple[str, str]]] = {"Retry-After": ("integer", "Seconds until the lock-out ends")}

    def __init__(self, limit: int, retry_after_s: int) -> None:
        super().__init__(f"holder view locked ({limit})", headers={"Retry-After": str(retry_after_s)})
        self.limit = limit
        self.retry_after_s = retry_after_s


_register(
    HolderNotVerified, 403, 77, "holder-not-verified",
    "证书编号、姓名与身份证号不能同时核实，请检查后重试",
    "the certificate number, name and ID number could not be verified together; check them and try again",
)
_register(
    HolderLocked, 429, 75, "holder-locked",
    "尝试次数过多，已暂时锁定，请 {exc.retry_after_s} 秒后再试",
    "too many attempts: locked out; try again in {exc.retry_after_s} s",
)


@dataclass
class HolderReport:
    """Everything the holder's view shows (nothing about anyone else)."""

    number: str
    numbers: list[str]  # the holder's certificate numbers (and ID number) the lookups are listed for
    lookups: list[dict[str, Any]] = field(default_factory=list)
    public_days: list[dict[str, Any]] = field(default_factory=list)
    generated_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "numbers": self.numbers,
            "generated_at": self.generated_at.isoformat() if self.generated_at else None,
            "lookups": [{**r, "at": r["at"].isoformat()} for r in self.lookups],
            "public_lookups_per_day": self.public_days,
        }

    def as_csv(self) -> str:
        """One CSV (UTF-8 with a BOM, so spreadsheets read the Chinese): the keyed lookups, then the public
        counts per day. Cells that could run as formulas get a leading '."""
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(["时间 Time (UTC)", "机构 Organisation", "角色 Role", "用途 Purpose", "操作 Action", "编号 Number",
                    "结论 Verdict"])
        for r in self.lookups:
            w.writerow([_cell(v) for v in (r["at"].isoformat(), r["organisation"], r["role"], r["purpose"] or "",
                                            r["action"], r["number"], r["verdict"] or "")])
        w.writerow([])
        w.writerow(["日期 Day (UTC)", "公众匿名查询次数 Anonymous public lookups"])
        for d in self.public_days:
            w.writerow([d["day"], d["count"]])
        return "\ufeff" + out.getvalue()


def _cell(value: str) -> str:
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _clean(value: str | None) -> str:
    text = (value or "").strip()
    if len(text) > MAX_FIELD or has_control_characters(text):
        raise HolderNotVerified()  # nothing this long or odd matches a record: the same answer as any mismatch
    return text


def holder_limits(config: WebConfig) -> Limits:
    """The attempt limits a `WebConfig` sets (its `holder_*` fields, CERTQ_WEB_HOLDER_* in the environment)."""
    return Limits(
        ip_limit=config.holder_ip_limit,
        ip_window_s=config.holder_ip_window_s,
        ip_lockout_s=config.holder_ip_lockout_s,
        cert_limit=config.holder_cert_limit,
        cert_window_s=config.holder_cert_window_s,
        cert_lockout_s=config.holder_cert_lockout_s,
    )


class HolderService:
    """The holder's view on the records database, its attempt limits shared through Redis when given."""

    def __init__(self, engine: AsyncEngine, redis_client: Any | None = None, *, limits: Limits | None = None) -> None:
        self._engine = engine
        self.guard: HolderGuard = create_holder_guard(engine, redis_client, limits=limits)
        self.public = PublicLookupCounts(engine)

    async def report(self, client_ip: str | None, number: str, name: str, id_number: str) -> HolderReport:
        """The lookups of the holder's certificates, once number + name + ID number are proven; else
        `HolderNotVerified` (every mismatch alike) or `HolderLocked` (over an attempt limit)."""
        number, name, id_number = _clean(number), _clean(name), _clean(id_number)
        key = normalise(number) or "-"
        ip_scope = caller_for(Principal.anonymous(), client_ip) or "ip:unknown"
        decision = await self.guard.admit(ip_scope, key)
        if not decision.allowed:
            raise HolderLocked(self.guard.limits.ip_limit, decision.retry_after_s)
        numbers = await holder_numbers(self._engine, number, name, id_number) if number and name and id_number else None
        if numbers is None:
            raise HolderNotVerified()
        await self.guard.succeeded(key)
        await self.public.flush()  # this instance's latest counts are in
        return HolderReport(
            number=key,
            numbers=sorted(numbers),
            lookups=await keyed_lookups(self._engine, numbers, id_number=normalise(id_number)),
            public_days=await public_days(self._engine, numbers),
            generated_at=datetime.now(UTC),
        )
