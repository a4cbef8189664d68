"""Attempt limits and lock-outs of the holder's view, held across every instance.

    guard = create_holder_guard(engine, redis_client)          # client None: the database only
    decision = await guard.admit("ip:203.0.113.7", "T110105199003071239")
    if not decision.allowed: ...                               # 429, Retry-After: decision.retry_after_s
    ...                                                        # check number + name + ID number
    if matched: await guard.succeeded("T110105199003071239")   # a holder's own visit is no failed attempt

The holder's view answers only to the certificate number, full name and full ID number together, so it must
not become a way to confirm one of them by trying. Every attempt counts against its client IP (`ip_limit` per
`ip_window_s`); every attempt on a certificate counts against the certificate until it succeeds
(`cert_limit` failures per `cert_window_s`). Going over either locks that IP or certificate out for
`ip_lockout_s` / `cert_lockout_s`: every attempt is then refused before anything is compared, whatever it
sends, so a refusal tells nothing about the details tried.

Where the counts live (as the name-check budget keeps its own, `web/namebudget.py`): Redis when a client is
given (one Lua script decides and counts atomically), the database tables `holder_attempts` and
`holder_lockouts` otherwise and while Redis is down (one write transaction per attempt, serialised per
scope: SQLite's BEGIN IMMEDIATE, PostgreSQL advisory transaction locks). While Redis is down the database
keeps its own counts, so on such a day at most twice the limit get through.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aggregator.records.schema import holder_attempts, holder_lockouts
from aggregator.resilience.health import RedisHealth
from aggregator.web.tables import write_transaction

log = logging.getLogger(__name__)

_LOCK_CLASS = 7347  # PostgreSQL advisory lock namespace (records.store 7345, namebudget 7346)

_LUA = """
for i = 3, 4 do
  local left = redis.call('PTTL', KEYS[i])
  if left > 0 then return {0, left} end
end
local limits = {{tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])},
                {tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])}}
for i = 1, 2 do
  local n = redis.call('INCR', KEYS[i])
  if n == 1 then redis.call('EXPIRE', KEYS[i], limits[i][2]) end
  if n > limits[i][1] then
    redis.call('DECR', KEYS[i])
    if i == 2 then redis.call('DECR', KEYS[1]) end
    redis.call('SET', KEYS[i + 2], '1', 'EX', limits[i][3])
    return {0, limits[i][3] * 1000}
  end
