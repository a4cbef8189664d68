"""Inbound rate limits: a sliding window per client IP (anonymous callers) and per API key.

    limiter = create_limiter(redis_client)              # None: this process only
    decision = await limiter.hit("ip:203.0.113.9", limit=60)
    if not decision.allowed:
        ...  # 429 with Retry-After: decision.retry_after_s

The window is the two-bucket approximation of a sliding minute: the count of the current fixed minute plus
the previous minute's count weighted by how much of it still lies inside the sliding window. It needs two
integers per caller (not one timestamp per request), and errs by at most the unevenness of the previous
minute. Denied requests are not counted, so a client that backs off gets through again.

With Redis the counters are shared by every gateway instance: one Lua script reads both buckets and
increments the current one atomically. If Redis fails, the decision is taken from this process's own
counters (logged once per outage, see `resilience.health.RedisHealth`); a Redis outage never fails a request.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aggregator.resilience.health import RedisHealth

WINDOW_S = 60.0

_LUA = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local limit = tonumber(ARGV[1])
local frac = tonumber(ARGV[2])
if prev * (1 - frac) + cur + 1 > limit then
  return {0, cur, prev}
end
cur = redis.call('INCR', KEYS[1])
if cur == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return {1, cur, prev}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int = 0  # whole seconds until a request would be allowed (0 when allowed)


def retry_after(cur: int, prev: int, limit: int, frac: float, window_s: float = WINDOW_S) -> int:
    """Seconds until one more request fits, given the current and previous bucket counts and how far
    (0..1) into the current bucket we are. Always at least 1."""
    waits: list[float] = []
    room = limit - cur - 1
    if room >= 0 and prev > 0:  # later in this bucket, once enough of the previous one has slid out
        waits.append((1 - room / prev - frac) * window_s)
    until_next = (1 - frac) * window_s
    if cur == 0 or limit - 1 >= cur:  # at the start of the next bucket
        waits.append(until_next)
    else:  # some way into the next bucket, once enough of this one has slid out
        waits.append(until_next + (1 - (limit - 1) / cur) * window_s)
    return max(1, math.ceil(min(waits)))


class MemoryWindow:
    """Counters of this process. Callers idle for two windows are forgotten (bounded memory)."""

    def __init__(self, *, window_s: float = WINDOW_S, clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self._clock = clock
        self._counts: dict[str, list[int]] = {}  # ident -> [bucket, current count, previous count]
        self._next_prune = 0.0

    def hit_now(self, ident: str, limit: int) -> Decision:
        now = self._clock()
        bucket, frac = divmod(now, self.window_s)
        b = int(bucket)
        frac /= self.window_s
        if now >= self._next_prune:
            self._prune(b)
            self._next_prune = now + self.window_s
        entry = self._counts.get(ident)
        if entry is None:
            entry = self._counts[ident] = [b, 0, 0]
        elif entry[0] != b:
            entry[2] = entry[1] if entry[0] == b - 1 else 0
            entry[1] = 0
            entry[0] = b
        cur, prev = entry[1], entry[2]
        if prev * (1 - frac) + cur + 1 > limit:
            return Decision(False, retry_after(cur, prev, limit, frac, self.window_s))
        entry[1] += 1
        return Decision(True)

    async def hit(self, ident: str, limit: int) -> Decision:
        return self.hit_now(ident, limit)

    def _prune(self, bucket: int) -> None:
        stale = [k for k, v in self._counts.items() if v[0] < bucket - 1]
        for k in stale:
            del self._counts[k]

    def __len__(self) -> int:
        return len(self._counts)


class RedisWindow:
    """Counters in Redis, shared by every instance; this process's counters while Redis is down."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "certq",
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.time,
        health: RedisHealth | None = None,
    ) -> None:
        self.window_s = window_s
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self._script = client.register_script(_LUA)
        self.health = health or RedisHealth(timeout_s=0.25, recheck_s=1.0, name="Redis (web rate limits)")
        self.fallback = MemoryWindow(window_s=window_s, clock=clock)

    async def hit(self, ident: str, limit: int) -> Decision:
        async def shared() -> Decision:
            now = self._clock()
            bucket, frac = divmod(now, self.window_s)
            b = int(bucket)
            frac /= self.window_s
            keys = [f"{self._prefix}:web:rl:{ident}:{b}", f"{self._prefix}:web:rl:{ident}:{b - 1}"]
            ttl_ms = int(self.window_s * 2 * 1000) + 1000
            allowed, cur, prev = await self._script(keys=keys, args=[limit, repr(frac), ttl_ms])
            if allowed:
                return Decision(True)
            return Decision(False, retry_after(int(cur), int(prev), limit, frac, self.window_s))

        async def local() -> Decision:
            return self.fallback.hit_now(ident, limit)

        return await self.health.call(shared, local)


WindowLimiter = MemoryWindow | RedisWindow


def create_limiter(client: Any | None, *, prefix: str = "certq", window_s: float = WINDOW_S) -> WindowLimiter:
    """Shared counters through `client` (a `redis.asyncio.Redis`), or this process's when it is None."""
    if client is None:
        return MemoryWindow(window_s=window_s)
    return RedisWindow(client, prefix=prefix, window_s=window_s)
