"""The gateway: one lookup fanned out to every source that could hold the number, merged into one answer.

    async with await Gateway.open(Settings.load()) as gw:
        answer = await gw.lookup("T110105199003071239", name="张伟")

Each source is asked in its own task, bounded by min(its timeout, what is left of the global deadline); a
source that can answer without waiting (a link-out, a fresh answer in the cache's near tier) answers inline.
When several sources miss the near tier, one MGET fills it first. When every source answers inline with the
same results as an earlier lookup of the same input (the same objects: the near tier's versions), that
lookup's merged answer is reused instead of built again.
The cache sits around each source call; the runner owns HTTP; uploaded records come from the store.
A source that errs or runs out of time is reported as unavailable, never as not found.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from adapters.registry import build_adapter
from aggregator.cache import SourceCache
from aggregator.cache.coalesce import SingleFlight
from aggregator.config import HealthConfig, Settings, SourceConfig
from aggregator.home import Home
from aggregator.merge import build_answer
from aggregator.models import (
    LIVE_MODES,
    Answer,
    Department,
    ErrorKind,
    Mode,
    Outcome,
    Query,
    SourceResult,
    UploadAsOf,
)
from aggregator.numbers import parse_number
from aggregator.records.freshness import FreshnessMemo
from aggregator.records.live import LiveHistory
from aggregator.records.source_health import HealthLog
from aggregator.records.store import RecordStore
from aggregator.resilience import ResilienceState
from aggregator.runner import Runner
from aggregator.selection import holder_id_for, select_sources

log = logging.getLogger(__name__)

DEFAULT_DEADLINE_S = 6.0
GENERATION_MEMO_S = 1.0  # how long a department's import generation is trusted before asking the store again
RUNNER_MARGIN_S = 0.05  # the runner's own deadline comes this much before the gateway's backstop
LAST_KNOWN_READ_S = 0.5  # longest wait for a failed live source's last answer from the database
ANSWER_MEMO_ENTRIES = 1_024  # merged answers kept, keyed by the lookup's input and its sources' results

_MemoKey = tuple[str, str | None, str | None, date, tuple[int, ...]]


def _unavailable(source: SourceConfig, kind: ErrorKind, message: str, started: float) -> SourceResult:
    return SourceResult(
        source=source.id,
        department=source.department,
        mode=source.mode,
        outcome=Outcome.UNAVAILABLE,
        error_kind=kind,
        message=message,
        elapsed_ms=(time.monotonic() - started) * 1000,
        fetched_at=datetime.now(UTC),
    )


class Gateway:
    def __init__(
        self,
        settings: Settings,
        store: RecordStore,
        *,
        cache: SourceCache | None = None,
        runner: Runner | None = None,
        resilience: ResilienceState | None = None,
        deadline_s: float = DEFAULT_DEADLINE_S,
        today: Callable[[], date] = date.today,
        redis_client: Any = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.cache = cache or SourceCache.memory()
        self.resilience = resilience or ResilienceState.memory()
        self.runner = runner or Runner(breakers=self.resilience.breakers, limiters=self.resilience.limiters)
        self.deadline_s = deadline_s
        self.today = today
        self._redis = redis_client
        self._adapters = {
            s.id: build_adapter(s) for s in settings.sources if s.enabled and s.configured and s.mode != Mode.RECORDS
        }
        self._generations: dict[Department, tuple[float, int]] = {}
        # One store read per department when the memo lapses, shared by every lookup waiting for it (without
        # it, each concurrent lookup reads the generation itself: a burst of queries every GENERATION_MEMO_S).
        self._generation_reads: SingleFlight[int] = SingleFlight()
        self._generation_epoch = 0  # bumped by forget_generation: a read started before it is not memoised
        # The last definitive answer of every live source, kept in the records database: it outlives the cache.
        engine = getattr(store, "engine", None)
        self.history: LiveHistory | None = LiveHistory(engine) if engine is not None else None
        # Merged answers built from near-tier results, by input and the identity of those results (which the
        # entry keeps alive, so an id is never reused while its entry exists): see `_memo_get`.
        self._answers: OrderedDict[_MemoKey, tuple[tuple[SourceResult, ...], Answer]] = OrderedDict()
        # Another instance's import (or a gap in hearing about imports) makes the generation be read again.
        self.cache.on_generation_change(self._generation_changed)
        # The sources' health history (every call that ends, counted in memory, flushed every few seconds) and
        # each department's newest upload (for the overdue note of records answers): records/source_health.py,
        # records/freshness.py.
        self.health_log: HealthLog | None = None
        self.freshness: FreshnessMemo | None = None
        if engine is not None:
            health = getattr(settings, "health", None) or HealthConfig()
            self.health_log = HealthLog(engine, flush_s=health.flush_s, retention_days=health.retention_days)
            self.freshness = FreshnessMemo(engine, overdue_days=health.upload_overdue_days)
            if isinstance(self.runner, Runner) and self.runner.health is None:
                self.runner.health = self.health_log

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        database_url: str | None = None,
        redis_url: str | None = None,
        **kw: Any,
    ) -> Gateway:
        """A gateway on the embedded defaults (SQLite, in-process cache) unless URLs say otherwise.

        `database_url` and `redis_url` default to the home's (CERTQ_DATABASE_URL, CERTQ_REDIS_URL or its
        settings.toml: see `aggregator.home`); "" for `redis_url` means the in-process cache."""
        store = await RecordStore.open(database_url)
        redis_url = redis_url if redis_url is not None else Home.load().redis_url
        if redis_url:
            cache = SourceCache.from_url(redis_url)
            kw.setdefault("resilience", ResilienceState.redis(cache.client))
            await cache.start(timeout_s=1.0)  # the events between instances; lookups go on without them meanwhile
        else:
            cache = SourceCache.memory()
        return cls(settings, store, cache=cache, redis_client=cache.client, **kw)

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.settle()
        await self._generation_reads.cancel_all()
        await self.runner.close()
        if self.health_log is not None:
            await self.health_log.close()
        await self.resilience.aclose()  # before the cache: the cache owns the Redis client they share
        await self.cache.close()
        await self.store.close()

    # --- one lookup -----------------------------------------------------------------------------

    async def lookup(
        self,
        number: str,
        *,
        name: str | None = None,
        id_number: str | None = None,
        deadline_s: float | None = None,
    ) -> Answer:
        """Ask every source that could hold `number` and merge. Raises `numbers.NumberError` on bad input."""
        started = time.monotonic()
        classification = parse_number(number)
        id_norm = None
        if id_number and id_number.strip():
            id_norm = parse_number(id_number).number
        query = Query(number=classification.number, name=(name or "").strip() or None, id_number=id_norm)
        deadline = started + (deadline_s if deadline_s is not None else self.deadline_s)

        ask, skipped = select_sources(self.settings.sources, classification, query)
        # Sources that can answer without waiting (a link-out, a fresh in-process cache entry) answer here;
        # only the others get a task and a timer.
        results: list[SourceResult] = []
        waiting: list[SourceConfig] = []
        for s in ask:
            answered = self._answer_now(s, query, deadline)
            if answered is None:
                waiting.append(s)
            else:
                results.append(answered)
        if len(waiting) > 1 and self.cache.backend_name == "redis" and await self._load_many(waiting, query, deadline):
            still: list[SourceConfig] = []
            for s in waiting:
                answered = self._answer_now(s, query, deadline)
                if answered is None:
                    still.append(s)
                else:
                    results.append(answered)
            waiting = still
        memo_key: _MemoKey | None = None
        today = self.today()
        if not waiting:  # every source answered inline: maybe the same results as an earlier lookup
            memo_key = (number, name, id_number, today, tuple(id(r) for r in results if r.mode != Mode.LINK))
            reused = self._memo_get(memo_key, results, started)
            if reused is not None:
                return reused
        kept = tuple(r for r in results if r.mode != Mode.LINK) if memo_key is not None else ()
        if waiting:
            tasks = [asyncio.create_task(self._ask(s, query, classification, deadline)) for s in waiting]
            results += await asyncio.gather(*tasks)
        results += skipped
        order = {s.id: i for i, s in enumerate(self.settings.sources)}
        results.sort(key=lambda r: order.get(r.source, 0))
        answer = build_answer(
            query,
            classification,
            results,
            self.settings.recognition,
            today,
            elapsed_ms=(time.monotonic() - started) * 1000,
        )
        if memo_key is not None:
            self._answers[memo_key] = (kept, answer)
            if len(self._answers) > ANSWER_MEMO_ENTRIES:
                self._answers.popitem(last=False)
        return answer

    def _memo_get(self, key: _MemoKey, results: list[SourceResult], started: float) -> Answer | None:
        """The answer built earlier from these very results (near-tier objects: the same object is the same
        version of a source's answer), with this lookup's timing; None if there is none."""
        entry = self._answers.get(key)
        if entry is None:
            return None
        kept, answer = entry
        current = [r for r in results if r.mode != Mode.LINK]
        if len(kept) != len(current) or any(a is not b for a, b in zip(kept, current, strict=True)):
            del self._answers[key]
            return None
        self._answers.move_to_end(key)
        elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        return answer.model_copy(update={"answered_at": datetime.now(UTC), "elapsed_ms": elapsed_ms})

    async def _load_many(self, sources: list[SourceConfig], query: Query, deadline: float) -> int:
        """Read the cached answers of `sources` the near tier lacks in one round trip (records sources: while the
        department's generation is known); how many fresh ones it found. Never raises."""
        now = time.monotonic()
        wanted: list[tuple[SourceConfig, Query, str]] = []
        for s in sources:
            if s.mode == Mode.RECORDS:
                gen = self._known_generation(s.department, now)
                if gen is not None:
                    wanted.append((s, query, str(gen)))
            elif s.mode in LIVE_MODES:
                wanted.append((s, query, ""))
        budget = min([deadline - now, *(s.timeout_s for s, _, _ in wanted)])
        if len(wanted) < 2 or budget <= 0:
            return 0
        try:
            async with asyncio.timeout(budget):
                return await self.cache.load_many(wanted)
        except Exception:  # noqa: BLE001 - the sources' own tasks read (and report) as before
            return 0

    async def settle(self) -> None:
        """Wait for the live answers still being written to the history (tests; shutdown)."""
        if self.history is not None:
            await self.history.flush()

    def _answer_now(self, source: SourceConfig, query: Query, deadline: float) -> SourceResult | None:
        """`_ask`'s result for `source` when getting it needs no waiting: a link-out, or a fresh answer in the
        in-process cache (records: while the department's data generation is known). None: `_ask` it in a
        task, which also reports a spent deadline and any failure, as always."""
        started = time.monotonic()
        if min(source.timeout_s, deadline - started) <= 0:
            return None
        try:
            if source.mode == Mode.LINK:
                return self._link(source, query, started)
            if source.mode == Mode.RECORDS:
                gen = self._known_generation(source.department, started)
                return None if gen is None else self.cache.peek(source, query, version=str(gen))
            return self.cache.peek(source, query)
        except Exception:  # noqa: BLE001 - `_ask` asks again and reports it
            return None

    async def _ask(self, source: SourceConfig, query: Query, classification: Any, deadline: float) -> SourceResult:
        result = await self._ask_source(source, query, classification, deadline)
        time_left = deadline - time.monotonic()
        if result.is_error and source.mode in LIVE_MODES and self.history is not None and time_left > 0:
            return await self._last_known(source, query, result, min(LAST_KNOWN_READ_S, time_left))
        return result

    async def _ask_source(
        self, source: SourceConfig, query: Query, classification: Any, deadline: float
    ) -> SourceResult:
        started = time.monotonic()
        budget = min(source.timeout_s, deadline - started)
        if budget <= 0:
            return _unavailable(source, ErrorKind.TIMEOUT, "全局时限已到 (global deadline reached)", started)
        # The runner works to a slightly earlier deadline than this backstop, so that it (not the backstop)
        # decides a hung source's fate and records the failure in the circuit breaker.
        inner_deadline = started + max(budget - RUNNER_MARGIN_S, budget / 2)
        try:
            if source.mode == Mode.LINK:  # built here, no I/O: no timer needed
                return self._link(source, query, started)
            async with asyncio.timeout(budget):
                if source.mode == Mode.RECORDS:
                    holder_id = holder_id_for(query, classification)
                    version = str(await self._generation(source.department))
                    return await self.cache.fetch(
                        source, query, lambda: self._ask_records(source, query, holder_id), version=version
                    )
                adapter = self._adapters[source.id]
                return await self.cache.fetch(
                    source, query, lambda: self._ask_live(source, adapter, query, inner_deadline)
                )
        except TimeoutError:
            return _unavailable(source, ErrorKind.TIMEOUT, f"超时 {budget:.1f}s (timed out)", started)
        except Exception as e:  # noqa: BLE001 - one source's failure must never fail the lookup
            log.exception("source %s failed", source.id)
            return _unavailable(source, ErrorKind.UPSTREAM_ERROR, f"{type(e).__name__}: {e}", started)

    async def _ask_live(self, source: SourceConfig, adapter: Any, query: Query, deadline: float) -> SourceResult:
        """The runner's answer; a definitive one is also kept in the history (written in the background: the
        lookup does not wait for it)."""
        result = await self.runner.run(source, adapter, query, deadline=deadline)
        if self.history is not None:
            self.history.keep(source.id, query, result)
        return result

    async def _last_known(
        self, source: SourceConfig, query: Query, failed: SourceResult, wait_s: float
    ) -> SourceResult:
        """`failed`, or the source's last definitive answer from the history, marked stale, with why (if it
        can be read within `wait_s`: what is left of the lookup's deadline)."""
        assert self.history is not None
        try:
            async with asyncio.timeout(wait_s):
                last = await self.history.last(source.id, query)
        except Exception as e:  # noqa: BLE001 - no history is no worse than before
            self.history.warn(f"could not read {source.id}'s last live answer: {type(e).__name__}: {e}")
            return failed
        if last is None:
            return failed
        kind = failed.error_kind.value if failed.error_kind else "error"
        when = last.fetched_at.strftime("%Y-%m-%d %H:%M UTC") if last.fetched_at else "?"
        return last.model_copy(
            update={
                "from_cache": True,
                "stale": True,
                "elapsed_ms": failed.elapsed_ms,
                "message": f"数据源暂不可用（{kind}），采用其 {when} 的上次结果 "
                f"(source unavailable: {kind}; its last answer, of {when}, is shown)",
            }
        )

    def _link(self, source: SourceConfig, query: Query, started: float) -> SourceResult:
        link = self._adapters[source.id].link(query)
        return SourceResult(
            source=source.id,
            department=source.department,
            mode=source.mode,
            outcome=Outcome.MANUAL,
            link=link,
            message=link.instructions,
            elapsed_ms=(time.monotonic() - started) * 1000,
        )

    async def _ask_records(self, source: SourceConfig, query: Query, holder_id: str | None) -> SourceResult:
        started = time.monotonic()
        try:
            hit = await self.store.find(source.department, number=query.number, id_number=holder_id)
        except Exception as e:  # noqa: BLE001 - a broken store is an unavailable source, not "not found"
            log.warning("records store failed for %s: %s", source.id, e)
            failed = _unavailable(source, ErrorKind.UPSTREAM_ERROR, f"记录库不可用 (records store failed): {e}", started)
            if self.health_log is not None:
                self.health_log.record(failed)
            return failed
        certs = hit.certificates
        upload = await self._upload_as_of(source.department)
        result = SourceResult(
            source=source.id,
            department=source.department,
            mode=source.mode,
            outcome=Outcome.FOUND if certs else Outcome.NOT_FOUND,
            certificates=certs,
            message=f"上报批次 {hit.quarter}" if hit.quarter else None,
            elapsed_ms=(time.monotonic() - started) * 1000,
            fetched_at=datetime.now(UTC),
            data_as_of=hit.data_as_of,
            upload=upload,
        )
        if self.health_log is not None:
            self.health_log.record(result)
        return result

    async def _upload_as_of(self, department: Department) -> UploadAsOf | None:
        """The department's newest upload (memoised a few seconds), or None if it cannot be read now."""
        if self.freshness is None:
            return None
        try:
            return await self.freshness.as_of(department)
        except Exception as e:  # noqa: BLE001 - the note is not worth failing the answer
            log.warning("could not read %s's newest upload: %s", department.value, e)
            return None

    def _known_generation(self, department: Department, now: float) -> int | None:
        """The department's import generation while its memo is fresh, else None."""
        memo = self._generations.get(department)
        if memo and now - memo[0] < GENERATION_MEMO_S:
            return memo[1]
        return None

    async def _generation(self, department: Department) -> int:
        now = time.monotonic()
        known = self._known_generation(department, now)
        if known is not None:
            return known
        epoch = self._generation_epoch
        # The key names the epoch, so that a lookup after forget_generation never joins an older read.
        gen, _ = await self._generation_reads.run(
            f"{department.value}:{epoch}", lambda: self._read_generation(department, now, epoch)
        )
        return gen

    async def _read_generation(self, department: Department, asked_at: float, epoch: int) -> int:
        gen = await self.store.generation(department)
        if epoch == self._generation_epoch:
            self._generations[department] = (asked_at, gen)
        return gen

    def forget_generation(self, department: Department) -> None:
        """Call after an import through this process so its cached answers are unreachable at once (here:
        `imported` also tells the other instances)."""
        self._generations.pop(department, None)
        self._generation_epoch += 1
        if self.freshness is not None:  # its newest upload too (the overdue note of records answers)
            self.freshness.forget(department)

    async def imported(self, department: Department) -> None:
        """After an import through this process: its cached answers are unreachable at once, here and (through
        the cache's events on Redis) on every other instance."""
        self.forget_generation(department)
        await self.cache.announce_generation(department.value)

    def _generation_changed(self, department: str | None) -> None:
        """Another instance announced an import of `department` (None: any department may have changed)."""
        if department is None:
            self._generations.clear()
            self._generation_epoch += 1
            return
        try:
            self.forget_generation(Department(department))
        except ValueError:
            log.warning("cache event names an unknown department: %r", department[:40])
