"""Resilience state per source: circuit breakers, outbound rate limits and call statistics.

One object holds what the runner needs, in memory (one process, the default) or in Redis (shared by every
gateway instance, with an in-process fallback while Redis is down):

    state = ResilienceState.from_url(os.environ.get("CERTQ_REDIS_URL"))   # None or "": in-process
    state = ResilienceState.from_redis(client)               # a redis.asyncio.Redis you already have
    ResilienceState.memory() / ResilienceState.redis(client) # the same, spelled for each backend
    runner = Runner(breakers=state.breakers, limiters=state.limiters)
    await state.breakers.state("mem")                        # BreakerState(state=..., ...)
    state.health.snapshot() if state.health else None        # Redis outages, fallbacks
    await state.aclose()                                     # closes the client from_url made

The pieces can also be built one by one: `BreakerRegistry.memory()` / `BreakerRegistry.redis(client)` and
`LimiterRegistry.memory()` / `LimiterRegistry.redis(client)`. Per-source parameters are read from each
`SourceConfig` (`.circuit`, `.rate_limit`) at call time, so the registries need no list of sources.
Redis keys: `<prefix>:cb:<source>` (a hash) and `<prefix>:rl:<source>` (a timestamp), prefix `certq`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aggregator.resilience.circuit import (
    BreakerRegistry,
    BreakerState,
    CircuitState,
    MemoryBreakers,
    Permit,
    RedisBreakers,
)
from aggregator.resilience.health import RedisHealth, redis_client
from aggregator.resilience.ratelimit import LimiterRegistry, MemoryLimiters, RedisLimiters
from aggregator.resilience.stats import SourceStats

__all__ = [
    "BreakerRegistry",
    "BreakerState",
    "CircuitState",
    "LimiterRegistry",
    "MemoryBreakers",
    "MemoryLimiters",
    "Permit",
    "RedisBreakers",
    "RedisHealth",
    "RedisLimiters",
    "ResilienceState",
    "SourceStats",
    "redis_client",
]


@dataclass(frozen=True)
class ResilienceState:
    """Breakers and limiters built together; with Redis they share one `RedisHealth` (one outage count)."""

    breakers: BreakerRegistry
    limiters: LimiterRegistry
    health: RedisHealth | None = None
    owned_client: Any | None = None  # a client made by `from_url`, closed by `aclose`

    @classmethod
    def from_url(cls, url: str | None, *, prefix: str = "certq") -> ResilienceState:
        """Shared state in the Redis at `url` (a client from `redis_client`), or in-process state when the
        URL is None or empty (the embedded default)."""
        if not url:
            return cls.from_redis(None)
        client = redis_client(url)
        state = cls.from_redis(client, prefix=prefix)
        return cls(state.breakers, state.limiters, state.health, owned_client=client)

    async def aclose(self) -> None:
        if self.owned_client is not None:
            await self.owned_client.aclose()

    @classmethod
    def memory(cls, *, clock: Callable[[], float] | None = None) -> ResilienceState:
        """In-process state (the embedded default): `from_redis(None)`."""
        return cls.from_redis(None, clock=clock)

    @classmethod
    def redis(
        cls,
        client: Any,
        *,
        prefix: str = "certq",
        clock: Callable[[], float] | None = None,
        health: RedisHealth | None = None,
    ) -> ResilienceState:
        """State shared through `client` (a `redis.asyncio.Redis` owned by the caller)."""
        return cls.from_redis(client, prefix=prefix, clock=clock, health=health)

    @classmethod
    def from_redis(
        cls,
        client: Any | None,
        *,
        prefix: str = "certq",
        clock: Callable[[], float] | None = None,
        health: RedisHealth | None = None,
    ) -> ResilienceState:
        """Shared state through `client` (a `redis.asyncio.Redis`), or in-process state when it is None.

        `clock` defaults to `time.monotonic` in process and `time.time` with Redis (instances share it).
        """
        if client is None:
            mono = clock or time.monotonic
            return cls(BreakerRegistry.memory(clock=mono), LimiterRegistry.memory(clock=mono))
        wall = clock or time.time
        health = health or RedisHealth()
        return cls(
            BreakerRegistry.redis(client, prefix=prefix, clock=wall, health=health),
            LimiterRegistry.redis(client, prefix=prefix, clock=wall, health=health),
            health,
        )
