"""Recent call statistics per source, for the /sources page and `certq sources`.

Keeps the last `window` results of one source (outcome, latency) and summarises them: success rate,
p50/p95 latency, counts per outcome and the last error.

    stats = SourceStats()
    stats.record(result)                # a SourceResult
    stats.snapshot("mem")               # {"calls": 12, "success_rate": 0.92, "p50_ms": 84.0, ...}
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aggregator.models import ErrorKind, Outcome, SourceResult

DEFAULT_WINDOW = 200


@dataclass(frozen=True)
class _Call:
    label: str  # the outcome, or the error kind for unavailable
    ok: bool  # the source answered (found or not_found)
    latency_ms: float
    timed: bool  # a request was attempted (circuit_open answers are instant and not counted in latency)


def _percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return round(sorted_values[rank - 1], 1)


class SourceStats:
    """The last `window` calls of one source."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self._calls: deque[_Call] = deque(maxlen=window)
        self.total = 0
        self.last_error: dict[str, Any] | None = None

    def record(self, result: SourceResult) -> None:
        ok = result.outcome in (Outcome.FOUND, Outcome.NOT_FOUND)
        label = result.error_kind.value if result.error_kind else result.outcome.value
        self._calls.append(_Call(label, ok, result.elapsed_ms, result.error_kind != ErrorKind.CIRCUIT_OPEN))
        self.total += 1
        if result.outcome == Outcome.UNAVAILABLE:
            at = result.fetched_at or datetime.now(UTC)
            self.last_error = {"kind": label, "message": result.message, "at": at.isoformat()}

    def snapshot(self, source_id: str) -> dict[str, Any]:
        calls = list(self._calls)
        latencies = sorted(c.latency_ms for c in calls if c.timed)
        return {
            "source": source_id,
            "calls": len(calls),
            "calls_total": self.total,
            "success_rate": round(sum(c.ok for c in calls) / len(calls), 3) if calls else None,
            "p50_ms": _percentile(latencies, 50),
            "p95_ms": _percentile(latencies, 95),
            "outcomes": dict(Counter(c.label for c in calls)),
            "last_error": self.last_error,
        }
