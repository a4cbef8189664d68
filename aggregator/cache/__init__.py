"""The source-result cache: versioned JSON in an in-process LRU or Redis, with serve-stale and coalescing.

    cache = SourceCache.from_url(os.environ.get("CERTQ_REDIS_URL"))
    result = await cache.fetch(source, query, lambda: ask(source, query), version=generation)

See `source_cache` for the behaviour, `envelope` for the stored format, `backends` for where it lives,
`coalesce` for in-process single-flight and `outage` for how a Redis outage is handled.
"""

from __future__ import annotations

from aggregator.cache.backends import BackendUnavailable, MemoryBackend, RedisBackend
from aggregator.cache.envelope import SCHEMA_VERSION, CorruptEntry, Envelope, cache_key
from aggregator.cache.source_cache import STAT_KEYS, SourceCache

__all__ = [
    "SCHEMA_VERSION",
    "STAT_KEYS",
    "BackendUnavailable",
    "CorruptEntry",
    "Envelope",
    "MemoryBackend",
    "RedisBackend",
    "SourceCache",
    "cache_key",
]
