"""What changed for one monitored member between two checks: the events, and the state to compare with next.

    state, events, since = changes(member.state, result, today=date.today(), now=now, warn_days=(90, 30, 7),
                                   inconclusive_since=member.inconclusive_since, inconclusive_after_days=3)

`result` is the member's result of a check (the JSON a roster run stores: verdict, complete, certificates,
conflicts). The first check of a member is its baseline: it records the state and emits nothing (thresholds of
expiry already crossed then count as warned). Afterwards, per certificate (department, number, operation item):
its status changed; it is newly found; it is no longer found (only when every source answered: an answer missing
a source's certificates proves nothing about them); its expiry crossed one of the warning thresholds (once per
threshold and valid-until date); and for the member, a conflict between sources appeared (folded into the status
change when that is what the sources disagree about: one upload still saying valid while the live site says
revoked is one event, not two), or its sources have
been inconclusive for longer than `inconclusive_after_days` (once per spell). An inconclusive check changes no
state: an outage never reads as "revoked" or "no longer found".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any


@dataclass
class Event:
    type: str
    number: str | None = None
    department: str | None = None
    old: str | None = None
    new: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def certificate_key(c: dict[str, Any]) -> str:
    return f"{c.get('department') or ''}:{c.get('number') or ''}:{c.get('operation_item') or ''}"


def _certificates(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        certificate_key(c): {
            "department": c.get("department"),
            "number": c.get("number"),
            "status": c.get("status"),
            "valid_until": c.get("valid_until"),
            "operation_item": c.get("operation_item"),
        }
        for c in result.get("certificates") or []
    }


def _days(valid_until: Any, today: date) -> int | None:
    try:
        return (date.fromisoformat(str(valid_until)[:10]) - today).days
    except (TypeError, ValueError):
        return None


def _expiry(
    key: str, cert: dict[str, Any], today: date, warn_days: tuple[int, ...], warned: set[str], emit: bool
) -> Event | None:
    """The expiry warning due for a certificate, marking every threshold it has crossed as warned."""
    if cert.get("status") != "valid":
        return None
    days = _days(cert.get("valid_until"), today)
    if days is None:
        return None
    crossed = [t for t in warn_days if days <= t]
    fresh = [t for t in crossed if f"{key}|{t}|{cert.get('valid_until')}" not in warned]
    for t in crossed:
        warned.add(f"{key}|{t}|{cert.get('valid_until')}")
    if not fresh or not emit:
        return None
    threshold = min(fresh)
    return Event(
        "expiry_approaching",
        number=cert.get("number"),
        department=cert.get("department"),
        new=cert.get("status"),
        detail={"valid_until": cert.get("valid_until"), "days_left": days, "threshold_days": threshold},
    )


def changes(
    old: dict[str, Any] | None,
    result: dict[str, Any],
    *,
    today: date,
    now: datetime,
    warn_days: tuple[int, ...] = (90, 30, 7),
    inconclusive_since: datetime | None = None,
    inconclusive_after_days: int = 3,
) -> tuple[dict[str, Any] | None, list[Event], datetime | None]:
    """(the state to keep, the events, since when the member's sources have been inconclusive)."""
    events: list[Event] = []
    verdict = result.get("verdict")
    if verdict in (None, "inconclusive"):
        since = inconclusive_since or now
        state = dict(old) if old is not None else None
        reported = (state or {}).get("inconclusive_reported")
        if now - since >= timedelta(days=inconclusive_after_days) and reported != since.isoformat():
            events.append(
                Event(
                    "inconclusive_too_long",
                    detail={"since": since.isoformat(), "days": (now - since).days, "reason": result.get("verdict_reason")},
                )
            )
            state = {**(state or {}), "inconclusive_reported": since.isoformat()}
        return state, events, since

    baseline = old is None or "certificates" not in old
    before: dict[str, dict[str, Any]] = {} if baseline else dict(old["certificates"])  # type: ignore[index]
    now_seen = _certificates(result)
    complete = bool(result.get("complete"))
    warned = set((old or {}).get("warned") or [])
    kept = dict(now_seen)

    if not baseline:
        for key, cert in now_seen.items():
            prev = before.get(key)
            if prev is None:
                events.append(
                    Event("newly_found", number=cert["number"], department=cert["department"], new=cert["status"])
                )
            elif prev.get("status") != cert.get("status"):
                events.append(
                    Event(
                        "status_changed",
                        number=cert["number"],
                        department=cert["department"],
                        old=prev.get("status"),
                        new=cert.get("status"),
                        detail={"valid_until": cert.get("valid_until"), "was_valid_until": prev.get("valid_until")},
                    )
                )
        for key, prev in before.items():
            if key in now_seen:
                continue
            if complete:
                events.append(
                    Event("no_longer_found", number=prev.get("number"), department=prev.get("department"), old=prev.get("status"))
                )
            else:
                kept[key] = prev  # a source that did not answer proves nothing about its certificates
        conflicts = int(result.get("conflicts") or 0)
        if conflicts > 0 and int((old or {}).get("conflicts") or 0) == 0:
            changed = [e for e in events if e.type == "status_changed"]
            for e in changed:  # the sources disagree about the change itself: one event that says so, not two
                e.detail["sources_disagree"] = True
            if not changed:
                events.append(Event("conflict_appeared", detail={"conflicts": conflicts}))

    for key, cert in now_seen.items():
        warning = _expiry(key, cert, today, warn_days, warned, emit=not baseline)
        if warning is not None:
            events.append(warning)

    state = {
        "verdict": verdict,
        "certificates": kept,
        "conflicts": int(result.get("conflicts") or 0),
        "warned": sorted(warned),
    }
    return state, events, None
