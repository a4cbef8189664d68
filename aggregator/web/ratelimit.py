"""Inbound rate limits: a sliding window per client IP (anonymous callers) and per API key.

    limiter = create_limiter(redis_client)              # None: this process only
    decision = await limiter.hit("ip:203.0.113.9", limit=60)
    if not decision.allowed:
        ...  # 429 with Retry-After: decision.retry_after_s
    decision = await limiter.hit("key:3f9a0c1d2e4b", limit=1200, cost=1000)   # a batch of 1,000 pairs
    ratelimit_headers(decision)   # RateLimit-Limit / -Remaining / -Reset / -Policy for the response

The window is the two-bucket approximation of a sliding minute: the count of the current fixed minute plus
the previous minute's count weighted by how much of it still lies inside the sliding window. It needs two
integers per caller (not one timestamp per request), and errs by at most the unevenness of the previous
minute. Denied requests are not counted, so a client that backs off gets through again. A hit may cost
more than one (`cost`: a batch of N pairs costs N); it is allowed only if all of it fits, and then counts
in full.

Every decision says what is left (`remaining`) and when to look again (`reset_s`), for the RateLimit
response headers (IETF draft httpapi-ratelimit-headers).

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
# Where the Gate leaves the request's rate-limit decision (and whose window it was) in the request state;
# the RateLimit-* response headers are made from it (middleware.Front). A batch replaces it with
# the decision that charged its pairs.
RATELIMIT_STATE = "ratelimit"
RATELIMIT_IDENT = "ratelimit_ident"

_LUA = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local limit = tonumber(ARGV[1])
local frac = tonumber(ARGV[2])
local cost = tonumber(ARGV[4] or '1')
if prev * (1 - frac) + cur + cost > limit then
  return {0, cur, prev}
end
cur = redis.call('INCRBY', KEYS[1], cost)
if cur == cost then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return {1, cur, prev}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int = 0  # whole seconds until the hit would be allowed (0 when allowed)
    limit: int = 0  # the limit per window the hit was measured against
    remaining: int = 0  # what is left of the window after this hit (before it, when refused)
    reset_s: int = 0  # refused: = retry_after_s; allowed: seconds until the current bucket rolls over
    window_s: int = int(WINDOW_S)


# What each of them says, for the API description (every response to a rate-limited request carries them).
RATELIMIT_HEADER_DOCS: dict[str, tuple[str, str]] = {
    "RateLimit-Limit": ("integer", "Requests (batch pairs) allowed per window"),
    "RateLimit-Remaining": ("integer", "What is left of the window"),
    "RateLimit-Reset": ("integer", "Seconds until the window rolls over (429: until a retry fits)"),
    "RateLimit-Policy": ("string", "<limit>;w=60"),
}


def ratelimit_headers(decision: Decision) -> dict[str, str]:
    """The RateLimit response headers (IETF draft httpapi-ratelimit-headers) for one decision."""
    return {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(decision.reset_s),
        "RateLimit-Policy": f"{decision.limit};w={decision.window_s}",
    }


def retry_after(
    cur: int, prev: int, limit: int, frac: float, window_s: float = WINDOW_S, *, cost: int = 1
) -> int:
    """Seconds until `cost` more requests fit, given the current and previous bucket counts and how far
    (0..1) into the current bucket we are. Always at least 1. (A cost above the limit never fits: the
    answer is then the time until the window is empty, two buckets at most.)"""
    waits: list[float] = []
    room = limit - cur - cost
    if room >= 0 and prev > 0:  # later in this bucket, once enough of the previous one has slid out
        waits.append((1 - room / prev - frac) * window_s)
    until_next = (1 - frac) * window_s
    if cur == 0 or limit - cost >= cur:  # at the start of the next bucket
        waits.append(until_next)
    else:  # some way into the next bucket, once enough of this one has slid out
        waits.append(until_next + (1 - max(0, limit - cost) / cur) * window_s)
    return max(1, math.ceil(min(waits)))


def decide(allowed: bool, cur: int, prev: int, limit: int, frac: float, window_s: float, cost: int) -> Decision:
    """The decision for counts `cur` (after the hit, if allowed) and `prev`, `frac` into the current bucket."""
    used = prev * (1 - frac) + cur
    remaining = max(0, math.floor(limit - used + 1e-9))
    if allowed:
        reset = max(1, math.ceil((1 - frac) * window_s))
        return Decision(True, 0, limit, remaining, reset, int(window_s))
    wait = retry_after(cur, prev, limit, frac, window_s, cost=cost)
    return Decision(False, wait, limit, remaining, wait, int(window_s))


class MemoryWindow:
    """Counters of this process. Callers idle for two windows are forgotten (bounded memory)."""

    def __init__(self, *, window_s: float = WINDOW_S, clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self._clock = clock
        self._counts: dict[str, list[int]] = {}  # ident -> [bucket, current count, previous count]
        self._next_prune = 0.0

    def hit_now(self, ident: str, limit: int, cost: int = 1) -> Decision:
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
        if prev * (1 - frac) + cur + cost > limit:
            return decide(False, cur, prev, limit, frac, self.window_s, cost)
        entry[1] += cost
        return decide(True, entry[1], prev, limit, frac, self.window_s, cost)

    async def hit(self, ident: str, limit: int, cost: int = 1) -> Decision:
        return self.hit_now(ident, limit, cost)

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

    async def hit(self, ident: str, limit: int, cost: int = 1) -> Decision:
        async def shared() -> Decision:
            now = self._clock()
            bucket, frac = divmod(now, self.window_s)
            b = int(bucket)
            frac /= self.window_s
            keys = [f"{self._prefix}:web:rl:{ident}:{b}", f"{self._prefix}:web:rl:{ident}:{b - 1}"]
            ttl_ms = int(self.window_s * 2 * 1000) + 1000
            allowed, cur, prev = await self._script(keys=keys, args=[limit, repr(frac), ttl_ms, cost])
            return decide(bool(allowed), int(cur), int(prev), limit, frac, self.window_s, cost)

        async def local() -> Decision:
            return self.fallback.hit_now(ident, limit, cost)

        return await self.health.call(shared, local)


WindowLimiter = MemoryWindow | RedisWindow


def create_limiter(client: Any | None, *, prefix: str = "certq", window_s: float = WINDOW_S) -> WindowLimiter:
    """Shared counters through `client` (a `redis.asyncio.Redis`), or this process's when it is None."""
    if client is None:
        return MemoryWindow(window_s=window_s)
    return RedisWindow(client, prefix=prefix, window_s=window_s)
