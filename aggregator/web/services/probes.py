"""Readiness and metrics for whoever runs the service: what `/readyz` and `/metrics` report.

checks = await probes.readiness()     # {"store": "ok", "redis": "not configured"}; NotReady (503) naming a failure
text = await probes.metrics_text()    # Prometheus text format of this process
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import sqlalchemy as sa

from aggregator.web.metrics import Metrics
from aggregator.web.problems import NotReady
from aggregator.web.ratelimit import WindowLimiter

if TYPE_CHECKING:
    from aggregator.gateway import Gateway

PROBE_TIMEOUT_S = 2.0


class Probes:
    """The store's and Redis's state, and the process's metrics."""

    def __init__(self, gateway: Gateway, metrics: Metrics, limiter: Callable[[], WindowLimiter]) -> None:
        self._gateway = gateway
        self._metrics = metrics
        self._limiter = limiter  # the inbound rate limiter now in use (its Redis health is a metric)

    async def _check_store(self) -> str:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                async with self._gateway.store.engine.connect() as conn:
                    await conn.execute(sa.text("SELECT 1"))
        except Exception as e:  # noqa: BLE001 - any failure is "not ready", named
            return f"failed: {type(e).__name__}: {e}"[:300]
        return "ok"

    async def _check_redis(self) -> str:
        client = self._gateway.cache.client
        if client is None:
            return "not configured"
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                await client.ping()
        except Exception as e:  # noqa: BLE001
            return f"failed: {type(e).__name__}: {e}"[:300]
        return "ok"

    async def readiness(self) -> dict[str, str]:
        """Each dependency's state; `NotReady` (503) when the store or a configured Redis does not answer."""
        store, redis = await asyncio.gather(self._check_store(), self._check_redis())
        checks = {"store": store, "redis": redis}
        if any(v.startswith("failed") for v in checks.values()):
            raise NotReady(checks)
        return checks

    async def metrics_text(self) -> bytes:
        """This process's metrics, with the gateway's cache, circuits and Redis health read just now."""
        await self._metrics.refresh(self._gateway)
        health = getattr(self._limiter(), "health", None)
        if health is not None:
            self._metrics.note_redis("rate_limits", bool(health.down))
        return self._metrics.render()
