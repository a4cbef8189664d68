"""The one way certq reaches Redis: a client made from `CERTQ_REDIS_URL`, and what a Redis call may raise.

    client = client_from_url("redis://127.0.0.1:6379/0")   # shared by the cache, breakers, limiters, budgets
    try:
        await client.get(key)
    except REDIS_FAILURES:
        ...                                              # Redis cannot answer now: go on without it

Every user of shared state (the source cache, circuit breakers, outbound and inbound rate limits, the name
budget) gets the same client, made here with options for state that must never hold a lookup up: fail fast
on a dead server, reconnect by itself on a restarted one. How an outage is then handled (fall back to this
process, probe again with growing pauses) is `resilience.health`'s business.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

#: What a Redis call raises when the server is gone or unwell (refused, reset, timed out, loading, a read-only
#: replica ...). Anything else is a bug and propagates.
REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError, EOFError, TimeoutError)


def client_options() -> dict[str, Any]:
    """Fail fast, reconnect by itself.

    The pool blocks (up to `timeout`) instead of failing when all its connections are busy: redis-py's
    default pool raises "Too many connections" past 100 concurrent commands, which under a burst of
    lookups would look like an outage and send the whole burst to the sources."""
    return {
        "socket_connect_timeout": 0.5,
        "socket_timeout": 0.5,
        "health_check_interval": 10,
        "retry": Retry(NoBackoff(), 1),  # one immediate retry on a fresh connection (a restarted server)
        "max_connections": 100,
        "timeout": 1.0,  # longest wait for a free pooled connection
    }


def client_from_url(url: str, **options: Any) -> aioredis.Redis:
    """A `redis.asyncio` client on a blocking pool with `client_options()` (`options` override them).
    Closing the client closes its pool."""
    pool = aioredis.BlockingConnectionPool.from_url(url, **{**client_options(), **options})
    return aioredis.Redis.from_pool(pool)
