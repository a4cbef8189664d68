"""An organisation's webhook endpoints and their delivery log, in the tables of migration 0008.

    store = WebhookStore(engine)                            # clock= a function returning an aware datetime
    endpoint, secret = await store.create("某建设集团", created_by=key_id, url=url, event_types=["status_changed"])
    await store.list("某建设集团"); await store.get("某建设集团", endpoint_id)   # another organisation's: None
    endpoint = await store.update("某建设集团", endpoint_id, enabled=False)
    endpoint, secret = await store.rotate("某建设集团", endpoint_id, grace_s=86400)
    page = await store.deliveries("某建设集团", endpoint_id, limit=50, before=None)   # with their attempts
    delivery = await store.replay("某建设集团", delivery_id)     # the same message (webhook-id), sent again

The secret ("whsec_" + base64 of 32 random bytes, the Standard Webhooks form) is returned by `create` and
`rotate` only; `Endpoint` never carries it. It is stored as given, since signing needs it (anyone who can read
the database can sign as certq: keep the database as private as the signing keys). URLs are checked by the
caller (`webhook_urls.UrlPolicy`) before they reach the store. The dispatcher (`webhooks.py`) works on the
same tables.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.records.database import write_transaction
from aggregator.records.reads import as_utc
from aggregator.records.schema import (
    EVENT_TYPES,
    roster_events,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
)

Clock = Callable[[], datetime]
SECRET_PREFIX = "whsec_"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def new_msg_id() -> str:
    return "msg_" + secrets.token_hex(16)


@dataclass(frozen=True)
class Endpoint:
    id: str
    organisation: str
    url: str
    description: str | None
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    cursor: int
    created_by: str
    created_at: datetime
    updated_at: datetime
    rotating_until: datetime | None  # the previous secret still signs until then

    @classmethod
    def of(cls, row: Any) -> Endpoint:
        m = row._mapping
        return cls(
            id=m["id"],
            organisation=m["organisation"],
            url=m["url"],
            description=m["description"],
            event_types=list(m["event_types"] or []),
            enabled=bool(m["enabled"]),
            disabled_reason=m["disabled_reason"],
            disabled_at=as_utc(m["disabled_at"]) if m["disabled_at"] else None,
            cursor=int(m["cursor"]),
            created_by=m["created_by"],
            created_at=as_utc(m["created_at"]),
            updated_at=as_utc(m["updated_at"]),
            rotating_until=as_utc(m["previous_until"]) if m["previous_until"] else None,
        )

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


@dataclass(frozen=True)
class Attempt:
    attempt: int
    at: datetime
    status_code: int | None
    latency_ms: int | None
    error: str | None
    next_attempt_at: datetime | None

    @classmethod
    def of(cls, row: Any) -> Attempt:
        m = row._mapping
        return cls(
            attempt=m["attempt"],
            at=as_utc(m["at"]),
            status_code=m["status_code"],
            latency_ms=m["latency_ms"],
            error=m["error"],
            next_attempt_at=as_utc(m["next_attempt_at"]) if m["next_attempt_at"] else None,
        )


@dataclass(frozen=True)
class Delivery:
    id: int
    msg_id: str
    endpoint_id: str
    event_id: int | None
    event_type: str
    payload: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_latency_ms: int | None
    last_error: str | None
    delivered_at: datetime | None
    replay_of: int | None
    lease_owner: str | None = None
    log: list[Attempt] = field(default_factory=list)

    @classmethod
    def of(cls, row: Any, log: Sequence[Attempt] = ()) -> Delivery:
        m = row._mapping

        def at(name: str) -> datetime | None:
            return as_utc(m[name]) if m[name] else None

        return cls(
            id=int(m["id"]),
            msg_id=m["msg_id"],
            endpoint_id=m["endpoint_id"],
            event_id=m["event_id"],
            event_type=m["event_type"],
            payload=m["payload"],
            status=m["status"],
            attempts=int(m["attempts"]),
            created_at=as_utc(m["created_at"]),
            next_attempt_at=at("next_attempt_at"),
            last_attempt_at=at("last_attempt_at"),
            last_status_code=m["last_status_code"],
            last_latency_ms=m["last_latency_ms"],
            last_error=m["last_error"],
            delivered_at=at("delivered_at"),
            replay_of=m["replay_of"],
            lease_owner=m["lease_owner"],
            log=list(log),
        )


class TooManyEndpoints(Exception):
    """The organisation already has as many endpoints as allowed."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} webhook endpoints")
        self.limit = limit


