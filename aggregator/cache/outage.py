"""Watches the cache backend's health so that a Redis outage costs one log line, not one per request.

The first failure starts an outage: one warning, the outage counted, and the backend skipped for a pause
so that a dead Redis is not hammered (and no lookup waits on it). After the pause one operation probes it
(the others go on without it); each failed probe doubles the pause, up to `max_backoff_s`, so a Redis that
keeps failing is not met by a storm of reconnections. The first success ends the outage with one info line
(and `on_recovery`, with which the cache drops what it kept in process meanwhile).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aggregator.cache.backends import BackendUnavailable
from aggregator.resilience.health import Recheck

T = TypeVar("T")

log = logging.getLogger("aggregator.cache")


class OutageGuard:
    """Runs backend operations, turning failures into one warning per outage and a growing back-off."""

    def __init__(
        self,
        *,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        name: str = "cache backend",
        on_recovery: Callable[[], None] | None = None,
    ) -> None:
        self.backoff_s = backoff_s
        self.name = name
        self.outages = 0
        self.errors = 0
        self.on_recovery = on_recovery
        self._recheck = Recheck(first_s=backoff_s, max_s=max_backoff_s)
        self._down_since: float | None = None

    @property
    def down(self) -> bool:
        return self._recheck.down

    async def run(self, op: Callable[[], Awaitable[T]]) -> T:
        """`op()`, or `BackendUnavailable` at once while backing off after a failure."""
        attempt = self._recheck.may_try()
        if attempt is None:
            raise BackendUnavailable(f"{self.name} skipped: backing off after a failure")
        probe = attempt == "probe"
        try:
            result = await op()
        except BackendUnavailable as e:
            self._failed(e, probe)
            raise
        except BaseException:
            self._recheck.abandon(probe=probe)
            raise
        if self._recheck.succeeded(probe=probe):
            log.info(
                "%s answers again after %.1f s; the cache is back in use",
                self.name,
                time.monotonic() - (self._down_since or time.monotonic()),
            )
            self._down_since = None
            if self.on_recovery is not None:
                self.on_recovery()
        return result

    def _failed(self, error: BackendUnavailable, probe: bool) -> None:
        self.errors += 1
        if error.busy:
            self._recheck.abandon(probe=probe)
            return  # the client's pool was full: Redis is not down, so no outage and no back-off
        if self._recheck.failed(probe=probe):
            self._down_since = time.monotonic()
            self.outages += 1
            log.warning("%s unavailable (%s); lookups go on without the cache until it answers", self.name, error)
