"""Whether Redis answers: the one place that decides to use shared state or fall back to this process's.

Every Redis-backed registry (circuit breakers, rate limiters) routes its calls through one `RedisHealth`.
A call that raises (connection refused, timeout, a read-only replica ...) is answered from the in-process
fallback instead, and the outage is logged once and counted, not once per request. While Redis is down it
is asked again at most every `recheck_s`, so a dead Redis costs no time on the hot path, and the shared
state is used again as soon as Redis answers.

    health = RedisHealth()
    value = await health.call(lambda: shared_op(), lambda: local_op())
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from aggregator.cancellation import keep_cancellation

log = logging.getLogger(__name__)

T = TypeVar("T")

# What a Redis call may raise when the server is gone or unwell. Anything else is a bug and propagates.
REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


def redis_client(url: str) -> Redis:
    """A `redis.asyncio.Redis` suited to shared resilience state: short socket timeouts and one immediate
    retry (for a pooled connection left stale by a Redis restart), so an outage is noticed in well under a
    second instead of after redis-py's default backoff."""
    return Redis.from_url(
        url,
        socket_connect_timeout=0.5,
        socket_timeout=0.5,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
    )


class RedisHealth:
    """Tracks Redis outages for one process and runs calls with a fallback.

    `timeout_s` bounds each Redis call (a blackholed server must not stall a lookup); `recheck_s` is how
    long to skip Redis after a failure before asking it again; `clock` is injectable for tests.
    """

    def __init__(
        self,
        *,
        timeout_s: float = 1.0,
        recheck_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "redis",
    ) -> None:
        self.timeout_s = timeout_s
        self.recheck_s = recheck_s
        self.name = name
        self._clock = clock
        self.down = False
        self.outages = 0  # how many times Redis went from answering to failing
        self.fallbacks = 0  # calls answered from the in-process state
        self.last_error: str | None = None
        self._retry_at = 0.0

    def snapshot(self) -> dict[str, object]:
        """For monitoring: up/down, outage count, calls served by the fallback, the last error."""
        return {
            "backend": self.name,
            "down": self.down,
            "outages": self.outages,
            "fallbacks": self.fallbacks,
            "last_error": self.last_error,
        }

    async def call(self, shared: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]) -> T:
        """Run `shared()` against Redis; if Redis fails (or is known down), return `local()` instead."""
        if not self.down or self._clock() >= self._retry_at:
            try:
                async with asyncio.timeout(self.timeout_s):
                    result = await keep_cancellation(shared())
            except REDIS_FAILURES as e:
                self._failed(e)
            else:
                self._answered()
                return result
        self.fallbacks += 1
        return await local()

    def _failed(self, error: BaseException) -> None:
        self._retry_at = self._clock() + self.recheck_s
        self.last_error = f"{type(error).__name__}: {error}"
        if not self.down:
            self.down = True
            self.outages += 1
            log.warning(
                "%s unavailable (%s); using in-process state until it answers again (outage #%d)",
                self.name,
                self.last_error,
                self.outages,
            )

    def _answered(self) -> None:
        if self.down:
            self.down = False
            log.warning("%s answers again; shared state resumed after outage #%d", self.name, self.outages)
