"""The sources' health history: calls by outcome, latency and circuit openings per source per 5-minute bucket,
kept in the records database (`schema.source_health`) so that every instance adds to one history.

Each flush also adds the same counts to a daily rollup (`schema.source_health_daily`, days in China time), which
the 30- and 90-day bars read. Writing costs a lookup almost nothing: `HealthLog.record` adds to counters in this process's memory (a dict
update, a few microseconds, no I/O, no await), and a background task writes them every `flush_s` seconds as one
upsert per bucket that sums into the row (`calls = calls + excluded.calls`; the latency histogram's columns sum
too, so p50/p95 combine across instances where averages of percentiles would not):

    log = HealthLog(engine, clock=time.time, flush_s=5.0, retention_days=90)
    log.record(result, opened=False)          # a SourceResult the runner just made (not a cache hit)
    await log.flush()                         # tests, shutdown; otherwise every flush_s by itself
    await log.close()                         # stops the task after a last flush

Reading (the /sources status page and `GET /api/v1/sources/{id}/history`):

    history = HealthHistory(engine, config)   # config: aggregator.config.HealthConfig
    views = await history.overview(["mem_api", ...], now=time.time())   # {source: SourceHistory}

A bucket is *down* when the share of calls the source answered (found or not_found) is below
`config.down_below`; timeouts, blocks, captchas, 5xx, parse errors and an open circuit count against it;
rate-limited calls (our limiter's or the source's 429) count neither way. An *incident* is a run of down
buckets (buckets without calls between them do not end it; an answered bucket does) lasting at least
`config.incident_min_minutes`, named by its most frequent error kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.config import HealthConfig
from aggregator.models import SourceResult
from aggregator.records.database import dialect_insert, write_transaction
from aggregator.records.schema import (
    HEALTH_LATENCY_BOUNDS_MS,
    HEALTH_LATENCY_COLUMNS,
    HEALTH_OUTCOME_COLUMNS,
    HEALTH_SUM_COLUMNS,
    source_health,
    source_health_daily,
)

log = logging.getLogger(__name__)

BUCKET_S = 300
PRUNE_EVERY_S = 3600.0
MAX_PENDING_BUCKETS = 20_000  # kept in memory while the database cannot be written; beyond, the oldest are dropped
CHINA_OFFSET_S = 8 * 3600  # daily bars are days in China time

FAILURE_KINDS = ("timeout", "blocked", "captcha", "upstream_error", "parse_error", "circuit_open")
_INDEX = {name: i for i, name in enumerate(HEALTH_SUM_COLUMNS)}
_CALLS, _OPENINGS, _TIMED, _LAT_SUM = _INDEX["calls"], _INDEX["openings"], _INDEX["timed"], _INDEX["latency_ms_sum"]
_LAT0 = _INDEX[HEALTH_LATENCY_COLUMNS[0]]
_OUTCOME_INDEX = {name: _INDEX[name] for name in HEALTH_OUTCOME_COLUMNS}
_WIDTH = len(HEALTH_SUM_COLUMNS)


def bucket_of(at: float) -> int:
    """The start (Unix seconds) of the 5-minute bucket holding `at`."""
    return int(at) // BUCKET_S * BUCKET_S


def day_of(at: float) -> int:
    """The start (Unix seconds) of the day, China time, holding `at`."""
    return (int(at) + CHINA_OFFSET_S) // 86400 * 86400 - CHINA_OFFSET_S


# --- writing ---------------------------------------------------------------------------------------------------


class HealthLog:
    """This process's counts per (source, bucket), written to the database every `flush_s` seconds."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], float] = time.time,
        flush_s: float = 5.0,
        retention_days: int = 90,
    ) -> None:
        self.engine = engine
        self._clock = clock
        self.flush_s = flush_s
        self.retention_s = retention_days * 86400
        self._pending: dict[tuple[str, int], list[float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._pruned_at = 0.0
        self._failing = False
        self.flushed_rows = 0  # upserts written, for tests and monitoring
        self.closed = False

    def record(self, result: SourceResult, *, opened: bool = False) -> None:
        """Count one call of `result.source` that just ended (never a cache hit). `opened`: this call's failure
        opened the circuit. Synchronous and without I/O."""
        key = (result.source, int(self._clock()) // BUCKET_S * BUCKET_S)
        row = self._pending.get(key)
        if row is None:
            row = self._pending[key] = [0] * _WIDTH
            if self._task is None and not self.closed:
                self._start()
        row[_CALLS] += 1
        kind = result.error_kind
        index = _OUTCOME_INDEX.get(kind.value if kind is not None else result.outcome.value)
        if index is not None:
            row[index] += 1
        if opened:
            row[_OPENINGS] += 1
        if kind is None or kind.value != "circuit_open":  # a refusal by the breaker took no time at the source
            ms = result.elapsed_ms
            row[_TIMED] += 1
            row[_LAT_SUM] += ms
            row[_LAT0 + bisect_left(HEALTH_LATENCY_BOUNDS_MS, ms)] += 1

    def _start(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # recorded outside an event loop (a test): flushed when asked
            return
        self._task = loop.create_task(self._run(), name="certq-health-flush")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush()

    async def flush(self) -> int:
        """Write what was counted since the last flush; returns the number of buckets written. A database that
        cannot be written keeps the counts for the next flush (logged once per outage)."""
        async with self._lock:
            pending, self._pending = self._pending, {}
            if not pending:
                return 0
            rows = [
                {"source": source, "bucket": bucket, **dict(zip(HEALTH_SUM_COLUMNS, values, strict=True))}
                for (source, bucket), values in sorted(pending.items())  # one lock order for every instance
            ]
            days: dict[tuple[str, int], list[float]] = {}
            for (source, bucket), values in pending.items():
                day = days.setdefault((source, day_of(bucket)), [0] * _WIDTH)
                for i, v in enumerate(values):
                    day[i] += v
            daily = [
                {"source": source, "day": day, **dict(zip(HEALTH_SUM_COLUMNS, values, strict=True))}
                for (source, day), values in sorted(days.items())
            ]
            try:
                async with write_transaction(self.engine) as conn:
                    await conn.execute(_upsert(conn.dialect.name, source_health, "bucket"), rows)
                    await conn.execute(_upsert(conn.dialect.name, source_health_daily, "day"), daily)
                    now = self._clock()
                    if now - self._pruned_at >= PRUNE_EVERY_S:
                        self._pruned_at = now
                        await conn.execute(
                            source_health.delete().where(source_health.c.bucket < bucket_of(now - self.retention_s))
                        )
                        await conn.execute(
                            source_health_daily.delete().where(
                                source_health_daily.c.day < day_of(now - self.retention_s) - 86400
                            )
                        )
            except Exception as e:  # noqa: BLE001 - the history must never fail a lookup
                self._put_back(pending)
                if not self._failing:
                    log.warning("could not write the sources' health history (%s: %s); kept for later", type(e).__name__, e)
                self._failing = True
                return 0
            if self._failing:
                log.warning("the sources' health history is written again")
            self._failing = False
            self.flushed_rows += len(rows)
            return len(rows)

    def _put_back(self, pending: dict[tuple[str, int], list[float]]) -> None:
        for key, values in pending.items():
            row = self._pending.get(key)
            if row is None:
                self._pending[key] = values
            else:
                for i, v in enumerate(values):
                    row[i] += v
        if len(self._pending) > MAX_PENDING_BUCKETS:
            for key in sorted(self._pending, key=lambda k: k[1])[: len(self._pending) - MAX_PENDING_BUCKETS]:
                del self._pending[key]

    async def close(self) -> None:
        """Stop the background task and write what is left."""
        self.closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()


def _upsert(dialect: str, table: sa.Table, key: str) -> Any:
    """INSERT ... ON CONFLICT (source, key) DO UPDATE SET every counter = counter + excluded.counter."""
    statement = dialect_insert(dialect, table)
    return statement.on_conflict_do_update(
        index_elements=[table.c.source, table.c[key]],
        set_={name: table.c[name] + statement.excluded[name] for name in HEALTH_SUM_COLUMNS},
    )


# --- reading ---------------------------------------------------------------------------------------------------


class HealthBar(BaseModel):
    """One bar of an availability strip: the calls of `start` .. `end`."""

    start: datetime
    end: datetime
    calls: int = 0
    answered: int = 0  # found or not_found
    failed: int = 0  # timeouts, blocks, captchas, 5xx, parse errors, circuit open
    rate_limited: int = 0
    openings: int = 0
    availability: float | None = None  # answered / (answered + failed); None without such calls
    kinds: dict[str, int] = Field(default_factory=dict)  # failures by error kind


class HealthWindow(BaseModel):
    """24 h (hourly bars), 30 d or 90 d (daily bars, China time)."""

    window: str  # 24h | 30d | 90d
    bar_minutes: int
    calls: int = 0
    availability: float | None = None
    openings: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    outcomes: dict[str, int] = Field(default_factory=dict)
    bars: list[HealthBar] = Field(default_factory=list)


class Incident(BaseModel):
    """A span during which the source was down for at least `incident_min_minutes`."""

    start: datetime
    end: datetime  # end of its last down bucket (for an ongoing one: so far)
    minutes: int
    ongoing: bool = False
    error_kind: str  # the most frequent failure
    kinds: dict[str, int] = Field(default_factory=dict)
    failed: int = 0
    answered: int = 0


class SourceHistory(BaseModel):
    """One source's history: its state now, the three windows and its incidents (90 days, newest first)."""

    source: str
    state: str  # up | degraded | down | idle (no calls in the last 15 minutes)
    last_call_at: datetime | None = None
    windows: list[HealthWindow] = Field(default_factory=list)
    incidents: list[Incident] = Field(default_factory=list)


WINDOWS = (("24h", 24, 3600), ("30d", 30, 86400), ("90d", 90, 86400))  # (name, bars, seconds a bar)
RECENT_S = 15 * 60
DEGRADED_BELOW = 0.95


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _window_end(now: float, width: int) -> int:
    """The end of the bar holding `now`: the next full hour, or the next midnight in China time."""
    if width == 86400:
        return day_of(now) + 86400
    return int(now) // width * width + width


def _answered(t: Any) -> Any:
    return t.c.found + t.c.not_found


def _failed(t: Any) -> Any:
    return sum((t.c[k] for k in FAILURE_KINDS[1:]), t.c[FAILURE_KINDS[0]])


def percentile(histogram: Sequence[float], p: float) -> float | None:
    """The p-th percentile (ms) of a latency histogram with `HEALTH_LATENCY_BOUNDS_MS`, interpolated within its
    bucket (the overflow bucket answers its lower bound)."""
    total = sum(histogram)
    if total <= 0:
        return None
    rank = p / 100 * total
    seen = 0.0
    for i, n in enumerate(histogram):
        if n and seen + n >= rank:
            if i >= len(HEALTH_LATENCY_BOUNDS_MS):
                return float(HEALTH_LATENCY_BOUNDS_MS[-1])
            low = HEALTH_LATENCY_BOUNDS_MS[i - 1] if i else 0
            high = HEALTH_LATENCY_BOUNDS_MS[i]
            return round(low + (high - low) * (rank - seen) / n, 1)
        seen += n
    return float(HEALTH_LATENCY_BOUNDS_MS[-1])


def _availability(answered: float, failed: float) -> float | None:
    return round(answered / (answered + failed), 4) if answered + failed else None


def _kinds(values: dict[str, Any]) -> dict[str, int]:
    return {k: int(values[k]) for k in FAILURE_KINDS if values.get(k)}


class HealthHistory:
    """Reads the history for the status page and the API."""

    def __init__(self, engine: AsyncEngine, config: HealthConfig | None = None) -> None:
        self.engine = engine
        self.config = config or HealthConfig()

    async def overview(self, sources: Iterable[str], *, now: float | None = None) -> dict[str, SourceHistory]:
        """Every source's history (a source without calls gets empty bars)."""
        now = time.time() if now is None else now
        ids = list(sources)
        out = {s: SourceHistory(source=s, state="idle") for s in ids}
        if not ids:
            return out
        async with self.engine.connect() as conn:
            # One read per bar width, over its longest window; a shorter window (30 d) is the tail of the 90 d one.
            read: dict[int, tuple[int, dict[str, dict[int, dict[str, Any]]]]] = {}
            for width in {w for _, _, w in WINDOWS}:
                longest = max(c for _, c, w in WINDOWS if w == width)
                end = _window_end(now, width)
                read[width] = (longest, await self._bars(conn, ids, end - longest * width, end, width))
            for name, count, width in WINDOWS:
                longest, bars = read[width]
                start = _window_end(now, width) - count * width
                shift = longest - count
                by_source = {s: {i - shift: r for i, r in rows.items() if i >= shift} for s, rows in bars.items()}
                for s in ids:
                    out[s].windows.append(_window(name, count, width, start, by_source[s]))
            recent = await conn.execute(
                sa.select(
                    source_health.c.source,
                    sa.func.max(source_health.c.bucket).label("last"),
                    sa.func.sum(_answered(source_health)).label("answered"),
                    sa.func.sum(_failed(source_health)).label("failed"),
                )
                .where(source_health.c.source.in_(ids), source_health.c.bucket >= bucket_of(now - RECENT_S))
                .group_by(source_health.c.source)
            )
            for row in recent.mappings():
                view = out[row["source"]]
                view.last_call_at = _at(min(int(row["last"]) + BUCKET_S, now))
                availability = _availability(float(row["answered"] or 0), float(row["failed"] or 0))
                if availability is None:
                    view.state = "idle"
                elif availability < self.config.down_below:
                    view.state = "down"
                elif availability < DEGRADED_BELOW:
                    view.state = "degraded"
                else:
                    view.state = "up"
            incidents = await self._incidents(conn, ids, now)
        for s in ids:
            out[s].incidents = incidents.get(s, [])
        return out

    async def _bars(
        self, conn: Any, ids: list[str], start: int, end: int, width: int
    ) -> dict[str, dict[int, dict[str, Any]]]:
        """Per source, per bar index ((time - start) // width): the sums of its rows. Daily bars read the daily
        rollup, hourly ones the 5-minute buckets."""
        table, key = (source_health_daily, "day") if width == 86400 else (source_health, "bucket")
        sums = [sa.func.sum(table.c[c]).label(c) for c in HEALTH_SUM_COLUMNS]
        index = ((table.c[key] - start) // width).label("i")
        query = (
            sa.select(table.c.source, index, *sums)
            .where(table.c.source.in_(ids), table.c[key] >= start, table.c[key] < end)
            .group_by(table.c.source, index)
        )
        by_source: dict[str, dict[int, dict[str, Any]]] = {s: {} for s in ids}
        for row in (await conn.execute(query)).mappings().all():
            by_source[row["source"]][int(row["i"])] = dict(row)
        return by_source

    async def _incidents(self, conn: Any, ids: list[str], now: float) -> dict[str, list[Incident]]:
        """Runs of down buckets in the last 90 days. For each down bucket the query also returns the newest
        up bucket before it (an index range scan backwards from it), which says where one run ends."""
        t, u = source_health, source_health.alias("u")
        below = self.config.down_below

        def down(x: Any) -> Any:
            return sa.and_(_failed(x) > 0, _answered(x) < below * (_answered(x) + _failed(x)))

        def up(x: Any) -> Any:
            return sa.and_(_answered(x) + _failed(x) > 0, _answered(x) >= below * (_answered(x) + _failed(x)))

        since = bucket_of(now) - 90 * 86400
        prev_up = (
            sa.select(sa.func.max(u.c.bucket))
            .where(u.c.source == t.c.source, u.c.bucket < t.c.bucket, up(u))
            .scalar_subquery()
            .label("prev_up")
        )
        query = (
            sa.select(t.c.source, t.c.bucket, prev_up, _answered(t).label("answered"), *(t.c[k] for k in FAILURE_KINDS))
            .where(t.c.source.in_(ids), t.c.bucket >= since, down(t))
            .order_by(t.c.source, t.c.bucket)
        )
        rows = (await conn.execute(query)).mappings().all()
        spans: dict[str, list[list[dict[str, Any]]]] = {}
        for row in rows:
            runs = spans.setdefault(row["source"], [])
            prev = row["prev_up"]
            if runs and (prev is None or int(prev) < runs[-1][-1]["bucket"]):
                runs[-1].append(dict(row))
            else:
                runs.append([dict(row)])
        # A run is ongoing when no up bucket follows its last down bucket (an index range scan from there on).
        last_up: dict[str, int] = {}
        for source, runs in spans.items():
            last = int(runs[-1][-1]["bucket"])
            after = await conn.execute(
                sa.select(t.c.bucket).where(t.c.source == source, t.c.bucket > last, up(t)).limit(1)
            )
            last_up[source] = last + 1 if after.first() is not None else -1  # -1: nothing answered since
        out: dict[str, list[Incident]] = {}
        minimum = self.config.incident_min_minutes * 60
        for source, runs in spans.items():
            for run in runs:
                first, last = int(run[0]["bucket"]), int(run[-1]["bucket"])
                end = max(min(last + BUCKET_S, now), first + 1)  # an ongoing one: until now
                if end - first < minimum:
                    continue
                kinds = {k: sum(int(r[k]) for r in run) for k in FAILURE_KINDS}
                kinds = {k: n for k, n in kinds.items() if n}
                out.setdefault(source, []).append(
                    Incident(
                        start=_at(first),
                        end=_at(end),
                        minutes=int((end - first) // 60),
                        ongoing=run is runs[-1] and last_up[source] < last,
                        error_kind=max(kinds, key=lambda k: kinds[k]),
                        kinds=kinds,
                        failed=sum(kinds.values()),
                        answered=sum(int(r["answered"]) for r in run),
                    )
                )
        for incidents in out.values():
            incidents.reverse()
        return out


def _window(name: str, count: int, width: int, start: int, rows: dict[int, dict[str, Any]]) -> HealthWindow:
    bars: list[HealthBar] = []
    totals = {c: 0.0 for c in HEALTH_SUM_COLUMNS}
    for i in range(count):
        row = rows.get(i)
        bar = HealthBar(start=_at(start + i * width), end=_at(start + (i + 1) * width))
        if row is not None:
            values = {c: float(row[c] or 0) for c in HEALTH_SUM_COLUMNS}
            for c in HEALTH_SUM_COLUMNS:
                totals[c] += values[c]
            answered = int(values["found"] + values["not_found"])
            failed = int(sum(values[k] for k in FAILURE_KINDS))
            bar = bar.model_copy(
                update={
                    "calls": int(values["calls"]),
                    "answered": answered,
                    "failed": failed,
                    "rate_limited": int(values["rate_limited"]),
                    "openings": int(values["openings"]),
                    "availability": _availability(answered, failed),
                    "kinds": _kinds(values),
                }
            )
        bars.append(bar)
    answered = totals["found"] + totals["not_found"]
    failed = sum(totals[k] for k in FAILURE_KINDS)
    histogram = [totals[c] for c in HEALTH_LATENCY_COLUMNS]
    return HealthWindow(
        window=name,
        bar_minutes=width // 60,
        calls=int(totals["calls"]),
        availability=_availability(answered, failed),
        openings=int(totals["openings"]),
        p50_ms=percentile(histogram, 50),
        p95_ms=percentile(histogram, 95),
        outcomes={c: int(totals[c]) for c in HEALTH_OUTCOME_COLUMNS if totals[c]},
        bars=bars,
    )
