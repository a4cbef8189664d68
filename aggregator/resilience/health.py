"""Whether Redis answers: the one place that decides to use shared state or fall back to this process's.

Every Redis-backed registry (circuit breakers, rate limiters) routes its calls through one `RedisHealth`.
A call that raises (connection refused, timeout, a read-only replica ...) is answered from the in-process
fallback instead, and the outage is logged once and counted, not once per request. While Redis is down it
is asked again by one call at a time (the others use the fallback at once), after a pause that doubles
with each failed try from `recheck_s` up to `max_recheck_s` (`Recheck`), so a dead Redis costs no time on
the hot path and a returning one is not met by a storm of reconnections; the shared state is used again as
soon as Redis answers.

    health = RedisHealth()
    value = await health.call(lambda: shared_op(), lambda: local_op())
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aggregator.cancellation import keep_cancellation
from aggregator.redisconn import REDIS_FAILURES

log = logging.getLogger(__name__)

T = TypeVar("T")

class Recheck:
    """When to try a failed backend again: one probe at a time, after a pause that doubles per failed probe.

        recheck = Recheck(first_s=0.5, max_s=8.0)
        if attempt := recheck.may_try():    # up ("call"), or the one probe of an outage ("probe")
            ok = ...                        # one try
            probe = attempt == "probe"
            recheck.succeeded(probe=probe) if ok else recheck.failed(probe=probe)
    """

    def __init__(self, *, first_s: float = 0.5, max_s: float = 8.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.first_s = first_s
        self.max_s = max(max_s, first_s)
        self._clock = clock
        self.down = False
        self.pause_s = first_s
        self._retry_at = 0.0
        self._probing = False

    def may_try(self) -> str | None:
        """"call" when the backend is up; "probe" for the one call that may try it during an outage (pass
        `probe=True` to `failed` / `succeeded` / `abandon` for it); None: use the fallback."""
        if not self.down:
            return "call"
        if self._probing or self._clock() < self._retry_at:
            return None
        self._probing = True
        return "probe"

    def failed(self, *, probe: bool = False) -> bool:
        """A call failed: the backend is down and the next probe waits; a failed probe doubles the pause.
        True when this failure started an outage."""
        started = not self.down
        if started:
            self.pause_s = self.first_s
        elif probe:
            self.pause_s = min(self.pause_s * 2, self.max_s)
        if started or probe:
            self._retry_at = self._clock() + self.pause_s
        self.down = True
        if probe:
            self._probing = False
        return started

    def succeeded(self, *, probe: bool = False) -> bool:
        """A call succeeded. True when this ended an outage."""
        ended = self.down
        self.down = False
        self._probing = False
        self.pause_s = self.first_s
        return ended

    def abandon(self, *, probe: bool = False) -> None:
        """The call ended without telling (cancelled): if it was the probe, let another call probe."""
        if probe:
            self._probing = False


class RedisHealth:
    """Tracks Redis outages for one process and runs calls with a fallback.

    `timeout_s` bounds each Redis call (a blackholed server must not stall a lookup); `recheck_s` is how
    long to skip Redis after a failure before asking it again; `clock` is injectable for tests.
    """

    def __init__(
        self,
        *,
        timeout_s: float = 1.0,
        recheck_s: float = 0.5,
        max_recheck_s: float = 8.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "redis",
    ) -> None:
        self.timeout_s = timeout_s
        self.recheck_s = recheck_s
        self.name = name
        self._recheck = Recheck(first_s=recheck_s, max_s=max_recheck_s, clock=clock)
        self.outages = 0  # how many times Redis went from answering to failing
        self.fallbacks = 0  # calls answered from the in-process state
        self.last_error: str | None = None

    @property
    def down(self) -> bool:
        return self._recheck.down

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
        if attempt := self._recheck.may_try():
            probe = attempt == "probe"
            try:
                async with asyncio.timeout(self.timeout_s):
                    result = await keep_cancellation(shared())
            except REDIS_FAILURES as e:
                self._failed(e, probe)
            except BaseException:
                self._recheck.abandon(probe=probe)
                raise
            else:
                self._answered(probe)
                return result
        self.fallbacks += 1
        return await local()

    def _failed(self, error: BaseException, probe: bool) -> None:
        self.last_error = f"{type(error).__name__}: {error}"
        if self._recheck.failed(probe=probe):
            self.outages += 1
            log.warning(
                "%s unavailable (%s); using in-process state until it answers again (outage #%d)",
                self.name,
                self.last_error,
                self.outages,
            )

    def _answered(self, probe: bool) -> None:
        if self._recheck.succeeded(probe=probe):
            log.warning("%s answers again; shared state resumed after outage #%d", self.name, self.outages)
