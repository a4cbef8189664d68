"""The audit log's writer and its plain reader.

Every lookup made with a key (single or batch) is written here before its answer is returned; if the
entry cannot be written the answer is not shown (`AuditUnavailable`, 503): access to personal data is
never unlogged. Public lookups are logged only when their name was not checked for the budget (key id "-",
role public), so that regulators see who keeps guessing names. Other actions (uploads, keys, webhook
changes, campaign runs) are written with `record_action`.

    log = AuditLog(engine)
    await log.write([AuditEntry.now(principal, action="lookup", number="T110...", verdict="valid", ...)])
    await log.record_action(principal, "webhook_change", detail={"webhook_id": 7, "change": "created"})
    await log.read(limit=50, key_id="3f9a0c1d2e4b")

Each write appends to the hash chain (`chain.py`) inside one transaction that holds the append lock, so
entries from any number of writers, processes and machines form one linear chain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.audit.chain import SqliteAppend, head, link_rows, lock_for_append
from aggregator.audit.entry import Actor, AuditEntry
from aggregator.errors import register
from aggregator.records.database import write_transaction
from aggregator.records.schema import audit_log

log = logging.getLogger(__name__)

MAX_READ = 1000


class AuditUnavailable(Exception):
    """The audit log could not be written, so personal data is not shown (fail closed)."""


register(AuditUnavailable, 503, 75, "audit-unavailable", "审计日志暂不可写，为保护个人信息暂停查询", "the audit log cannot be written, so lookups by key are paused")  # fmt: skip

_Waiting = tuple[list[dict[str, Any]], "asyncio.Future[None]"]


class AuditLog:
    """The audit log in the records database.

    Writes are group-committed: while one transaction is being written, the writes that arrive meanwhile
    queue up and go into the next transaction together, so concurrent lookups do not each take the
    database's write lock (nor the chain's append lock). Each `write` still returns only once its own
    entries are committed."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._queue: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None
        # SQLite: the whole append in one call in the driver's thread (one hop, not one per statement)
        self._sqlite = SqliteAppend(engine.dialect) if engine.dialect.name == "sqlite" else None

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def write(self, entries: Sequence[AuditEntry]) -> None:
        """Store entries, committed before this returns; `AuditUnavailable` if the database refuses."""
        if not entries:
            return
        rows = [e.row() for e in entries]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((rows, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="certq-audit-writer")
        await done

    async def record_action(
        self,
        actor: Actor,
        action: str,
        *,
        detail: dict[str, Any] | None = None,
        number: str = "",
        purpose: str | None = None,
        client_ip: str | None = None,
        job_id: str | None = None,
    ) -> AuditEntry:
        """Audit an action that is not a lookup (see `entry.ACTIONS`: upload, key_create, key_revoke,
        webhook_change, campaign_run); `detail` says what was done (never a secret). Raises
        `AuditUnavailable` if it cannot be written."""
        entry = AuditEntry.action_by(
            actor, action, detail=detail, number=number, purpose=purpose, client_ip=client_ip, job_id=job_id
        )
        await self.write([entry])
        return entry

    async def _drain(self) -> None:
        """Write what is queued, then what queued up meanwhile, until nothing is left."""
        batch: list[_Waiting] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                error = await self._insert([row for rows, _ in batch for row in rows])
                if error is not None and len(batch) > 1:  # whose rows were refused? each on its own
                    for rows, done in batch:
                        _settle(done, await self._insert(rows))
                else:
                    for _, done in batch:
                        _settle(done, error)
                batch = []
        finally:  # cancelled (shutdown): nobody may wait for a write that will not happen
            stopped = RuntimeError("the audit writer stopped before writing these entries")
            for _, done in batch + self._queue:
                _settle(done, stopped)  # as AuditUnavailable: the lookup is refused, never answered unlogged
            self._queue = []

    async def _insert(self, rows: list[dict[str, Any]]) -> Exception | None:
        try:
            if self._sqlite is not None:
                async with self._engine.connect() as conn:
                    # aiosqlite.Connection: `_execute` runs a function in its thread on its sqlite3 connection
                    # (aiosqlite's own queue, private but what its every method uses; tests/core/test_audit_append.py)
                    driver = (await conn.get_raw_connection()).driver_connection
                    await driver._execute(self._sqlite, driver._connection, rows)
            else:
                async with write_transaction(self._engine) as conn:
                    await lock_for_append(conn)
                    prev_hash, seq = await head(conn)
                    await conn.execute(insert(audit_log), link_rows(rows, prev_hash, seq))
        except Exception as e:  # noqa: BLE001 - reported to every writer of these rows as AuditUnavailable
            log.error("audit log write failed: %s", e)
            return e
        return None

    async def read(self, *, limit: int = 100, key_id: str | None = None) -> list[AuditEntry]:
        """The newest entries first, at most `limit` (capped at 1000), optionally of one key."""
        limit = max(1, min(limit, MAX_READ))
        stmt = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if key_id:
            stmt = stmt.where(audit_log.c.key_id == key_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [AuditEntry.from_row(r._mapping) for r in rows]


def _settle(done: asyncio.Future[None], error: Exception | None) -> None:
    if done.done():  # the writer gave up waiting (its request was cancelled)
        return
    if error is None:
        done.set_result(None)
    else:
        failure = AuditUnavailable(str(error))
        failure.__cause__ = error
        done.set_exception(failure)
