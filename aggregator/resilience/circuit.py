"""Circuit breakers: stop asking a source that keeps failing, and probe it back to health one call at a time.

A breaker per source, with the source's `circuit` settings (`failure_threshold`, `base_backoff_s`,
`max_backoff_s`):

- closed: calls go through; `failure_threshold` consecutive failures open it for `base_backoff_s`.
- open: every call is refused at once (the runner answers `circuit_open`, no request is sent).
- half-open: once the open period has passed, exactly ONE call (the probe) is let through; the others are
  still refused. A good probe closes the breaker and resets the backoff; a failed probe re-opens it for
  twice the previous backoff, capped at `max_backoff_s` (exponential, where SearXNG suspends for a flat
  time). A probe that never reports back (its task died) frees the slot after `timeout_s + 5 s`.
- A failure's `suspend_s` hint (the Retry-After of a 429, a ban page) may lengthen an open period.

Usage (the runner does this for every call):

    breakers = BreakerRegistry.memory()                  # or BreakerRegistry.redis(client)
    permit = await breakers.allow(source)                # source: SourceConfig
    if not permit.allowed:
        ...                                              # circuit_open, retry in permit.retry_in_s
    ...                                                  # the call
    await breakers.success(permit)                       # found or not_found
    await breakers.failure(permit, suspend_s=hint)       # timeout, blocked, parse_error ...; True: it opened
    await breakers.release(permit)                       # neither (our own deadline or limiter)
    await breakers.state("mem")                          # BreakerState, for monitoring

Two backends with the same behaviour: `memory` (one process) and `redis` (shared by every gateway instance;
each transition is one Lua script on the hash `<prefix>:cb:<source>`; if Redis fails, the call is answered
from an in-process breaker, see `health.RedisHealth`). Times come from an injectable clock: monotonic for
memory, wall-clock seconds for Redis (instances must share it, so keep their clocks NTP-synchronised).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aggregator.config import SourceConfig
from aggregator.resilience.health import RedisHealth

PROBE_GRACE_S = 5.0  # a probe's slot is held for the source's timeout plus this, then freed


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerState:
    """One source's breaker as monitoring shows it. Times are in the registry's clock."""

    state: CircuitState
    consecutive_failures: int
    open_until: float | None  # when the open period ends (None when closed)
    backoff_s: float  # length of the current or last open period; 0 when closed
    probe_in_flight: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "consecutive_failures": self.consecutive_failures,
            "open_until": self.open_until,
            "backoff_s": self.backoff_s,
            "probe_in_flight": self.probe_in_flight,
        }


@dataclass(frozen=True)
class Permit:
    """The breaker's answer to one call. Pass it back to `success` / `failure` / `release`."""

    source: SourceConfig
    allowed: bool
    probe: bool = False  # this call is the half-open probe
    retry_in_s: float = 0.0  # when refused: time until a probe may go


@dataclass
class _Cell:
    """Stored state of one breaker; the same four fields live in the Redis hash."""

    failures: int = 0
    open_until: float = 0.0  # 0: closed
    backoff_s: float = 0.0
    probe_until: float = 0.0  # a probe holds the half-open slot until then; 0: no probe

    def view(self, now: float) -> BreakerState:
        if self.open_until == 0:
            return BreakerState(CircuitState.CLOSED, self.failures, None, 0.0)
        state = CircuitState.OPEN if now < self.open_until else CircuitState.HALF_OPEN
        return BreakerState(state, self.failures, self.open_until, self.backoff_s, self.probe_until > now)


def _probe_lease_s(source: SourceConfig) -> float:
    return source.timeout_s + PROBE_GRACE_S


