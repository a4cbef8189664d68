"""The audit log: who looked up which number, in what role, why, and what the answer was.

Every lookup made with a key (single or batch) is written here before its answer is returned; if the
entry cannot be written the answer is not shown (`AuditUnavailable`, 503): access to personal data is
never unlogged. The holder's name is never logged, only whether one was given and what became of it
(`name_check`: match, mismatch, unknown, not_checked when the daily name-check budget was spent). Public
lookups are logged only when their name was not checked for the budget (key id "-", role public), so that
regulators see who keeps guessing names.

    log = AuditLog(engine)
    await log.write([AuditEntry.now(principal, action="lookup", number="T110...", verdict="valid", ...)])
    await log.read(limit=50, key_id="3f9a0c1d2e4b")
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.web.problems import AuditUnavailable
from aggregator.web.roles import Principal
from aggregator.web.tables import audit_log, write_transaction

log = logging.getLogger(__name__)

MAX_PURPOSE = 500
MAX_READ = 1000
ANONYMOUS_KEY_ID = "-"  # audit_log.key_id of a public (keyless) caller's entry


@dataclass(frozen=True)
class AuditEntry:
    """One lookup by a key (or a public lookup whose name was refused). `id` is set once stored."""

    at: datetime
    key_id: str
    role: str
    action: str  # lookup | verification
    number: str
    name_given: bool
    id_number_given: bool
    verdict: str | None
    purpose: str | None = None
    client_ip: str | None = None
    name_check: str | None = None  # match | mismatch | unknown | not_checked; None: no name given
    id: int | None = field(default=None, compare=False)

    @classmethod
    def now(
        cls,
        principal: Principal,
        *,
        action: str,
        number: str,
        name_given: bool,
        id_number_given: bool,
        verdict: str | None,
        purpose: str | None,
        client_ip: str | None,
        name_check: str | None = None,
    ) -> AuditEntry:
        return cls(
            at=datetime.now(UTC),
            key_id=principal.key_id or ANONYMOUS_KEY_ID,
            role=principal.role.value,
            action=action,
            number=number[:64],
            name_given=name_given,
            id_number_given=id_number_given,
            verdict=verdict,
            purpose=(purpose or None) and purpose[:MAX_PURPOSE],
            client_ip=client_ip,
            name_check=name_check,
        )

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["at"] = self.at.isoformat()
        return out


_Waiting = tuple[list[dict[str, Any]], "asyncio.Future[None]"]


class AuditLog:
    """The audit log in the records database.

    Writes are group-committed: while one transaction is being written, the writes that arrive meanwhile
    queue up and go into the next transaction together, so concurrent lookups do not each take the
    database's write lock (on SQLite they would otherwise queue on it, sleeping in its busy handler).
    Each `write` still returns only once its own entries are committed."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._queue: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None

    async def write(self, entries: Sequence[AuditEntry]) -> None:
        """Store entries, committed before this returns; `AuditUnavailable` if the database refuses."""
        if not entries:
            return
        rows = [{k: v for k, v in asdict(e).items() if k != "id"} for e in entries]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((rows, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="certq-audit-writer")
        await done

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
            async with write_transaction(self._engine) as conn:
                await conn.execute(insert(audit_log), rows)
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
        out = []
        for r in rows:
            m = dict(r._mapping)
            at = m["at"]
            m["at"] = at if at.tzinfo else at.replace(tzinfo=UTC)
            out.append(AuditEntry(**m))
        return out


def _settle(done: asyncio.Future[None], error: Exception | None) -> None:
    if done.done():  # the writer gave up waiting (its request was cancelled)
        return
    if error is None:
        done.set_result(None)
    else:
        failure = AuditUnavailable(str(error))
        failure.__cause__ = error
        done.set_exception(failure)
