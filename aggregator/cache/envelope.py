"""How a cached source result is keyed and stored: versioned JSON envelopes, never pickle.

A value is one JSON object: the schema version, when it was stored, until when it is fresh, until when it
may still be served stale, and the `SourceResult` itself. Anything that does not parse as the current
schema is a miss, reported as `CorruptEntry`, never an exception for the caller.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from pydantic import BaseModel, ValidationError

from aggregator.config import SourceConfig
from aggregator.models import Outcome, Query, SourceResult

SCHEMA_VERSION = 1


class CorruptEntry(Exception):
    """A stored value that is not an envelope of the current schema (garbage, old or future schema)."""


class Envelope(BaseModel):
    """A cached `SourceResult` with its freshness window (epoch seconds from the cache's clock)."""

    v: int = SCHEMA_VERSION
    stored_at: float
    expires_at: float  # fresh until
    stale_until: float  # may be served stale (when the source fails) until
    result: SourceResult

    def is_fresh(self, now: float) -> bool:
        return now < self.expires_at

    def is_servable_stale(self, now: float) -> bool:
        return now < self.stale_until

    def encode(self) -> str:
        return self.model_dump_json()

    @classmethod
    def decode(cls, raw: str | bytes) -> Envelope:
        """Parse a stored value; raises `CorruptEntry` for anything but a current-schema envelope."""
        try:
            env = cls.model_validate_json(raw)
        except ValidationError as e:
            raise CorruptEntry(f"not a cache envelope: {e.error_count()} validation error(s)") from e
        if env.v != SCHEMA_VERSION:
            raise CorruptEntry(f"unknown envelope schema version {env.v} (this code reads {SCHEMA_VERSION})")
        return env


def cache_key(prefix: str, source: SourceConfig, query: Query, version: str) -> str:
    """`{prefix}:v{SCHEMA_VERSION}:src:{source id}:{version}:{sha256 of the query's cache key}`."""
    return f"{prefix}:v{SCHEMA_VERSION}:src:{source.id}:{version}:{_digest(query.cache_key())}"


@lru_cache(maxsize=4096)
def _digest(text: str) -> str:
    """sha256 of a query's cache key, computed once for the several sources a lookup asks."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fresh_ttl_s(source: SourceConfig, result: SourceResult) -> float:
    """How long `result` stays fresh, by outcome; 0 means it is never stored.

    Only answers are cached: found and not_found. Unavailable (timeout, captcha, blocked, rate limited,
    upstream or parse errors, an open circuit), manual and skipped results are never stored."""
    if result.outcome == Outcome.FOUND:
        return float(source.cache.found_s)
    if result.outcome == Outcome.NOT_FOUND:
        return float(source.cache.not_found_s)
    return 0.0


def make_envelope(source: SourceConfig, result: SourceResult, now: float, fresh_s: float) -> Envelope:
    return Envelope(
        stored_at=now,
        expires_at=now + fresh_s,
        stale_until=now + fresh_s + float(source.cache.max_stale_s),
        result=result,
    )