class BreakerRegistry(ABC):
    """Circuit breakers for every source, keyed by source id. Build with `memory()` or `redis()`."""

    @staticmethod
    def memory(*, clock: Callable[[], float] = time.monotonic) -> MemoryBreakers:
        """Breakers held in this process."""
        return MemoryBreakers(clock=clock)

    @staticmethod
    def redis(
        client: Any,
        *,
        prefix: str = "certq",
        clock: Callable[[], float] = time.time,
        health: RedisHealth | None = None,
    ) -> RedisBreakers:
        """Breakers shared through Redis (`client`: a `redis.asyncio.Redis`), keys `<prefix>:cb:<source>`."""
        return RedisBreakers(client, prefix=prefix, clock=clock, health=health)

    @abstractmethod
    async def allow(self, source: SourceConfig) -> Permit:
        """May a call to `source` go now? In half-open, only the first asker gets the probe."""

    @abstractmethod
    async def success(self, permit: Permit) -> None:
        """The call got an answer from the source (found or not_found)."""

    @abstractmethod
    async def failure(self, permit: Permit, *, suspend_s: float | None = None) -> bool:
        """The call failed because of the source; `suspend_s` may lengthen an open period. True when this
        failure opened the circuit (from closed, or a failed half-open probe): the health history counts it."""

    @abstractmethod
    async def release(self, permit: Permit) -> None:
        """The call ended without telling anything about the source (our deadline, our rate limit)."""

    @abstractmethod
    async def state(self, source_id: str) -> BreakerState:
        """The breaker of `source_id` (closed with no failures if never used)."""


class MemoryBreakers(BreakerRegistry):
    """In-process breakers. Transitions run without awaiting, so each is atomic within the event loop."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cells: dict[str, _Cell] = {}

    def _cell(self, source_id: str) -> _Cell:
        return self._cells.setdefault(source_id, _Cell())

    async def allow(self, source: SourceConfig) -> Permit:
        now = self._clock()
        cell = self._cell(source.id)
        if cell.open_until == 0:
            return Permit(source, allowed=True)
        if now < cell.open_until:
            return Permit(source, allowed=False, retry_in_s=cell.open_until - now)
        if cell.probe_until > now:
            return Permit(source, allowed=False, retry_in_s=cell.probe_until - now)
        cell.probe_until = now + _probe_lease_s(source)
        return Permit(source, allowed=True, probe=True)

    async def success(self, permit: Permit) -> None:
        cell = self._cell(permit.source.id)
        if cell.open_until == 0:
            cell.failures = 0
        elif permit.probe:
            self._cells[permit.source.id] = _Cell()
        # A call admitted before the breaker opened says nothing about the source now: ignored.

    async def failure(self, permit: Permit, *, suspend_s: float | None = None) -> bool:
        now = self._clock()
        cfg = permit.source.circuit
        hint = max(suspend_s or 0.0, 0.0)
        cell = self._cell(permit.source.id)
        if cell.open_until == 0:
            cell.failures += 1
            if cell.failures >= cfg.failure_threshold:
                cell.backoff_s = cfg.base_backoff_s
                cell.open_until = now + max(cell.backoff_s, hint)
                return True
        elif permit.probe:
            cell.failures += 1
            cap = max(cfg.max_backoff_s, cfg.base_backoff_s)
            cell.backoff_s = min(max(cell.backoff_s, cfg.base_backoff_s) * 2, cap)
            cell.open_until = now + max(cell.backoff_s, hint)
            cell.probe_until = 0.0
            return True
        elif now + hint > cell.open_until:
            cell.open_until = now + hint
        return False

    async def release(self, permit: Permit) -> None:
        if permit.probe:
            self._cell(permit.source.id).probe_until = 0.0

    async def state(self, source_id: str) -> BreakerState:
        return self._cells.get(source_id, _Cell()).view(self._clock())


# --- Redis ---------------------------------------------------------------------------------------
# The scripts mirror MemoryBreakers line for line. Floats travel as strings (Lua numbers returned to
# Redis would be truncated to integers). Every write refreshes the key's TTL so idle breakers expire.

_LOAD = """
local v = redis.call('HMGET', KEYS[1], 'failures', 'open_until', 'backoff_s', 'probe_until')
local failures, open_until = tonumber(v[1]) or 0, tonumber(v[2]) or 0
local backoff, probe_until = tonumber(v[3]) or 0, tonumber(v[4]) or 0
"""

_SAVE = """
redis.call('HSET', KEYS[1], 'failures', failures, 'open_until', tostring(open_until),
           'backoff_s', tostring(backoff), 'probe_until', tostring(probe_until))
redis.call('EXPIRE', KEYS[1], ttl)
"""

_ALLOW = (
    """
local now, lease, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
"""
    + _LOAD
    + """
