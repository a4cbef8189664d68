"""The last live answers: what each live source said about a query, kept in the database, one row per change.

    history = LiveHistory(store.engine)
    history.keep(source.id, query, result)              # after a live source answered found / not_found
    await history.flush()                               # (tests, shutdown) wait until what was kept is written
    last = await history.last(source.id, query)         # its newest definitive answer, or None

The cache forgets (a TTL, an evicted entry, a Redis that died): this does not. When a live source is
unavailable, the gateway answers with the source's last definitive answer from here, marked stale, so that
a suspension seen yesterday does not turn back into the older upload's "valid" because a cache went away.

- A row is written only when the answer changes (its certificates or its outcome); the same answer again
  only moves `last_seen`, at most once per `CONFIRM_EVERY_S`. The rows of one certificate over time are the
  history that a lookup "as of a past date" reads.
- Writes never hold up a lookup: `keep` queues, and one writer per process writes what has queued up in one
  transaction (group commit), after reading outside the write lock what is already there.
- `last` prefers the answer to the very same query; failing that, the newest answer that found the
  number, whatever name it was asked with (a card found for an employer's lookup with a name is still that
  card when the public asks without one). A "not found" is only reused for the same query: asked with
  another name, a source queried by name may well have found something.
- Queries are stored as digests (a query may hold a name); the number asked about is kept in clear.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.models import Outcome, Query, SourceResult
from aggregator.records.database import write_transaction
from aggregator.records.reads import as_utc
from aggregator.records.schema import live_answers

log = logging.getLogger(__name__)

CONFIRM_EVERY_S = 3600.0  # how often an unchanged answer refreshes its row's last_seen
MEMO_ENTRIES = 50_000  # queries whose newest stored content this process remembers
MAX_QUEUED = 10_000  # answers waiting to be written; beyond this the oldest are dropped (and counted)
WARN_EVERY_S = 60.0  # at most one warning a minute about failed writes
DEFINITIVE = (Outcome.FOUND, Outcome.NOT_FOUND)


def query_digest(source_id: str, query: Query) -> str:
    return hashlib.sha256(f"{source_id}\x1f{query.cache_key()}".encode()).hexdigest()


def content_digest(result: SourceResult) -> str:
    """What the answer says, independent of when and how fast it was fetched."""
    body = result.model_dump_json(include={"outcome", "certificates"})
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class _Pending:
    source: str
    query_digest: str
    number: str
    outcome: str
    content_digest: str
    result: str
    seen: datetime


class LiveHistory:
    """Definitive live answers per (source, query), in the records database (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # query digest -> (content digest of the newest row, monotonic time its last_seen was written)
        self._memo: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._queue: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self.written = 0  # rows inserted by this process
        self.dropped = 0  # answers not kept: the queue was full, or the database refused
        self._warned_at = -WARN_EVERY_S

    # --- keeping ---------------------------------------------------------------------------------

    def keep(self, source_id: str, query: Query, result: SourceResult) -> bool:
        """Queue `result` for the history if it is a definitive live answer this process has not kept lately
        with the same content. True when it was queued. Never waits."""
        if result.outcome not in DEFINITIVE or result.from_cache or result.stale:
            return False
        qd = query_digest(source_id, query)
        cd = content_digest(result)
        memo = self._memo.get(qd)
        if memo is not None and memo[0] == cd and time.monotonic() - memo[1] < CONFIRM_EVERY_S:
            return False
        self._remember(qd, cd)
        if len(self._queue) >= MAX_QUEUED:
            self._queue.pop(0)
            self.dropped += 1
        self._queue.append(
            _Pending(
                source=source_id,
                query_digest=qd,
                number=query.number,
                outcome=result.outcome.value,
                content_digest=cd,
                result=result.model_dump_json(exclude={"elapsed_ms"}),
                seen=result.fetched_at or datetime.now(UTC),
            )
        )
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_all())
        return True

    async def record(self, source_id: str, query: Query, result: SourceResult) -> bool:
        """`keep`, then wait until it is written (tests, tools). True when a new row was written."""
        before = self.written
        self.keep(source_id, query, result)
        await self.flush()
        return self.written > before

    async def flush(self) -> None:
        """Wait until everything queued so far is written (or given up)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def _write_all(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await self._write(batch)
            except Exception as e:  # noqa: BLE001 - the answers were given; only their history is missing
                self.dropped += len(batch)
                for p in batch:
                    self._memo.pop(p.query_digest, None)  # try again when the answer comes again
                self.warn(f"{len(batch)} live answer(s) not kept in the history: {type(e).__name__}: {e}")

    async def _write(self, batch: list[_Pending]) -> None:
        newest: dict[tuple[str, str], _Pending] = {}
        for p in batch:  # of one query, only the newest answer of this batch matters
            newest[(p.source, p.query_digest)] = p
        # Read what is there outside the write lock; only changes take it.
        stored = await self._newest_rows(list(newest))
        inserts, confirms = [], []
        for key, p in newest.items():
            row = stored.get(key)
            if row is None or row.content_digest != p.content_digest:
                inserts.append(p)
            elif (p.seen - as_utc(row.last_seen)).total_seconds() >= CONFIRM_EVERY_S:
                confirms.append({"row_id": row.id, "seen": p.seen})
        if not inserts and not confirms:
            return
        async with write_transaction(self.engine) as conn:
            if inserts:
                await conn.execute(
                    live_answers.insert(),
                    [
                        {
                            "source": p.source,
                            "query_digest": p.query_digest,
                            "number": p.number,
                            "outcome": p.outcome,
                            "content_digest": p.content_digest,
                            "result": p.result,
                            "first_seen": p.seen,
                            "last_seen": p.seen,
                        }
                        for p in inserts
                    ],
                )
            if confirms:
                await conn.execute(
                    live_answers.update()
                    .where(live_answers.c.id == sa.bindparam("row_id"))
                    .values(last_seen=sa.bindparam("seen")),
                    confirms,
                )
        self.written += len(inserts)

    async def _newest_rows(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        out: dict[tuple[str, str], Any] = {}
        async with self.engine.connect() as conn:
            for start in range(0, len(keys), 200):
                part = keys[start : start + 200]
                newest = (
                    sa.select(sa.func.max(live_answers.c.id))
                    .where(sa.tuple_(live_answers.c.source, live_answers.c.query_digest).in_(part))
                    .group_by(live_answers.c.source, live_answers.c.query_digest)
                )
                rows = await conn.execute(
                    sa.select(
                        live_answers.c.id,
                        live_answers.c.source,
                        live_answers.c.query_digest,
                        live_answers.c.content_digest,
                        live_answers.c.last_seen,
                    ).where(live_answers.c.id.in_(newest))
                )
                for row in rows:
                    out[(row.source, row.query_digest)] = row
        return out

    # --- reading ---------------------------------------------------------------------------------

    async def last(self, source_id: str, query: Query) -> SourceResult | None:
        """The newest definitive answer kept for (source, query), or else the newest one of the source that
        found the number; None when there is neither."""
        qd = query_digest(source_id, query)
        same_query = (
            sa.select(live_answers.c.result)
            .where(live_answers.c.source == source_id, live_answers.c.query_digest == qd)
            .order_by(live_answers.c.id.desc())
            .limit(1)
        )
        found_number = (
            sa.select(live_answers.c.result)
            .where(
                live_answers.c.number == query.number,
                live_answers.c.source == source_id,
                live_answers.c.outcome == Outcome.FOUND.value,
            )
            .order_by(live_answers.c.first_seen.desc(), live_answers.c.id.desc())
            .limit(1)
        )
        async with self.engine.connect() as conn:
            await conn.execution_options(certq_single_read=True)
            result = (await conn.execute(same_query)).scalar()
            if result is None:
                result = (await conn.execute(found_number)).scalar()
        return None if result is None else SourceResult.model_validate_json(result)

    # --- helpers ---------------------------------------------------------------------------------

    def _remember(self, qd: str, cd: str) -> None:
        self._memo[qd] = (cd, time.monotonic())
        self._memo.move_to_end(qd)
        while len(self._memo) > MEMO_ENTRIES:
            self._memo.popitem(last=False)

    def warn(self, message: str) -> None:
        """Log a failure of the history at most once per WARN_EVERY_S (a struggling database must not also
        flood the log)."""
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning("%s (%d dropped so far; at most one such warning a minute)", message, self.dropped)

    def forget(self) -> None:
        """Drop this process's memo (tests; after the table was changed behind its back)."""
        self._memo.clear()
