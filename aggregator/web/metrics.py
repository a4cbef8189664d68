"""Prometheus metrics of one app instance (its own CollectorRegistry, so tests can build many apps).

    metrics = Metrics()
    metrics.observe_request("/api/v1/certificates/{number}", "GET", 200, 0.012)
    metrics.observe_answer(answer)            # per-source calls by outcome, latency, the verdict
    await metrics.refresh(gateway)            # cache counters and circuit states, read at scrape time
    body = metrics.render()                   # text exposition format

Series:
- certq_http_requests_total{route,method,status}, certq_http_request_duration_seconds{route}
- certq_lookups_total{verdict}
- certq_source_calls_total{source,outcome,cached}: outcome is found / not_found / manual / skipped or, for
  unavailable, the error kind (timeout, captcha ...); certq_source_latency_seconds{source} (calls that asked)
- certq_cache_events_total{event} (hits, misses, stale_served, ...), certq_circuit_state{source,state} (1 for
  the current state), certq_rate_limited_total{scope}, certq_redis_down{component}
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from aggregator.models import Answer, Mode, Outcome
from aggregator.resilience import CircuitState

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
disable_created_metrics()  # no *_created series: they double the output and nobody graphs them
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Snapshot(Collector):
    """Values read from the gateway just before each scrape (the gateway keeps its own counters)."""

    def __init__(self) -> None:
        self.cache: dict[str, int] = {}
        self.circuits: dict[str, str] = {}
        self.redis_down: dict[str, bool] = {}

    def collect(self) -> Iterator[Metric]:
        cache = CounterMetricFamily("certq_cache_events", "Source-cache events since start.", labels=["event"])
        for event, value in sorted(self.cache.items()):
            cache.add_metric([event], value)
        yield cache
        circuit = GaugeMetricFamily(
            "certq_circuit_state", "Circuit breaker state per source (1 = current state).", labels=["source", "state"]
        )
        for source, current in sorted(self.circuits.items()):
            for state in CircuitState:
                circuit.add_metric([source, state.value], 1.0 if state.value == current else 0.0)
        yield circuit
        down = GaugeMetricFamily("certq_redis_down", "Whether Redis is failing for a component.", labels=["component"])
        for component, is_down in sorted(self.redis_down.items()):
            down.add_metric([component], 1.0 if is_down else 0.0)
        yield down


class Metrics:
    """The metrics of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "certq_http_requests", "HTTP requests by route and status.", ["route", "method", "status"], registry=r
        )
        self.duration = Histogram(
            "certq_http_request_duration_seconds", "HTTP request time.", ["route"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.lookups = Counter("certq_lookups", "Lookups answered, by verdict.", ["verdict"], registry=r)
        self.source_calls = Counter(
            "certq_source_calls", "Source results by outcome.", ["source", "outcome", "cached"], registry=r
        )
        self.source_latency = Histogram(
            "certq_source_latency_seconds", "Time a source took (uncached calls).", ["source"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.rate_limited = Counter("certq_rate_limited", "Requests refused by a rate limit.", ["scope"], registry=r)
        self._snapshot = _Snapshot()
        r.register(self._snapshot)
        # Labelled children by label values: `labels()` takes a lock and builds a key on every call, and
        # every request would call it about seven times. The children are never removed, so this is safe.
        self._children: dict[tuple[object, ...], Any] = {}
        self._by_sources: dict[int, tuple[Any, tuple[Any, ...], tuple[tuple[Any, float], ...]]] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self._child(self.requests, route, method, str(status)).inc()
        self._child(self.duration, route).observe(seconds)

    def observe_answer(self, answer: Answer) -> None:
        self._child(self.lookups, answer.verdict.value).inc()
        sources = answer.sources
        # A repeated lookup (the gateway's kept answer) carries the very list of source outcomes: what to count
        # for it is kept by its identity (the list held, so the id is not reused while the entry lives).
        kept = self._by_sources.get(id(sources))
        if kept is None or kept[0] is not sources:
            calls, latencies = [], []
            for s in sources:
                outcome = s.error_kind.value if s.outcome == Outcome.UNAVAILABLE and s.error_kind else s.outcome.value
                calls.append(self._child(self.source_calls, s.source, outcome, "true" if s.from_cache else "false"))
                if not s.from_cache and s.outcome != Outcome.SKIPPED:
                    latencies.append((self._child(self.source_latency, s.source), s.elapsed_ms / 1000))
            kept = (sources, tuple(calls), tuple(latencies))
            if len(self._by_sources) >= 1_024:
                self._by_sources.clear()
            self._by_sources[id(sources)] = kept
        for child in kept[1]:
            child.inc()
        for child, seconds in kept[2]:
            child.observe(seconds)

    async def refresh(self, gateway: Any) -> None:
        """Read the cache counters, circuit states and Redis health from the gateway (never raises)."""
        snap = self._snapshot
        try:
            snap.cache = dict(gateway.cache.stats())
        except Exception as e:  # noqa: BLE001 - a scrape must not fail because one reading did
            log.warning("metrics: cache stats unavailable: %s", e)
        for source in gateway.settings.sources:
            if source.mode in (Mode.RECORDS, Mode.LINK):
                continue
            try:
                snap.circuits[source.id] = (await gateway.resilience.breakers.state(source.id)).state.value
            except Exception as e:  # noqa: BLE001
                log.warning("metrics: circuit state of %s unavailable: %s", source.id, e)
        health = getattr(gateway.resilience, "health", None)
        if health is not None:
            snap.redis_down["resilience"] = bool(health.down)

    def note_redis(self, component: str, down: bool) -> None:
        self._snapshot.redis_down[component] = down

    def render(self) -> bytes:
        return generate_latest(self.registry)