if open_until == 0 then return {1, 0, '0'} end
if now < open_until then return {0, 0, tostring(open_until - now)} end
if probe_until > now then return {0, 0, tostring(probe_until - now)} end
probe_until = now + lease
"""
    + _SAVE
    + """
return {1, 1, '0'}
"""
)

_SUCCESS = (
    """
local probe = tonumber(ARGV[1])
"""
    + _LOAD
    + """
if open_until == 0 then
  if failures > 0 then redis.call('HSET', KEYS[1], 'failures', 0) end
elseif probe == 1 then
  redis.call('DEL', KEYS[1])
end
return 1
"""
)

_FAILURE = (
    """
local now, probe, threshold = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local base, cap, hint, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
if hint < 0 then hint = 0 end
if cap < base then cap = base end
"""
    + _LOAD
    + """
local opened = 0
if open_until == 0 then
  failures = failures + 1
  if failures >= threshold then
    backoff = base
    open_until = now + math.max(backoff, hint)
    opened = 1
  end
elseif probe == 1 then
  failures = failures + 1
  backoff = math.min(math.max(backoff, base) * 2, cap)
  open_until = now + math.max(backoff, hint)
  probe_until = 0
  opened = 1
elseif now + hint > open_until then
  open_until = now + hint
end
"""
    + _SAVE
    + """
return opened
"""
)

_RELEASE = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'probe_until', '0') end
return 1
"""


class RedisBreakers(BreakerRegistry):
    """Breakers shared by every gateway instance through Redis, with an in-process fallback."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "certq",
        clock: Callable[[], float] = time.time,
        health: RedisHealth | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self.health = health or RedisHealth()
        self.fallback = MemoryBreakers(clock=clock)
        self._allow = client.register_script(_ALLOW)
        self._success = client.register_script(_SUCCESS)
        self._failure = client.register_script(_FAILURE)
        self._release = client.register_script(_RELEASE)

    def key(self, source_id: str) -> str:
        return f"{self._prefix}:cb:{source_id}"

    @staticmethod
    def _ttl(source: SourceConfig) -> int:
        # Long enough to outlive any open period and the failures that lead to one.
        return int(max(source.circuit.max_backoff_s, source.circuit.base_backoff_s) * 4 + 3600)

    async def allow(self, source: SourceConfig) -> Permit:
        async def shared() -> Permit:
            args = [repr(self._clock()), repr(_probe_lease_s(source)), self._ttl(source)]
            allowed, probe, retry_in = await self._allow(keys=[self.key(source.id)], args=args)
            return Permit(source, allowed=bool(int(allowed)), probe=bool(int(probe)), retry_in_s=float(retry_in))

        return await self.health.call(shared, lambda: self.fallback.allow(source))

    async def success(self, permit: Permit) -> None:
        async def shared() -> None:
            await self._success(keys=[self.key(permit.source.id)], args=[int(permit.probe)])

        await self.health.call(shared, lambda: self.fallback.success(permit))

    async def failure(self, permit: Permit, *, suspend_s: float | None = None) -> bool:
        cfg = permit.source.circuit

        async def shared() -> bool:
            args = [
                repr(self._clock()),
                int(permit.probe),
                cfg.failure_threshold,
                repr(cfg.base_backoff_s),
                repr(cfg.max_backoff_s),
                repr(float(suspend_s or 0.0)),
                self._ttl(permit.source),
            ]
            return bool(int(await self._failure(keys=[self.key(permit.source.id)], args=args)))

        return await self.health.call(shared, lambda: self.fallback.failure(permit, suspend_s=suspend_s))

    async def release(self, permit: Permit) -> None:
        if not permit.probe:
            return

        async def shared() -> None:
            await self._release(keys=[self.key(permit.source.id)], args=[])

        await self.health.call(shared, lambda: self.fallback.release(permit))

    async def state(self, source_id: str) -> BreakerState:
        async def shared() -> BreakerState:
            raw = await self._client.hmget(self.key(source_id), "failures", "open_until", "backoff_s", "probe_until")
            failures, open_until, backoff, probe_until = (float(v) if v is not None else 0.0 for v in raw)
            return _Cell(int(failures), open_until, backoff, probe_until).view(self._clock())

        return await self.health.call(shared, lambda: self.fallback.state(source_id))