def check_event_types(types: Sequence[str]) -> list[str]:
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise ValueError(f"unknown event types {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}")
    return sorted(set(types), key=EVENT_TYPES.index)


class WebhookStore:
    def __init__(self, engine: AsyncEngine, *, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.clock = clock

    # --- endpoints ------------------------------------------------------------------------------------

    async def create(
        self,
        organisation: str,
        *,
        created_by: str,
        url: str,
        event_types: Sequence[str] = (),
        description: str | None = None,
        max_endpoints: int = 20,
    ) -> tuple[Endpoint, str]:
        """A new, enabled endpoint that gets the organisation's events from now on; (it, its secret)."""
        types = check_event_types(event_types)
        now = self.clock()
        secret = new_secret()
        endpoint_id = secrets.token_hex(12)
        e = webhook_endpoints.c
        async with write_transaction(self.engine) as conn:
            have = await conn.scalar(sa.select(sa.func.count()).where(e.organisation == organisation))
            if int(have or 0) >= max_endpoints:
                raise TooManyEndpoints(max_endpoints)
            cursor = await conn.scalar(
                sa.select(sa.func.coalesce(sa.func.max(roster_events.c.id), 0)).where(
                    roster_events.c.organisation == organisation
                )
            )
            await conn.execute(
                sa.insert(webhook_endpoints).values(
                    id=endpoint_id,
                    organisation=organisation,
                    url=url,
                    description=description,
                    event_types=types,
                    secret=secret,
                    enabled=True,
                    cursor=int(cursor or 0),
                    created_by=created_by,
                    created_at=now,
                    updated_at=now,
                )
            )
        endpoint = await self.get(organisation, endpoint_id)
        assert endpoint is not None
        return endpoint, secret

    async def list(self, organisation: str) -> list[Endpoint]:
        e = webhook_endpoints.c
        stmt = sa.select(webhook_endpoints).where(e.organisation == organisation).order_by(e.created_at, e.id)
        async with self.engine.connect() as conn:
            return [Endpoint.of(r) for r in (await conn.execute(stmt)).all()]

    async def get(self, organisation: str, endpoint_id: str) -> Endpoint | None:
        e = webhook_endpoints.c
        stmt = sa.select(webhook_endpoints).where(e.id == endpoint_id, e.organisation == organisation)
        async with self.engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return Endpoint.of(row) if row else None

    async def update(
        self,
        organisation: str,
        endpoint_id: str,
        *,
        url: str | None = None,
        event_types: Sequence[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> Endpoint | None:
        """Change what is given; disabling by the owner says so, enabling clears why it was disabled (events
        that arrived meanwhile are delivered: the cursor stayed where it was)."""
        values: dict[str, Any] = {"updated_at": self.clock()}
        if url is not None:
            values["url"] = url
        if event_types is not None:
            values["event_types"] = check_event_types(event_types)
        if description is not None:
            values["description"] = description or None
        if enabled is True:
            values.update(enabled=True, disabled_reason=None, disabled_at=None)
        e = webhook_endpoints.c
        async with write_transaction(self.engine) as conn:
            where = sa.and_(e.id == endpoint_id, e.organisation == organisation)
            found = await conn.execute(sa.update(webhook_endpoints).where(where).values(**values))
            if found.rowcount == 0:
                return None
            if enabled is False:
                await conn.execute(
                    sa.update(webhook_endpoints)
                    .where(where, e.enabled == sa.true())
                    .values(enabled=False, disabled_reason="停用（所有者操作） / disabled by its owner", disabled_at=values["updated_at"])
                )
        return await self.get(organisation, endpoint_id)

    async def delete(self, organisation: str, endpoint_id: str) -> bool:
        e = webhook_endpoints.c
        async with write_transaction(self.engine) as conn:
            ids = sa.select(webhook_deliveries.c.id).where(webhook_deliveries.c.endpoint_id == endpoint_id)
            owned = await conn.scalar(sa.select(e.id).where(e.id == endpoint_id, e.organisation == organisation))
            if owned is None:
                return False
            await conn.execute(sa.delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(ids)))
            await conn.execute(sa.delete(webhook_deliveries).where(webhook_deliveries.c.endpoint_id == endpoint_id))
            await conn.execute(sa.delete(webhook_endpoints).where(e.id == endpoint_id))
        return True

    async def rotate(self, organisation: str, endpoint_id: str, *, grace_s: float) -> tuple[Endpoint, str] | None:
        """A new secret; the old one keeps signing alongside it for `grace_s` (receivers switch over)."""
        e = webhook_endpoints.c
        now = self.clock()
        secret = new_secret()
        async with write_transaction(self.engine) as conn:
            old = await conn.scalar(sa.select(e.secret).where(e.id == endpoint_id, e.organisation == organisation))
            if old is None:
                return None
            await conn.execute(
                sa.update(webhook_endpoints)
                .where(e.id == endpoint_id)
                .values(
                    secret=secret,
                    previous_secret=old if grace_s > 0 else None,
                    previous_until=now + timedelta(seconds=grace_s) if grace_s > 0 else None,
                    updated_at=now,
                )
            )
        endpoint = await self.get(organisation, endpoint_id)
        assert endpoint is not None
        return endpoint, secret

    # --- the delivery log -----------------------------------------------------------------------------

    async def deliveries(
        self, organisation: str, endpoint_id: str, *, limit: int = 50, before: int | None = None
    ) -> list[Delivery] | None:
        """The endpoint's deliveries, newest first, each with its attempts (None: no such endpoint)."""
        if await self.get(organisation, endpoint_id) is None:
            return None
        d = webhook_deliveries.c
        stmt = sa.select(webhook_deliveries).where(d.endpoint_id == endpoint_id)
        if before is not None:
            stmt = stmt.where(d.id < before)
        stmt = stmt.order_by(d.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
            logs = await _attempts(conn, [int(r.id) for r in rows])
        return [Delivery.of(r, logs.get(int(r.id), ())) for r in rows]

    async def delivery(self, organisation: str, delivery_id: int) -> Delivery | None:
        d, e = webhook_deliveries.c, webhook_endpoints.c
        stmt = (
            sa.select(webhook_deliveries)
            .join(webhook_endpoints, e.id == d.endpoint_id)
            .where(d.id == delivery_id, e.organisation == organisation)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
            if row is None:
                return None
            logs = await _attempts(conn, [delivery_id])
        return Delivery.of(row, logs.get(delivery_id, ()))

    async def replay(self, organisation: str, delivery_id: int) -> Delivery | None:
        """The same message (same webhook-id and body) queued again to its endpoint, as a new delivery."""
        original = await self.delivery(organisation, delivery_id)
        if original is None:
            return None
        now = self.clock()
        async with write_transaction(self.engine) as conn:
            new_id = (
                await conn.execute(
                    sa.insert(webhook_deliveries)
                    .values(
                        msg_id=original.msg_id,
                        endpoint_id=original.endpoint_id,
                        event_id=original.event_id,
                        event_type=original.event_type,
                        payload=original.payload,
                        status="pending",
                        attempts=0,
                        created_at=now,
                        next_attempt_at=now,
                        replay_of=original.id,
                    )
                    .returning(webhook_deliveries.c.id)
                )
            ).scalar_one()
        return await self.delivery(organisation, int(new_id))


async def _attempts(conn: Any, ids: list[int]) -> dict[int, list[Attempt]]:
    if not ids:
        return {}
    a = webhook_attempts.c
    rows = (await conn.execute(sa.select(webhook_attempts).where(a.delivery_id.in_(ids)).order_by(a.id))).all()
    out: dict[int, list[Attempt]] = {}
    for r in rows:
        out.setdefault(int(r.delivery_id), []).append(Attempt.of(r))
    return out
