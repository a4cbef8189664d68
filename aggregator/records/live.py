"""The last live answers: what each live source said about a query, kept in the database, one row per change.

    history = LiveHistory(store.engine)
    await history.record(source.id, query, result)      # after a live source answered found / not_found
    last = await history.last(source.id, query)         # its newest definitive answer, or None

The cache forgets (a TTL, an evicted entry, a Redis that died): this does not. When a live source is
unavailable, the gateway answers with the source's last definitive answer from here, marked stale, so that
a suspension seen yesterday does not turn back into the older upload's "valid" because a cache went away.

A row is written only when the answer changes (its certificates or its outcome); the same answer again
only moves `last_seen`, at most once per `CONFIRM_EVERY_S` per process. The rows of one certificate over
time are the history that a lookup "as of a past date" reads. Queries are stored as digests (a query may
hold a name); the number asked about is kept in clear for that history.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.models import Outcome, Query, SourceResult
from aggregator.records.schema import live_answers

log = logging.getLogger(__name__)

CONFIRM_EVERY_S = 3600.0  # how often an unchanged answer refreshes its row's last_seen
MEMO_ENTRIES = 50_000  # queries whose newest stored content this process remembers
DEFINITIVE = (Outcome.FOUND, Outcome.NOT_FOUND)


def query_digest(source_id: str, query: Query) -> str:
    return hashlib.sha256(f"{source_id}\x1f{query.cache_key()}".encode()).hexdigest()


def content_digest(result: SourceResult) -> str:
    """What the answer says, independent of when and how fast it was fetched."""
    body = result.model_dump_json(include={"outcome", "certificates"})
    return hashlib.sha256(body.encode()).hexdigest()


class LiveHistory:
    """Definitive live answers per (source, query), in the records database (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine, *, clock: type[datetime] = datetime) -> None:
        self.engine = engine
        self._clock = clock
        # query digest -> (content digest of the newest row, monotonic time its last_seen was written)
        self._memo: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def record(self, source_id: str, query: Query, result: SourceResult) -> bool:
        """Keep `result` if it is a definitive live answer that differs from the newest one kept. True when a
        new row was written."""
        if result.outcome not in DEFINITIVE or result.from_cache or result.stale:
            return False
        qd = query_digest(source_id, query)
        cd = content_digest(result)
        now = time.monotonic()
        memo = self._memo.get(qd)
        if memo is not None and memo[0] == cd and now - memo[1] < CONFIRM_EVERY_S:
            return False
        seen = result.fetched_at or self._clock.now(UTC)
        async with self.engine.connect() as conn:
            await conn.execution_options(certq_write=True)
            async with conn.begin():
                newest = (
                    await conn.execute(
                        sa.select(live_answers.c.id, live_answers.c.content_digest)
                        .where(live_answers.c.source == source_id, live_answers.c.query_digest == qd)
                        .order_by(live_answers.c.id.desc())
                        .limit(1)
                    )
                ).first()
                if newest is not None and newest.content_digest == cd:
                    await conn.execute(
                        live_answers.update().where(live_answers.c.id == newest.id).values(last_seen=seen)
                    )
                    changed = False
                else:
                    await conn.execute(
                        live_answers.insert().values(
                            source=source_id,
                            query_digest=qd,
                            number=query.number,
                            outcome=result.outcome.value,
                            content_digest=cd,
                            result=result.model_dump_json(exclude={"elapsed_ms"}),
                            first_seen=seen,
                            last_seen=seen,
                        )
                    )
                    changed = True
        self._remember(qd, cd, now)
        return changed

    async def last(self, source_id: str, query: Query) -> SourceResult | None:
        """The newest definitive answer kept for (source, query), as it was given, or None."""
        qd = query_digest(source_id, query)
        async with self.engine.connect() as conn:
            await conn.execution_options(certq_single_read=True)
            row = (
                await conn.execute(
                    sa.select(live_answers.c.result, live_answers.c.last_seen)
                    .where(live_answers.c.source == source_id, live_answers.c.query_digest == qd)
                    .order_by(live_answers.c.id.desc())
                    .limit(1)
                )
            ).first()
        if row is None:
            return None
        return SourceResult.model_validate_json(row.result)

    def _remember(self, qd: str, cd: str, now: float) -> None:
        self._memo[qd] = (cd, now)
        self._memo.move_to_end(qd)
        while len(self._memo) > MEMO_ENTRIES:
            self._memo.popitem(last=False)

    def forget(self) -> None:
        """Drop this process's memo (tests; after the table was changed behind its back)."""
        self._memo.clear()