end
return {1, 0}
"""


@dataclass(frozen=True)
class Limits:
    ip_limit: int = 10  # attempts per client IP per window
    ip_window_s: int = 3600
    ip_lockout_s: int = 3600
    cert_limit: int = 5  # failed attempts per certificate per window
    cert_window_s: int = 86400
    cert_lockout_s: int = 86400


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int = 0


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _window(now: datetime, seconds: int) -> tuple[str, datetime]:
    """The fixed window `now` falls in: its start as text, and when it ends."""
    start = int(now.timestamp()) // seconds * seconds
    begins = datetime.fromtimestamp(start, UTC)
    return begins.strftime("%Y-%m-%dT%H:%M:%S"), begins + timedelta(seconds=seconds)


def _pg_key(scope: str) -> int:
    return int.from_bytes(hashlib.sha256(scope.encode()).digest()[:4], "big", signed=True)


class DatabaseAttempts:
    """The counts and lock-outs in the database (every instance on it shares them)."""

    def __init__(self, engine: AsyncEngine, limits: Limits) -> None:
        self._engine = engine
        self._limits = limits
        self._pruned_at: datetime | None = None

    async def admit(self, ip_scope: str, cert_scope: str, now: datetime) -> Decision:
        lim = self._limits
        await self._prune(now)
        async with write_transaction(self._engine) as conn:
            if conn.dialect.name == "postgresql":
                for scope in sorted((ip_scope, cert_scope)):  # one order: two attempts never deadlock
                    await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:c, :k)"), {"c": _LOCK_CLASS, "k": _pg_key(scope)})
            locked = (
                await conn.execute(
                    sa.select(sa.func.max(holder_lockouts.c.until)).where(
                        holder_lockouts.c.scope.in_((ip_scope, cert_scope)), holder_lockouts.c.until > now
                    )
                )
            ).scalar()
            if locked is not None:
                return Decision(False, _seconds_until(locked, now))
            for scope, limit, window_s, lockout_s in (
                (ip_scope, lim.ip_limit, lim.ip_window_s, lim.ip_lockout_s),
                (cert_scope, lim.cert_limit, lim.cert_window_s, lim.cert_lockout_s),
            ):
                window, ends = _window(now, window_s)
                count = await self._count(conn, scope, window)
                if (count or 0) >= limit:
                    await self._lock(conn, scope, now + timedelta(seconds=lockout_s))
                    if scope == cert_scope:  # this attempt is refused: it does not count against the IP either
                        ip_window, _ = _window(now, lim.ip_window_s)
                        await self._add(conn, ip_scope, ip_window, -1, ends)
                    return Decision(False, lockout_s)
                await self._add(conn, scope, window, 1, ends, new=count is None)
        return Decision(True)

    async def succeeded(self, cert_scope: str, now: datetime) -> None:
        window, ends = _window(now, self._limits.cert_window_s)
        async with write_transaction(self._engine) as conn:
            await self._add(conn, cert_scope, window, -1, ends)

    @staticmethod
    async def _count(conn: AsyncConnection, scope: str, window: str) -> int | None:
        value = (
            await conn.execute(
                sa.select(holder_attempts.c.count).where(holder_attempts.c.scope == scope, holder_attempts.c.window == window)
            )
        ).scalar()
        return None if value is None else int(value)

    @staticmethod
    async def _add(conn: AsyncConnection, scope: str, window: str, delta: int, ends: datetime, new: bool = False) -> None:
        if new:
            await conn.execute(
                holder_attempts.insert(), [{"scope": scope, "window": window, "count": delta, "expires_at": ends}]
            )
            return
        await conn.execute(
            holder_attempts.update()
            .where(holder_attempts.c.scope == scope, holder_attempts.c.window == window)
            .values(count=sa.func.max(holder_attempts.c.count + delta, 0) if conn.dialect.name == "sqlite"
                    else sa.func.greatest(holder_attempts.c.count + delta, 0))
        )

    @staticmethod
    async def _lock(conn: AsyncConnection, scope: str, until: datetime) -> None:
        await conn.execute(holder_lockouts.delete().where(holder_lockouts.c.scope == scope))
        await conn.execute(holder_lockouts.insert(), [{"scope": scope, "until": until}])

    async def _prune(self, now: datetime) -> None:
        """At most once an hour per process: forget windows and lock-outs that are over."""
        if self._pruned_at is not None and now - self._pruned_at < timedelta(hours=1):
            return
        self._pruned_at = now
        try:
            async with write_transaction(self._engine) as conn:
                await conn.execute(holder_attempts.delete().where(holder_attempts.c.expires_at < now))
                await conn.execute(holder_lockouts.delete().where(holder_lockouts.c.until < now))
        except Exception as e:  # noqa: BLE001 - the next hour tries again; nothing depends on it
            log.warning("could not prune the holder view's attempts: %s", e)


def _seconds_until(until: datetime, now: datetime) -> int:
    until = until if until.tzinfo else until.replace(tzinfo=UTC)
    return max(1, int((until - now).total_seconds()) + 1)


class HolderGuard:
    """The limits, in Redis when a client is given (the database while Redis is down), else in the database."""

    def __init__(
        self,
        engine: AsyncEngine,
        client: Any | None = None,
        *,
        limits: Limits | None = None,
        prefix: str = "certq",
        clock: Callable[[], datetime] = _utc_now,
        health: RedisHealth | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.database = DatabaseAttempts(engine, self.limits)
        self._client = client
        self._script = client.register_script(_LUA) if client is not None else None
        self._prefix = prefix
        self._clock = clock
        self.health = health or RedisHealth(timeout_s=0.25, recheck_s=1.0, name="Redis (holder view)")

    async def admit(self, ip_scope: str, number: str) -> Decision:
        """Whether an attempt from `ip_scope` on certificate `number` (normalised) may be checked now; it counts."""
        now = self._clock()
        cert_scope = f"cert:{number}"[:120]
        ip_scope = ip_scope[:120]
        if self._script is None:
            return await self.database.admit(ip_scope, cert_scope, now)

        async def shared() -> Decision:
            return await self._redis_admit(ip_scope, cert_scope, now)

        async def local() -> Decision:
            return await self.database.admit(ip_scope, cert_scope, now)

        return await self.health.call(shared, local)

    async def succeeded(self, number: str) -> None:
        """The attempt on `number` matched: it is not a failure of the certificate's count."""
        now = self._clock()
        cert_scope = f"cert:{number}"[:120]
        if self._client is None:
            await self.database.succeeded(cert_scope, now)
            return

        async def shared() -> None:
            window, _ = _window(now, self.limits.cert_window_s)
            key = self._key("n", cert_scope, window)
            if int(await self._client.decr(key)) < 0:
                await self._client.set(key, 0, keepttl=True)

        async def local() -> None:
            await self.database.succeeded(cert_scope, now)

        await self.health.call(shared, local)

    def _key(self, kind: str, scope: str, window: str = "") -> str:
        return f"{self._prefix}:holder:{kind}:{scope}:{window}"

    async def _redis_admit(self, ip_scope: str, cert_scope: str, now: datetime) -> Decision:
        assert self._script is not None
        lim = self.limits
        ip_window, _ = _window(now, lim.ip_window_s)
        cert_window, _ = _window(now, lim.cert_window_s)
        keys = [
            self._key("n", ip_scope, ip_window),
            self._key("n", cert_scope, cert_window),
            self._key("lock", ip_scope),
            self._key("lock", cert_scope),
        ]
        args = [lim.ip_limit, lim.ip_window_s, lim.ip_lockout_s, lim.cert_limit, lim.cert_window_s, lim.cert_lockout_s]
        allowed, left_ms = await self._script(keys=keys, args=args)
        return Decision(bool(int(allowed)), 0 if int(allowed) else max(1, -(-int(left_ms) // 1000)))


def create_holder_guard(engine: AsyncEngine, client: Any | None, *, limits: Limits | None = None) -> HolderGuard:
    """The guard on `engine`'s database, shared through `client` (a `redis.asyncio.Redis`) when not None."""
    return HolderGuard(engine, client, limits=limits)

