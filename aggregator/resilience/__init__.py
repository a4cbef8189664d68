"""Resilience state per source: circuit breakers, outbound rate limits and call statistics.

One object holds what the runner needs, in memory (one process, the default) or in Redis (shared by every
gateway instance, with an in-process fallback while Redis is down):

    state = ResilienceState.from_url(os.environ.get("CERTQ_REDIS_URL"))   # None or "": in-process
    state = ResilienceState.redis(client)                    # a redis.asyncio.Redis you already have
    state = ResilienceState.memory()                         # in-process (what from_url(None) gives)
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

from aggregator.redisconn import client_from_url
from aggregator.resilience.circuit import (
    BreakerRegistry,
    BreakerState,
    CircuitState,
    MemoryBreakers,
    Permit,
    RedisBreakers,
)
from aggregator.resilience.health import RedisHealth
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
]


@dataclass(frozen=True)
class ResilienceState:
    """Breakers and limiters built together; with Redis they share one `RedisHealth` (one outage count)."""

    breakers: BreakerRegistry
    limiters: LimiterRegistry
    health: RedisHealth | None = None
    owned_client: Any | None = None  # a client made by `from_url`, closed by `aclose`

    @classmethod
    def memory(cls, *, clock: Callable[[], float] | None = None) -> ResilienceState:
        """In-process state (the embedded default). `clock` defaults to `time.monotonic`."""
        mono = clock or time.monotonic
        return cls(BreakerRegistry.memory(clock=mono), LimiterRegistry.memory(clock=mono))

    @classmethod
    def redis(
        cls,
        client: Any,
        *,
        prefix: str = "certq",
        clock: Callable[[], float] | None = None,
        health: RedisHealth | None = None,
    ) -> ResilienceState:
        """State shared through `client` (a `redis.asyncio.Redis` owned by the caller). `clock` defaults to
        `time.time`: instances share it."""
        wall = clock or time.time
        health = health or RedisHealth()
        return cls(
            BreakerRegistry.redis(client, prefix=prefix, clock=wall, health=health),
            LimiterRegistry.redis(client, prefix=prefix, clock=wall, health=health),
            health,
        )

    @classmethod
    def from_url(cls, url: str | None, *, prefix: str = "certq") -> ResilienceState:
        """Shared state in the Redis at `url` (a client from `redisconn.client_from_url`, closed by `aclose`),
        or in-process state when the URL is None or empty."""
        if not url:
            return cls.memory()
        client = client_from_url(url)
        state = cls.redis(client, prefix=prefix)
        return cls(state.breakers, state.limiters, state.health, owned_client=client)

    async def aclose(self) -> None:
        if self.owned_client is not None:
            await self.owned_client.aclose()
