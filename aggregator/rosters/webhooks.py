"""The webhook dispatcher: organisations' events out to their endpoints, signed (Standard Webhooks), retried.

    dispatcher = WebhookDispatcher(engine, WebhookConfig.from_env())     # clock=, timer=, rng=, resolve= for tests
    engine.on_tick(dispatcher.tick)                                        # aggregator/web/services/work.py
    await dispatcher.tick()                                                # = fan_out(), then send_due()

Each tick (every 10 s, once across all workers) does two things:

1. `fan_out`: for every enabled endpoint, the organisation's events after the endpoint's cursor (roster_events.id)
   become deliveries (types filtered), and the cursor moves on, in one transaction that only commits if the
   cursor is still where it was read (two dispatchers never make the same deliveries twice).
2. `send_due`: deliveries that are due are claimed one by one (`UPDATE ... SET status='sending', lease_until=...
   WHERE id = (SELECT ... due ... LIMIT 1 FOR UPDATE SKIP LOCKED) AND <still due> RETURNING`: two workers never take the
   same attempt) and sent by up to `concurrency` lanes, at most `per_endpoint` of them to one endpoint, each
   request bounded by `timeout_s`, so one slow receiver holds two lanes for ten seconds and nothing else. New
   claims stop after `round_s`; what is left waits for the next tick. A worker that dies mid-send loses its lease
   and the delivery is claimed again (at least once: receivers deduplicate on `webhook-id`).

A 2xx answer delivers. 410 Gone fails the delivery and disables the endpoint. Anything else (another status, a
timeout, a refused or unreachable address) is retried after the backoff of `WebhookConfig` with jitter, or after
the receiver's Retry-After when that is longer; a delivery that would still be retrying after `retry_period_s`
fails, and if nothing reached the endpoint in all that time, the endpoint is disabled. Disabling writes an event
("webhook_disabled", roster_id None), which the organisation's other endpoints receive.

The body is the event with the minimum a receiver needs: the roster, the member's reference, the certificate
number and department, old and new status, dates. Never an ID number or a name (`payload_of`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import random
import secrets as _secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.records.database import write_transaction
from aggregator.records.reads import as_utc
from aggregator.records.schema import roster_events, webhook_attempts, webhook_deliveries, webhook_endpoints
from aggregator.rosters.webhook_config import WebhookConfig
from aggregator.rosters.webhook_store import SECRET_PREFIX, Clock, Delivery, new_msg_id, utcnow
from aggregator.rosters.webhook_urls import RefusedAddress, Resolve, UnsafeWebhookUrl, UrlPolicy

log = logging.getLogger(__name__)

USER_AGENT = "certq-webhooks/1 (+https://github.com/certq)"
#: What of an event's `detail` may leave certq: dates, counts, thresholds; never a name or an ID number.
SAFE_DETAIL = frozenset(
    {"valid_until", "was_valid_until", "days_left", "threshold_days", "since", "days", "conflicts",
     "webhook_id", "reason", "status_code"}
)  # fmt: skip
_SCALARS = (str, int, float, bool, type(None))


# --- the message ------------------------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    return as_utc(value).isoformat().replace("+00:00", "Z") if value else None


def payload_of(event: Mapping[str, Any]) -> str:
    """The body of an event's delivery (compact JSON, UTF-8): Standard Webhooks' {type, timestamp, data}."""
    detail = event.get("detail") or {}
    data: dict[str, Any] = {
        "event_id": int(event["id"]),
        "roster_id": event.get("roster_id"),
        "member_ref": event.get("member_ref"),
        "number": event.get("number"),
        "department": event.get("department"),
        "old": event.get("old"),
        "new": event.get("new"),
    }
    for key in sorted(SAFE_DETAIL & set(detail)):
        if key == "reason" and event.get("type") != "webhook_disabled":
            continue  # a verdict's reason can quote what was typed (a name); only certq's own reasons go out
        value = detail[key]
        if isinstance(value, _SCALARS):
            data[key] = value
    body = {"type": event["type"], "timestamp": _iso(event["at"]), "data": data}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def sign(secrets: list[str], msg_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` header: "v1,<base64 HMAC-SHA256>" per secret, space-separated."""
    to_sign = f"{msg_id}.{timestamp}.{body}".encode()
    out = []
    for secret in secrets:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX) + "==")
        out.append("v1," + base64.b64encode(hmac.new(key, to_sign, hashlib.sha256).digest()).decode())
    return " ".join(out)


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, (as_utc(when) - now).total_seconds())


