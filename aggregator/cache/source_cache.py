"""The cache around every source call: TTL per outcome, serve-stale, and coalescing of identical lookups.

    cache = SourceCache.from_url(os.environ.get("CERTQ_REDIS_URL"))   # None or "": in-process LRU
    result = await cache.fetch(source, query, lambda: runner.run(source, adapter, query), version="7")

`fetch` answers from the cache when it holds a fresh answer; otherwise it asks the source once for all
identical lookups that arrive meanwhile: in this process (single-flight) and, on Redis, across every
gateway process (a short lock; the holder hands its result to the waiters; if it dies, a waiter takes
over when the lock expires). Found and not-found answers are stored for their configured TTLs; errors
never are. When the source fails and an expired answer within its max-stale window exists, that answer is
served, marked stale. Redis failures never reach the caller: while Redis is down, answers are kept in a
small in-process tier instead (so that an outage does not send every repeated lookup to the sources and
into their rate limits), which is dropped when Redis answers again (another instance may have changed
what Redis holds meanwhile).

Two tiers: fresh answers are also kept decoded in process (`near`), in front of the backend, and answered from
there without a round trip or a parse. On Redis the near tier is kept coherent across instances by
`events` (pub/sub): every store announces the key's new version, which drops older copies everywhere; a
purge or an import is announced too. The near tier answers only while this instance is subscribed, and
never past an answer's own freshness. Where several sources miss the near tier, `load_many` reads them in
one MGET.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import redis.asyncio as aioredis

from aggregator.cache.backends import BackendUnavailable, MemoryBackend, RedisBackend
from aggregator.cache.coalesce import SingleFlight
from aggregator.cache.envelope import (
    SCHEMA_VERSION,
    CorruptEntry,
    Envelope,
    cache_key,
    fresh_ttl_s,
    make_envelope,
)
from aggregator.cache.events import CacheEvents, channel_for
from aggregator.cache.near import NearTier
from aggregator.cache.outage import OutageGuard
from aggregator.config import SourceConfig
from aggregator.models import Query, SourceResult
from aggregator.redisconn import client_from_url

log = logging.getLogger("aggregator.cache")

SourceCall = Callable[[], Awaitable[SourceResult]]

STAT_KEYS = (
    "hits",  # fresh answers served from the cache
    "misses",  # lookups that found no fresh answer and led a flight
    "stale_served",  # expired answers served because the source failed
    "coalesced_local",  # lookups that joined an identical lookup already running in this process
    "coalesced_remote",  # flights answered by another process's lock holder instead of calling the source
    "stores",  # answers written to the cache
    "calls",  # source calls made
    "corrupt",  # stored values that did not parse as a current envelope (treated as misses)
    "backend_errors",  # failed backend operations
    "outages",  # periods during which the backend was unreachable
    "near_hits",  # of the hits, those answered from the near tier (decoded, in process)
    "batch_reads",  # MGETs made for several sources at once (`load_many`)
)

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class SourceCache:
    """Source results cached by source, data version and normalised query, in memory or in Redis."""

    OUTAGE_BACKOFF_S = 0.5  # after a Redis error, skip Redis this long before one call tries again (doubling)
    OUTAGE_MAX_BACKOFF_S = 8.0  # the longest pause between two tries while Redis stays down
    OUTAGE_LOCAL_ENTRIES = 20_000  # answers kept in process while Redis is down
    POLL_FIRST_S = 0.005  # a waiter's first look at the lock holder's progress
    POLL_MAX_S = 0.05  # and the longest pause between looks
    # A lock lives min(2 x the source's timeout, LOCK_MAX_S) unless released. A holder that dies is replaced
    # when it expires; a call that outlives it (the caller's deadline should prevent that) may be repeated
    # by a waiter that takes over, which costs one more source call, never a wrong answer.
    LOCK_MAX_S = 10.0
    NEAR_ENTRIES = 5_000  # decoded fresh answers kept in process, in front of the backend (the hot set)

    def __init__(
        self,
        backend: MemoryBackend | RedisBackend,
        *,
        prefix: str = "certq",
        clock: Callable[[], float] = time.time,
        near_entries: int | None = None,
        near: bool = True,
    ) -> None:
        if not prefix or any(c.isspace() for c in prefix):
            raise ValueError(f"cache prefix must be a non-empty word, got {prefix!r}")
        self._backend = backend
        self._prefix = prefix
        self._clock = clock
        self._flights: SingleFlight[SourceResult] = SingleFlight()
        name = "Redis cache" if backend.shared else "memory cache"
        # While a shared backend is down, answers live in this process only (dropped when it returns).
        self._local = MemoryBackend(self.OUTAGE_LOCAL_ENTRIES, clock) if backend.shared else None
        self._guard = OutageGuard(
            backoff_s=self.OUTAGE_BACKOFF_S,
            max_backoff_s=self.OUTAGE_MAX_BACKOFF_S,
            name=name,
            on_recovery=self._drop_local,
        )
        self._stats = dict.fromkeys(STAT_KEYS, 0)
        self._near = NearTier(near_entries or self.NEAR_ENTRIES, clock)
        self._near_on = near  # False: every hit is read from the backend (the one-tier cache, for comparisons)
        self._generation_listeners: list[Callable[[str | None], None]] = []
        self.channel = channel_for(prefix)
        self._events = (
            CacheEvents(backend.client, self.channel, on_message=self._on_event, on_reset=self._on_reset)
            if isinstance(backend, RedisBackend)
            else None
        )

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def memory(cls, *, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> SourceCache:
        """The embedded default: an in-process LRU of at most `max_entries` answers."""
        return cls(MemoryBackend(max_entries, clock), prefix="certq", clock=clock)

    @classmethod
    def redis(
        cls, client: aioredis.Redis, *, prefix: str = "certq", clock: Callable[[], float] = time.time, near: bool = True
    ) -> SourceCache:
        """A cache shared by every process using `client`'s Redis. The caller keeps ownership of `client`;
        give it short socket timeouts (see `from_url`) so that a dead Redis costs little."""
        return cls(RedisBackend(client), prefix=prefix, clock=clock, near=near)

    @classmethod
    def from_url(cls, url: str | None, **kw: Any) -> SourceCache:
        """`None` or "" gives the in-process LRU; `redis://`, `rediss://` or `unix://` gives Redis with a client
        configured to fail fast (0.5 s connect and socket timeouts, health checks) that the cache owns and
        closes. Accepts `prefix`, `clock` and `max_entries`; each is used where it applies."""
        unknown = set(kw) - {"prefix", "clock", "max_entries"}
        if unknown:
            raise TypeError(f"SourceCache.from_url() got unexpected keyword argument(s): {sorted(unknown)}")
        clock = kw.get("clock", time.time)
        if not url:
            return cls.memory(max_entries=kw.get("max_entries", 100_000), clock=clock)
        if not url.startswith(_REDIS_SCHEMES):
            raise ValueError(f"cache URL must start with one of {', '.join(_REDIS_SCHEMES)}; got {url!r}")
        backend = RedisBackend(client_from_url(url), owns_client=True)
        return cls(backend, prefix=kw.get("prefix", "certq"), clock=clock)

    @property
    def client(self) -> aioredis.Redis | None:
        """The Redis client (to share with other Redis users), or None for the in-process cache."""
        return self._backend.client if isinstance(self._backend, RedisBackend) else None

    @property
    def backend_name(self) -> str:
        return "redis" if self._backend.shared else "memory"

    def stats(self) -> dict[str, int]:
        """Counters since start: see STAT_KEYS for what each means."""
        out = dict(self._stats)
        out["backend_errors"] = self._guard.errors
        out["outages"] = self._guard.outages
        return out

    async def close(self) -> None:
        """Cancel running flights and release the backend (and the Redis client if the cache made it)."""
        await self._flights.cancel_all()
        if self._events is not None:
            await self._events.close()
        self._near.clear()
        await self._backend.close()

    # --- the near tier and events between instances ---------------------------------------------

    @property
    def near_live(self) -> bool:
        """Whether the near tier may answer: always in process; on Redis while subscribed to the events."""
        if self._events is None or not self._near_on:
            return self._near_on
        if not self._events.live:
            with suppress(RuntimeError):  # no running loop: nothing to start yet
                self._events.start()
        return self._events.live and not self._guard.down

    async def start(self, timeout_s: float = 2.0) -> bool:
        """Subscribe to the events between instances now (otherwise the first lookup starts it) and wait up to
        `timeout_s` for the subscription; whether the near tier is live."""
        if self._events is None:
            return True
        self._events.start()
        with suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not self._events.live:
                    await asyncio.sleep(0.01)
        return self._events.live

    def on_generation_change(self, listener: Callable[[str | None], None]) -> None:
        """Call `listener(department)` when another instance announces an import (None: any department may
        have changed, after the events were not heard for a while)."""
        self._generation_listeners.append(listener)

    async def announce_generation(self, department: str) -> None:
        """Tell every instance that `department`'s records changed (after an import through this one)."""
        await self._announce(f"g {department}")

    async def purge(self, source_id: str | None = None) -> int:
        """Remove every cached answer of `source_id` (None: of every source) here, in the shared backend and
        in every instance's near tier; how many keys were removed (answers, and on Redis also the hand-offs
        that lock holders left for waiters)."""
        fragment = f":src:{source_id}:" if source_id else ""
        if fragment:
            self._near.drop_matching(fragment)
        else:
            self._near.clear()
        if isinstance(self._backend, RedisBackend):
            pattern = f"{self._prefix}:v{SCHEMA_VERSION}:src:{source_id or '*'}:*"
            removed = await self._guard.run(lambda: self._backend.delete_matching(pattern))  # type: ignore[union-attr]
            await self._announce(f"p {fragment or '*'}")
        else:
            removed = self._backend.drop_matching(fragment)
        if self._local is not None:
            self._local.drop_matching(fragment)
        return removed

    async def _announce(self, message: str) -> None:
        if isinstance(self._backend, RedisBackend):
            backend = self._backend
            try:
                await self._guard.run(lambda: backend.publish(self.channel, message))
            except BackendUnavailable as e:
                # The others then see an import within their 1-second generation memo, as before these events.
                log.info("cache event %r not sent: %s", message[:80], e)

    def _on_event(self, message: str) -> None:
        kind, _, rest = message.partition(" ")
        if kind == "k":
            version, _, key = rest.partition(" ")
            self._near.drop(key, float(version))
        elif kind == "p":
            if rest == "*":
                self._near.clear()
            else:
                self._near.drop_matching(rest)
        elif kind == "g":
            for listener in self._generation_listeners:
                listener(rest)

    def _on_reset(self) -> None:
        self._near.clear()
        for listener in self._generation_listeners:
            listener(None)

    def _near_get(self, key: str) -> SourceResult | None:
        if not self.near_live:
            return None
        entry = self._near.get(key, self._clock())
        if entry is None:
            return None
        # In front of the in-process LRU, an entry answers only while the LRU holds the very value it was
        # decoded from: the LRU's evictions and replacements apply to both tiers.
        if entry.raw is not None and self._backend.get_now(key) is not entry.raw:  # type: ignore[union-attr]
            self._near.drop(key)
            return None
        self._stats["hits"] += 1
        self._stats["near_hits"] += 1
        return entry.result

    def _keep_near(self, key: str, env: Envelope, raw: object = None) -> SourceResult:
        """`env`'s result marked as a hit, kept in the near tier while it may answer."""
        result = _as_hit(env)
        if self.near_live:
            self._near.put(key, result, env.expires_at, env.stored_at, raw if self._events is None else None)
        return result

    def _event_for(self, key: str, value: str | None, version: float) -> tuple[str, str] | None:
        """The announcement of a store: (channel, `k {version} {key}`), or None when there is nobody to tell."""
        if value is None or self._events is None:
            return None
        return self.channel, f"k {version!r} {key}"

    async def load_many(self, wanted: list[tuple[SourceConfig, Query, str]]) -> int:
        """Read the answers of several (source, query, version) the near tier does not hold in one round trip
        (Redis MGET) and keep the fresh ones there, for `peek` to answer; how many were found fresh. Nothing
        to do in process (`peek` reads the LRU itself); never raises for a backend failure."""
        if not isinstance(self._backend, RedisBackend) or not self.near_live:
            return 0
        now = self._clock()
        keys = []
        for source, query, version in wanted:
            key = cache_key(self._prefix, source, query, version)
            if key not in self._flights and self._near.get(key, now) is None:
                keys.append(key)
        if len(keys) < 2:
            return 0  # one key: `fetch`'s own GET is the same round trip
        backend = self._backend
        try:
            raws = await self._guard.run(lambda: backend.mget(keys))
        except BackendUnavailable:
            return 0
        self._stats["batch_reads"] += 1
        found = 0
        now = self._clock()
        for key, raw in zip(keys, raws, strict=True):
            env = self._decode(raw)
            if env is not None and env.is_fresh(now):
                self._near.put(key, _as_hit(env), env.expires_at, env.stored_at)
                found += 1
        return found

    # --- lookups --------------------------------------------------------------------------------

    def key(self, source: SourceConfig, query: Query, version: str = "") -> str:
        """The cache key of an answer: `{prefix}:v{schema}:src:{source}:{version}:{sha256(query)}`."""
        return cache_key(self._prefix, source, query, version)

    async def fetch(self, source: SourceConfig, query: Query, call: SourceCall, *, version: str = "") -> SourceResult:
        """`source`'s answer to `query`: from the cache when fresh, else from `call()`, shared with every
        identical lookup running at the same time. `version` names the source's data generation; a new one
        makes older answers unreachable. `call` must return a SourceResult (errors as unavailable results);
        if it raises, the exception reaches every lookup that shared the call."""
        key = cache_key(self._prefix, source, query, version)
        stale: Envelope | None = None
        if key not in self._flights:  # nobody here is already asking: read the cache ourselves
            near = self._near_get(key)
            if near is not None:
                return near
            shared = True
            try:
                raw = await self._guard.run(lambda: self._backend.get(key))
            except BackendUnavailable:
                raw = self._local.get_now(key) if self._local is not None else None
                shared = False
            env = self._decode(raw)
            if env is not None:
                now = self._clock()
                if env.is_fresh(now):
                    self._stats["hits"] += 1
                    return self._keep_near(key, env, raw) if shared else _as_hit(env)
                if env.is_servable_stale(now):
                    stale = env
        result, joined = await self._flights.run(key, lambda: self._miss(key, source, call, stale))
        if joined:
            self._stats["coalesced_local"] += 1
            return result.model_copy(deep=True)
        return result

    def peek(self, source: SourceConfig, query: Query, *, version: str = "") -> SourceResult | None:
        """What `fetch` would return without waiting, when it can tell so: a fresh answer in the near tier or the
        in-process cache (counted as a hit, as `fetch` counts it), and only while no identical lookup is in
        flight (`fetch` would join it). None means "call `fetch`": on a miss, a stale or unreadable entry, a
        flight running for the key, or on Redis when the near tier does not hold it (a read is a round trip).
        The result may be shared with other lookups: never change it."""
        key = cache_key(self._prefix, source, query, version)
        if key in self._flights:
            return None
        near = self._near_get(key)
        if near is not None or not isinstance(self._backend, MemoryBackend):
            return near
        raw = self._backend.get_now(key)
        if raw is None:
            return None
        try:
            env = Envelope.decode(raw)
        except CorruptEntry:
            return None  # `fetch` reads it again, counts and logs it
        if not env.is_fresh(self._clock()):
            return None
        self._stats["hits"] += 1
        return self._keep_near(key, env, raw)

    async def _miss(self, key: str, source: SourceConfig, call: SourceCall, stale: Envelope | None) -> SourceResult:
        """One flight after a miss: ask the source, coordinated with the other processes on Redis."""
        self._stats["misses"] += 1
        if isinstance(self._backend, RedisBackend):
            return await self._coordinated(self._backend, key, source, call, stale)
        return await self._call_and_store(key, source, call, stale)

    async def _call_and_store(
        self, key: str, source: SourceConfig, call: SourceCall, stale: Envelope | None
    ) -> SourceResult:
        """Ask the source without any cross-process lock (memory backend, or Redis unreachable)."""
        fresh = await self._call(call)
        value, ttl_s, version = self._storable(source, fresh)
        if value is not None:
            try:
                if isinstance(self._backend, RedisBackend):
                    backend, event = self._backend, self._event_for(key, value, version)
                    await self._guard.run(lambda: backend.set(key, value, ttl_s, event))
                else:
                    await self._backend.set(key, value, ttl_s)
                self._stats["stores"] += 1
                self._keep_near_value(key, value)
            except BackendUnavailable:
                await self._keep_local(key, value, ttl_s)
        return self._settle(fresh, stale)

    async def _coordinated(
        self, backend: RedisBackend, key: str, source: SourceConfig, call: SourceCall, stale: Envelope | None
    ) -> SourceResult:
        """Take the key's Redis lock and ask the source, or wait for the process that holds it."""
        token = uuid.uuid4().hex
        lock = f"{key}:lock"
        lock_ttl_ms = max(100, int(min(source.timeout_s * 2, self.LOCK_MAX_S) * 1000))
        try:
            while True:
                attempt = await self._guard.run(lambda: backend.acquire(lock, token, lock_ttl_ms, key))
                env = self._decode(attempt.value)
                now = self._clock()
                if env is not None and env.is_fresh(now):
                    # Another process stored the answer between our first read and the lock.
                    if attempt.acquired:
                        with suppress(BackendUnavailable):
                            await self._guard.run(lambda: backend.release(lock, token))
                    self._stats["coalesced_remote"] += 1
                    return _as_hit(env)
                if env is not None and env.is_servable_stale(now):
                    stale = env
                if attempt.acquired:
                    break
                if attempt.holder is None:
                    continue  # released between our SET NX and GET: try again at once
                received = await self._await_holder(backend, key, lock, attempt.holder)
                if received is not None:
                    self._stats["coalesced_remote"] += 1
                    return received
                # The holder is gone without a result (it died, or its lock expired): take over.
        except BackendUnavailable:
            return await self._call_and_store(key, source, call, stale)
        return await self._hold(backend, key, source, call, stale, lock, token, lock_ttl_ms)

    async def _hold(
        self,
        backend: RedisBackend,
        key: str,
        source: SourceConfig,
        call: SourceCall,
        stale: Envelope | None,
        lock: str,
        token: str,
        lock_ttl_ms: int,
    ) -> SourceResult:
        """We hold the lock: ask the source, store, hand the result to waiters and release, in one step."""
        finished = False
        try:
            fresh = await self._call(call)
            final = self._settle(fresh, stale)
            value, ttl_s, version = self._storable(source, fresh)
            now = self._clock()
            handoff = Envelope(stored_at=now, expires_at=now, stale_until=now, result=final).encode()
            try:
                await self._guard.run(
                    lambda: backend.finish(
                        key=key,
                        value=value,
                        ttl_s=ttl_s,
                        handoff=f"{key}:done:{token}",
                        handoff_value=handoff,
                        handoff_ttl_ms=max(lock_ttl_ms, 1000),
                        lock=lock,
                        token=token,
                        event=self._event_for(key, value, version),
                    )
                )
                finished = True
                if value is not None:
                    self._stats["stores"] += 1
                    self._keep_near_value(key, value)
            except BackendUnavailable:
                if value is not None:
                    await self._keep_local(key, value, ttl_s)
            return final
        finally:
            if not finished:
                with suppress(BackendUnavailable):
                    await self._guard.run(lambda: backend.release(lock, token))

    async def _await_holder(self, backend: RedisBackend, key: str, lock: str, holder: str) -> SourceResult | None:
        """Wait for the process holding the lock: its result, or None once the lock is gone or changed hands."""
        handoff = f"{key}:done:{holder}"
        delay = self.POLL_FIRST_S
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.POLL_MAX_S)
            polled = await self._guard.run(lambda: backend.poll(lock, handoff, key))
            done = self._decode(polled.handoff)
            if done is not None:
                return done.result
            env = self._decode(polled.value)
            if env is not None and env.is_fresh(self._clock()):
                return _as_hit(env)
            if polled.holder != holder:
                return None

    # --- helpers --------------------------------------------------------------------------------

    def _keep_near_value(self, key: str, value: str) -> None:
        """Keep what was just stored in the near tier too (decoded again: its own objects, not the caller's)."""
        if self.near_live:
            with suppress(CorruptEntry):
                self._keep_near(key, Envelope.decode(value), value)

    async def _keep_local(self, key: str, value: str, ttl_s: float) -> None:
        """Keep an answer in process while the shared backend cannot take it."""
        if self._local is not None:
            await self._local.set(key, value, ttl_s)

    def _drop_local(self) -> None:
        if self._local is not None and len(self._local):
            log.info("dropping %d answers kept in process during the outage", len(self._local))
            self._local = MemoryBackend(self.OUTAGE_LOCAL_ENTRIES, self._clock)

    async def _call(self, call: SourceCall) -> SourceResult:
        self._stats["calls"] += 1
        return await call()

    def _storable(self, source: SourceConfig, fresh: SourceResult) -> tuple[str | None, float, float]:
        """The envelope to store for a fresh result, its time to live and its version (stored_at), or
        (None, 0, 0) if it is not cached."""
        fresh_s = fresh_ttl_s(source, fresh)
        if fresh_s <= 0:
            return None, 0.0, 0.0
        now = self._clock()
        env = make_envelope(source, fresh, now, fresh_s)
        return env.encode(), env.stale_until - now, now

    def _settle(self, fresh: SourceResult, stale: Envelope | None) -> SourceResult:
        """The fresh result, or the stale answer, marked, when the source failed and one is at hand."""
        if not fresh.is_error or stale is None:
            return fresh
        self._stats["stale_served"] += 1
        kind = fresh.error_kind.value if fresh.error_kind else fresh.outcome.value
        note = f"stale: source {kind}" + (f": {fresh.message}" if fresh.message else "")
        return stale.result.model_copy(update={"from_cache": True, "stale": True, "message": note})

    def _decode(self, raw: bytes | str | None) -> Envelope | None:
        if raw is None:
            return None
        try:
            return Envelope.decode(raw)
        except CorruptEntry as e:
            self._stats["corrupt"] += 1
            log.debug("cache entry ignored: %s", e)
            return None


def _as_hit(env: Envelope) -> SourceResult:
    """The envelope's result, marked as a fresh hit. Every caller passes an envelope it has just decoded and
    drops, so the result is its own: marked in place instead of copied."""
    result = env.result
    result.from_cache = True
    result.stale = False
    return result
