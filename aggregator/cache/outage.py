"""Watches the cache backend's health so that a Redis outage costs one log line, not one per request.

The first failure starts an outage: one warning, the outage counted, and the backend skipped for a short
back-off so that a dead Redis is not hammered (and no lookup waits on it). After the back-off the next
operation tries again; the first success ends the outage with one info line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aggregator.cache.backends import BackendUnavailable

T = TypeVar("T")

log = logging.getLogger("aggregator.cache")


class OutageGuard:
    """Runs backend operations, turning failures into one warning per outage and a back-off."""

    def __init__(self, *, backoff_s: float = 1.0, name: str = "cache backend") -> None:
        self.backoff_s = backoff_s
        self.name = name
        self.outages = 0
        self.errors = 0
        self._down_since: float | None = None
        self._retry_at = 0.0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    async def run(self, op: Callable[[], Awaitable[T]]) -> T:
        """`op()`, or `BackendUnavailable` at once while backing off after a failure."""
        if self._down_since is not None and time.monotonic() < self._retry_at:
            raise BackendUnavailable(f"{self.name} skipped: backing off after a failure")
        try:
            result = await op()
        except BackendUnavailable as e:
            self._failed(e)
            raise
        if self._down_since is not None:
            log.info(
                "%s answers again after %.1f s; the cache is back in use",
                self.name,
                time.monotonic() - self._down_since,
            )
            self._down_since = None
        return result

    def _failed(self, error: BackendUnavailable) -> None:
        now = time.monotonic()
        self.errors += 1
        if error.busy:
            return  # the client's pool was full: Redis is not down, so no outage and no back-off
        self._retry_at = now + self.backoff_s
        if self._down_since is None:
            self._down_since = now
            self.outages += 1
            log.warning("%s unavailable (%s); lookups go on without the cache until it answers", self.name, error)