# --- the dispatcher ---------------------------------------------------------------------------------------


class _Raced(Exception):
    """The endpoint's cursor moved since it was read: roll back."""


@dataclass(frozen=True)
class _Target:
    id: str
    organisation: str
    url: str
    secrets: list[str]


@dataclass(frozen=True)
class _Outcome:
    status_code: int | None
    error: str | None
    latency_ms: int
    retry_after: str | None


class WebhookDispatcher:
    def __init__(
        self,
        engine: AsyncEngine,
        config: WebhookConfig | None = None,
        *,
        clock: Clock = utcnow,
        timer: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        resolve: Resolve | None = None,
        name: str | None = None,
    ) -> None:
        self.engine = engine
        self.config = config or WebhookConfig.from_env()
        self.clock = clock
        self.timer = timer
        self.rng = rng or random.Random()
        self.policy = UrlPolicy(self.config, resolve=resolve)
        self.name = (name or f"{socket.gethostname()}:{os.getpid()}")[:55] + ":" + _secrets.token_hex(4)

    async def tick(self) -> None:
        """The periodic hook: new events into deliveries, then the due deliveries sent."""
        await self.fan_out()
        await self.send_due()

    def backoff_s(self, attempt: int) -> float:
        """The wait after failed attempt `attempt`, jitter included."""
        base = self.config.backoff_s(attempt)
        return base * (1 + self.config.jitter * self.rng.uniform(-1, 1))

    # --- events into deliveries -------------------------------------------------------------------------

    async def fan_out(self) -> int:
        """Deliveries for the events after each enabled endpoint's cursor; how many were made."""
        e, ev = webhook_endpoints.c, roster_events.c
        async with self.engine.connect() as conn:
            endpoints = (
                await conn.execute(
                    sa.select(e.id, e.organisation, e.event_types, e.cursor).where(e.enabled == sa.true())
                )
            ).all()
            if not endpoints:
                return 0
            orgs = sorted({r.organisation for r in endpoints})
            heads = dict(
                (
                    await conn.execute(
                        sa.select(ev.organisation, sa.func.max(ev.id))
                        .where(ev.organisation.in_(orgs))
                        .group_by(ev.organisation)
                    )
                ).all()
            )
        made = 0
        for endpoint in endpoints:
            if int(heads.get(endpoint.organisation) or 0) > int(endpoint.cursor):
                made += await self._fan_out_one(endpoint)
        return made

    async def _fan_out_one(self, endpoint: Any) -> int:
        ev = roster_events.c
        async with self.engine.connect() as conn:
            events = (
                await conn.execute(
                    sa.select(roster_events)
                    .where(ev.organisation == endpoint.organisation, ev.id > endpoint.cursor)
                    .order_by(ev.id)
                    .limit(self.config.events_per_tick)
                )
            ).all()
        if not events:
            return 0
        types = set(endpoint.event_types or [])
        now = self.clock()
        rows = [
            {
                "msg_id": new_msg_id(),
                "endpoint_id": endpoint.id,
                "event_id": int(r.id),
                "event_type": r.type,
                "payload": payload_of(r._mapping),
                "status": "pending",
                "attempts": 0,
                "created_at": now,
                "next_attempt_at": now,
            }
            for r in events
            if not types or r.type in types
        ]
        e = webhook_endpoints.c
        try:
            async with write_transaction(self.engine) as conn:
                moved = await conn.execute(
                    sa.update(webhook_endpoints)
                    .where(e.id == endpoint.id, e.cursor == endpoint.cursor, e.enabled == sa.true())
                    .values(cursor=int(events[-1].id))
                )
                if moved.rowcount != 1:
                    raise _Raced
                if rows:
                    await conn.execute(sa.insert(webhook_deliveries), rows)
        except _Raced:  # another dispatcher got there first (or the endpoint was disabled): its deliveries stand
            return 0
        return len(rows)

    # --- sending ----------------------------------------------------------------------------------------

    async def claim(self, exclude: set[str] = frozenset()) -> tuple[Delivery, _Target] | None:  # type: ignore[assignment]
        """Take one due delivery (pending and due, or sending with a lapsed lease) of an enabled endpoint."""
        d, e = webhook_deliveries.c, webhook_endpoints.c
        now = self.clock()
        due = sa.or_(
            sa.and_(d.status == "pending", d.next_attempt_at <= now),
            sa.and_(d.status == "sending", d.lease_until < now),
        )
        pick = (
            sa.select(d.id)
            .join(webhook_endpoints, e.id == d.endpoint_id)
            .where(due, e.enabled == sa.true())
            .order_by(d.next_attempt_at, d.id)
            .limit(1)
            .with_for_update(skip_locked=True, of=webhook_deliveries)
        )
        if exclude:
            pick = pick.where(d.endpoint_id.not_in(sorted(exclude)))
        async with write_transaction(self.engine) as conn:
            row = (
                await conn.execute(
                    sa.update(webhook_deliveries)
                    .where(d.id == pick.scalar_subquery(), due)  # `=`: run once (an IN may rescan it)
                    .values(
                        status="sending",
                        lease_owner=self.name,
                        lease_until=now + timedelta(seconds=self.config.lease_s),
                    )
                    .returning(*webhook_deliveries.c)
                )
            ).first()
            if row is None:
                return None
            target = (
                await conn.execute(
                    sa.select(e.id, e.organisation, e.url, e.secret, e.previous_secret, e.previous_until).where(
                        e.id == row.endpoint_id
                    )
                )
            ).one()
        keys = [target.secret]
        if target.previous_secret and target.previous_until and as_utc(target.previous_until) > now:
            keys.append(target.previous_secret)
        return Delivery.of(row), _Target(target.id, target.organisation, target.url, keys)

    async def send_due(self) -> int:
        """Send what is due (see the module docstring); how many attempts were made."""
        first = await self.claim()
        if first is None:
            return 0
        cfg = self.config
        deadline = self.timer() + cfg.round_s
        busy: Counter[str] = Counter()
        claiming = asyncio.Lock()
        made = 0
        queue: list[tuple[Delivery, _Target]] = [first]

        connector = aiohttp.TCPConnector(
            resolver=self.policy.resolver(), use_dns_cache=False, limit=cfg.concurrency, limit_per_host=cfg.per_endpoint
        )
        async with aiohttp.ClientSession(
            connector=connector, trust_env=False, timeout=aiohttp.ClientTimeout(total=cfg.timeout_s)
        ) as session:

            async def lane() -> None:
                nonlocal made
                while True:
                    async with claiming:
                        if queue:
                            claimed: tuple[Delivery, _Target] | None = queue.pop()
                        elif self.timer() >= deadline:
                            return
                        else:
                            full = {k for k, n in busy.items() if n >= cfg.per_endpoint}
                            claimed = await self.claim(full)
                        if claimed is None:
                            return
                        busy[claimed[0].endpoint_id] += 1
                    try:
                        await self._attempt(session, *claimed)
                        made += 1
                    except Exception:  # noqa: BLE001 - one delivery's failure to record must not stop the lanes
                        log.exception("webhook delivery %s: could not record the attempt", claimed[0].id)
                    finally:
                        busy[claimed[0].endpoint_id] -= 1

            await asyncio.gather(*(lane() for _ in range(cfg.concurrency)))
        return made

    async def _attempt(self, session: aiohttp.ClientSession, delivery: Delivery, target: _Target) -> None:
        outcome = await self._send(session, delivery, target)
        await self._record(delivery, target, outcome)

    async def _send(self, session: aiohttp.ClientSession, delivery: Delivery, target: _Target) -> _Outcome:
        timestamp = int(self.clock().timestamp())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": delivery.msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(target.secrets, delivery.msg_id, timestamp, delivery.payload),
        }
        started = self.timer()

        def took() -> int:
            return max(0, round((self.timer() - started) * 1000))

        try:
            self.policy.check_target(target.url)
            async with session.post(
                target.url, data=delivery.payload.encode(), headers=headers, allow_redirects=False
            ) as resp:
                return _Outcome(resp.status, None, took(), resp.headers.get("Retry-After"))
        except (UnsafeWebhookUrl, RefusedAddress) as e:
            return _Outcome(None, f"refused: {e.en}", took(), None)
        except aiohttp.ClientConnectorError as e:
            cause = e.os_error if isinstance(e.os_error, RefusedAddress) else None
            return _Outcome(None, f"refused: {cause.en}" if cause else f"connection failed: {e}", took(), None)
        except TimeoutError:
            return _Outcome(None, f"timeout after {self.config.timeout_s:g} s", took(), None)
        except aiohttp.ClientError as e:
            return _Outcome(None, f"{type(e).__name__}: {e}"[:500], took(), None)

    async def _record(self, delivery: Delivery, target: _Target, outcome: _Outcome) -> None:
        now = self.clock()
        n = delivery.attempts + 1
        code = outcome.status_code
        values: dict[str, Any] = {
            "attempts": n,
            "last_attempt_at": now,
            "last_status_code": code,
            "last_latency_ms": outcome.latency_ms,
            "last_error": outcome.error,
            "lease_owner": None,
            "lease_until": None,
        }
        disable: str | None = None
        if code is not None and 200 <= code < 300:
            values.update(status="delivered", delivered_at=now, next_attempt_at=None)
        elif code == 410:
            values.update(status="failed", next_attempt_at=None)
            disable = "gone"
        else:
            wait = self.backoff_s(n)
            asked = retry_after_s(outcome.retry_after, now)
            if asked is not None:
                wait = max(wait, min(asked, self.config.max_retry_after_s))
            next_at = now + timedelta(seconds=wait)
            if (next_at - delivery.created_at).total_seconds() > self.config.retry_period_s:
                values.update(status="failed", next_attempt_at=None)
                disable = "failing"
            else:
                values.update(status="pending", next_attempt_at=next_at)
        d = webhook_deliveries.c
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                sa.insert(webhook_attempts).values(
                    delivery_id=delivery.id,
                    attempt=n,
                    at=now,
                    status_code=code,
                    latency_ms=outcome.latency_ms,
                    error=outcome.error,
                    next_attempt_at=values.get("next_attempt_at"),
                )
            )
            kept = await conn.execute(
                sa.update(webhook_deliveries)
                .where(d.id == delivery.id, d.status == "sending", d.lease_owner == self.name)
                .values(**values)
            )
            if kept.rowcount != 1:  # the lease ran out and another worker has it now: its attempt decides
                return
            if disable == "failing":
                reached = await conn.scalar(
                    sa.select(sa.func.count()).where(
                        d.endpoint_id == target.id, d.delivered_at.is_not(None), d.delivered_at >= delivery.created_at
                    )
                )
                if reached:
                    return  # this message failed, but the endpoint has been receiving others: it stays on
            if disable is not None:
                await self._disable(conn, target, disable, code, delivery.created_at, now)

    async def _disable(
        self, conn: Any, target: _Target, why: str, code: int | None, since: datetime, now: datetime
    ) -> None:
        e = webhook_endpoints.c
        if why == "gone":
            reason = "接收方答复 410 Gone，已停用 / the receiver answered 410 Gone"
        else:
            hours = round((now - since).total_seconds() / 3600)
            reason = f"连续 {hours} 小时投递失败，已停用 / every delivery failed for {hours} hours"
        done = await conn.execute(
            sa.update(webhook_endpoints)
            .where(e.id == target.id, e.enabled == sa.true())
            .values(enabled=False, disabled_reason=reason, disabled_at=now, updated_at=now)
        )
        if done.rowcount != 1:
            return
        await conn.execute(
            sa.insert(roster_events).values(
                roster_id=None,
                organisation=target.organisation,
                member_ref=None,
                type="webhook_disabled",
                detail={"webhook_id": target.id, "reason": why, "status_code": code, "since": _iso(since)},
                at=now,
            )
        )
        log.warning("webhook endpoint %s disabled: %s", target.id, why)
