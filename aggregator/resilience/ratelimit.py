"""Outbound rate limits: how fast certq may ask each source, with a burst allowance.

GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp): a source with
`rate_limit.per_second = r` and `rate_limit.burst = b` takes up to `b` requests at once and then one every
`1/r` seconds. Callers reserve a slot and learn how long to wait for it; a slot further away than the
caller can wait is not taken, so a refused caller costs the others nothing.

    limiters = LimiterRegistry.memory()                  # or LimiterRegistry.redis(client)
    wait = await limiters.reserve(source, max_wait_s=time_left)
    if wait is None:
        ...                                              # no slot in time: answer rate_limited now
    else:
        await asyncio.sleep(wait)                        # then send the request

Two backends with the same behaviour: `memory` (one process) and `redis` (one Lua script on the key
`<prefix>:rl:<source>`, so the limit holds across every gateway instance; if Redis fails the call is paced
by an in-process limiter, see `health.RedisHealth`). Injectable clock: monotonic for memory, wall-clock
seconds for Redis.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from aggregator.config import SourceConfig
from aggregator.resilience.health import RedisHealth


def _gcra(tat: float, now: float, interval: float, burst: int, max_wait_s: float) -> tuple[float | None, float]:
    """One GCRA step: (wait or None if refused, the new theoretical arrival time)."""
    new_tat = max(tat, now) + interval
    wait = max(new_tat - interval * burst - now, 0.0)
    if wait > max_wait_s:
        return None, tat
    return wait, new_tat


class LimiterRegistry(ABC):
    """Rate limiters for every source, keyed by source id. Build with `memory()` or `redis()`."""

    @staticmethod
    def memory(*, clock: Callable[[], float] = time.monotonic) -> MemoryLimiters:
        """Limiters held in this process."""
        return MemoryLimiters(clock=clock)

    @staticmethod
    def redis(
        client: Any,
        *,
        prefix: str = "certq",
        clock: Callable[[], float] = time.time,
        health: RedisHealth | None = None,
    ) -> RedisLimiters:
        """Limiters shared through Redis (`client`: a `redis.asyncio.Redis`), keys `<prefix>:rl:<source>`."""
        return RedisLimiters(client, prefix=prefix, clock=clock, health=health)

    @abstractmethod
    async def reserve(self, source: SourceConfig, *, max_wait_s: float) -> float | None:
        """Take the next request slot of `source`: seconds to wait before sending (0: now), or None (and
        nothing taken) when that slot is more than `max_wait_s` away."""


class MemoryLimiters(LimiterRegistry):
    """In-process limiters (one timestamp per source)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}

    async def reserve(self, source: SourceConfig, *, max_wait_s: float) -> float | None:
        now = self._clock()
        rl = source.rate_limit
        wait, tat = _gcra(self._tat.get(source.id, now), now, 1.0 / rl.per_second, rl.burst, max_wait_s)
        self._tat[source.id] = tat
        return wait


_RESERVE = """
local now, interval, burst, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
local new_tat = math.max(tat, now) + interval
local wait = math.max(new_tat - interval * burst - now, 0)
if wait > max_wait then return {0, tostring(wait)} end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return {1, tostring(wait)}
"""


class RedisLimiters(LimiterRegistry):
    """Limiters shared by every gateway instance through Redis, with an in-process fallback."""

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
        self.fallback = MemoryLimiters(clock=clock)
        self._reserve = client.register_script(_RESERVE)

    def key(self, source_id: str) -> str:
        return f"{self._prefix}:rl:{source_id}"

    async def reserve(self, source: SourceConfig, *, max_wait_s: float) -> float | None:
        rl = source.rate_limit
        max_wait = max_wait_s if math.isfinite(max_wait_s) else 1e12

        async def shared() -> float | None:
            args = [repr(self._clock()), repr(1.0 / rl.per_second), rl.burst, repr(float(max_wait))]
            ok, wait = await self._reserve(keys=[self.key(source.id)], args=args)
            return float(wait) if int(ok) else None

        return await self.health.call(shared, lambda: self.fallback.reserve(source, max_wait_s=max_wait_s))
