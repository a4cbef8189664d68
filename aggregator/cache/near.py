"""The near tier: decoded fresh answers kept in process, in front of the backend (the in-process LRU or Redis).

A hit here costs a dict lookup instead of a Redis round trip and a JSON parse, and returns the same
`SourceResult` object every time, so that what is built from it (the merged answer) can be kept too, keyed
by the identity of the results it was built from. Results kept here are shared: nobody may change them.

Each entry carries its envelope's `stored_at` as its version and is never served past the envelope's own
freshness (`expires_at`), whatever happens to invalidation messages. On Redis, another instance's store of
a key (a newer version) drops the key here (`drop`); a read that raced such a message is not kept
(`put` refuses a version older than one announced in the last `RECENT_S` seconds).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aggregator.models import SourceResult


@dataclass(slots=True)
class NearEntry:
    result: SourceResult  # marked from_cache=True, stale=False; shared, never changed
    expires_at: float  # the envelope's: fresh until (cache clock)
    version: float  # the envelope's stored_at
    raw: object = None  # in front of the in-process LRU: the stored value it was decoded from


class NearTier:
    """A bounded LRU of decoded fresh answers, keyed by cache key."""

    RECENT_S = 10.0  # how long an announced version is remembered against a read that raced it

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1:
            raise ValueError(f"near tier max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, NearEntry] = OrderedDict()
        self._announced: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (seen at, version)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, now: float) -> NearEntry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry.expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, result: SourceResult, expires_at: float, version: float, raw: object = None) -> None:
        """Keep `result` (already marked as a hit) unless a newer version of the key was announced meanwhile."""
        announced = self._announced.get(key)
        if announced is not None and announced[1] > version:
            return
        current = self._entries.get(key)
        if current is not None and current.version > version:
            return
        self._entries[key] = NearEntry(result, expires_at, version, raw)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop(self, key: str, version: float | None = None) -> None:
        """Another instance stored `version` of `key` (None: removed it): forget any older copy kept here."""
        if version is None:
            self._entries.pop(key, None)
            return
        now = self._clock()
        self._announced[key] = (now, version)
        self._announced.move_to_end(key)
        while self._announced:
            oldest_key, (seen_at, _) = next(iter(self._announced.items()))
            if now - seen_at < self.RECENT_S and len(self._announced) <= 4 * self.max_entries:
                break
            del self._announced[oldest_key]
        current = self._entries.get(key)
        if current is not None and current.version < version:
            del self._entries[key]

    def drop_matching(self, fragment: str) -> int:
        """Forget every key containing `fragment` (a purge of one source); how many were dropped."""
        doomed = [k for k in self._entries if fragment in k]
        for k in doomed:
            del self._entries[k]
        return len(doomed)

    def clear(self) -> None:
        self._entries.clear()
        self._announced.clear()
