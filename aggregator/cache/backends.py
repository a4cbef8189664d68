"""Where cached envelopes live: an in-process LRU (the embedded default) or Redis (shared by every instance).

Both store opaque JSON strings under string keys with a time to live. The Redis backend adds what
cross-process coalescing needs: a lock per key (`SET NX PX`), a short-lived hand-off value through which
the lock holder gives its result to waiters in other processes, and a compare-and-delete release. Every
Redis failure surfaces as `BackendUnavailable`, so the cache has exactly one error to handle.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import MaxConnectionsError

from aggregator.cancellation import keep_cancellation
from aggregator.redisconn import REDIS_FAILURES

T = TypeVar("T")

class BackendUnavailable(Exception):
    """The cache backend could not be reached or answered with an error.

    `busy` means the client's own connection pool was exhausted: Redis itself may be fine, so this is no
    outage (no back-off); the one operation goes without the cache."""

    def __init__(self, message: str, *, busy: bool = False) -> None:
        super().__init__(message)
        self.busy = busy


class MemoryBackend:
    """An in-process LRU of envelopes with per-entry expiry; bounded by `max_entries`."""

    shared = False

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> str | None:
        return self.get_now(key)

    def get_now(self, key: str) -> str | None:
        """`get` without the await: an in-process read never waits."""
        item = self._entries.get(key)
        if item is None:
            return None
        drop_at, value = item
        if self._clock() >= drop_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: str, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        self._entries[key] = (self._clock() + ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop_matching(self, fragment: str) -> int:
        """Forget every key containing `fragment` ("" for all); how many were dropped."""
        doomed = [k for k in self._entries if fragment in k]
        for k in doomed:
            del self._entries[k]
        return len(doomed)

    async def close(self) -> None:
        self._entries.clear()


@dataclass(frozen=True)
class LockAttempt:
    """What `SET lock NX` found: whether we hold the lock now, who holds it otherwise, and the cached value."""

    acquired: bool
    holder: str | None  # the holder's token when not acquired (None: the lock vanished meanwhile)
    value: bytes | str | None  # the cache key's current value, read in the same round trip


@dataclass(frozen=True)
class PollResult:
    holder: str | None  # who holds the lock now (None: nobody)
    handoff: bytes | str | None  # the result the awaited holder handed over, if it has finished
    value: bytes | str | None  # the cache key's current value


# KEYS: lock, key. ARGV: token, lock ttl ms. Take the lock if free; read the cached value either way.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, false, redis.call('GET', KEYS[2])}
end
return {0, redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
"""

# KEYS: key, handoff, lock. ARGV: value ('' = do not store), value ttl ms, handoff value, handoff ttl ms, token,
# event channel, event ('' = none). Store, announce the new version, hand the result over and release the lock
# in one step, so a waiter never sees the lock gone without the result.
_FINISH = """
if ARGV[1] ~= '' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  if ARGV[7] ~= '' then redis.call('PUBLISH', ARGV[6], ARGV[7]) end
end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
if redis.call('GET', KEYS[3]) == ARGV[5] then redis.call('DEL', KEYS[3]) end
return 1
"""

# KEYS: lock. ARGV: token. Delete the lock only if we still hold it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _text(value: bytes | str | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


class RedisBackend:
    """Envelopes in Redis with native TTLs, plus the lock and hand-off used for cross-process coalescing."""

    shared = True

    def __init__(self, client: aioredis.Redis, *, owns_client: bool = False) -> None:
        self.client = client
        self._owns_client = owns_client
        self._acquire = client.register_script(_ACQUIRE)
        self._finish = client.register_script(_FINISH)
        self._release = client.register_script(_RELEASE)

    @staticmethod
    async def _guard(op: Awaitable[T]) -> T:
        try:
            return await keep_cancellation(op)
        except MaxConnectionsError as e:
            raise BackendUnavailable(f"{type(e).__name__}: {e}", busy=True) from e
        except REDIS_FAILURES as e:
            raise BackendUnavailable(f"{type(e).__name__}: {e}") from e

    async def get(self, key: str) -> bytes | str | None:
        return await self._guard(self.client.get(key))

    async def set(self, key: str, value: str, ttl_s: float, event: tuple[str, str] | None = None) -> None:
        """Store `value`; with `event` (channel, message), announce it in the same round trip."""
        ms = int(ttl_s * 1000)
        if ms <= 0:
            return
        if event is None:
            await self._guard(self.client.set(key, value, px=ms))
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.set(key, value, px=ms)
        pipe.publish(*event)
        await self._guard(pipe.execute())

    async def mget(self, keys: list[str]) -> list[bytes | str | None]:
        """Several keys' values in one round trip."""
        return list(await self._guard(self.client.mget(keys)))

    async def publish(self, channel: str, message: str) -> None:
        await self._guard(self.client.publish(channel, message))

    async def delete_matching(self, pattern: str) -> int:
        """Delete every key matching the glob `pattern` (SCAN, then UNLINK in batches); how many were deleted."""

        async def run() -> int:
            deleted = 0
            batch: list[bytes | str] = []
            async for k in self.client.scan_iter(match=pattern, count=1000):
                batch.append(k)
                if len(batch) >= 500:
                    deleted += await self.client.unlink(*batch)
                    batch = []
            if batch:
                deleted += await self.client.unlink(*batch)
            return int(deleted)

        return await self._guard(run())

    async def acquire(self, lock: str, token: str, ttl_ms: int, key: str) -> LockAttempt:
        flag, holder, value = await self._guard(self._acquire(keys=[lock, key], args=[token, ttl_ms]))
        return LockAttempt(acquired=flag == 1, holder=_text(holder), value=value)

    async def poll(self, lock: str, handoff: str, key: str) -> PollResult:
        holder, done, value = await self._guard(self.client.mget(lock, handoff, key))
        return PollResult(holder=_text(holder), handoff=done, value=value)

    async def finish(
        self,
        *,
        key: str,
        value: str | None,
        ttl_s: float,
        handoff: str,
        handoff_value: str,
        handoff_ttl_ms: int,
        lock: str,
        token: str,
        event: tuple[str, str] | None = None,
    ) -> None:
        ms = int(ttl_s * 1000)
        stored = value if value is not None and ms > 0 else ""
        channel, message = event or ("", "")
        args: list[str | int] = [stored, max(ms, 1), handoff_value, max(handoff_ttl_ms, 1), token, channel, message]
        await self._guard(self._finish(keys=[key, handoff, lock], args=args))

    async def release(self, lock: str, token: str) -> None:
        await self._guard(self._release(keys=[lock], args=[token]))

    async def close(self) -> None:
        if self._owns_client:
            try:
                await self.client.aclose()
            except REDIS_FAILURES:
                pass
