"""The name-check budget's database side: the names each caller tried, per certificate and UTC day, in the
`name_checks` table that every instance on one database shares (see `namebudget` for the budget itself).

    names = DatabaseNames(engine)
    await names.admit_many("key:3f9a0c1d2e4b", "2026-12-02", [(number, digest), ...], budget=5, now=now)

Calls are grouped as the audit log's writes are: while one transaction is being written, the calls that
arrive meanwhile queue up and are decided together in the next one, call after call in arrival order, as
separate transactions would decide them; each caller gets its own answers, and an error reaches every caller of
the group. The transaction is serialised per caller and day, so that concurrent requests on any instance never
admit more than the budget:

- SQLite: the write lock (BEGIN IMMEDIATE); the whole transaction is one call in the driver's thread
  (`SqliteNames`, as the audit log's append does), and a group that adds no name needs no write lock;
- PostgreSQL: an advisory transaction lock per (caller, day), all of a group's taken in one statement in
  ascending order (groups on different instances cannot deadlock), then one read per 500 numbers and one insert.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, text, tuple_
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.records.database import dialect_insert
from aggregator.web.tables import deployment_secret, name_checks, write_transaction

log = logging.getLogger(__name__)

_LOCK_CLASS = 7346  # PostgreSQL advisory lock namespace (records.store uses 7345)
_CHUNK = 500  # numbers per IN (...) query


def _pg_lock_key(caller: str, day: str) -> int:
    """An int4 for pg_advisory_xact_lock(class, key) from a caller and day."""
    return int.from_bytes(hashlib.sha256(f"{caller}|{day}".encode()).digest()[:4], "big", signed=True)


# PostgreSQL: every (caller, day) lock of a transaction in one statement, in ascending order (the sorted subquery
# is not flattened, and the aggregate takes its rows in that order), so that two transactions never wait for
# each other's locks in a cycle.
_PG_LOCKS = text(
    "SELECT count(pg_advisory_xact_lock(:c, k)) FROM (SELECT DISTINCT unnest(CAST(:keys AS integer[])) AS k"
    " ORDER BY k) AS ordered"
)


@dataclass
class _Asked:
    """One `DatabaseNames.admit_many` call waiting for the transaction that decides it."""

    caller: str
    day: str
    items: Sequence[tuple[str, str]]  # (number, digest), in order
    budget: int
    now: datetime
    answer: asyncio.Future[list[bool]]


_Tried = dict[tuple[str, str, str], set[str]]  # (caller, day, number) -> digests tried
_TRIPLE = tuple_(name_checks.c.caller, name_checks.c.day, name_checks.c.number)


def _decide(group: Sequence[_Asked], tried: _Tried) -> tuple[list[list[bool]], list[dict[str, Any]]]:
    """Each call's answers, call after call in arrival order as separate transactions would give them, and the
    rows to insert. `tried` holds what the database had for the numbers asked; it is updated as names are
    admitted, so a later call of the group sees what an earlier one added."""
    answers: list[list[bool]] = []
    new: list[dict[str, Any]] = []
    for asked in group:
        out: list[bool] = []
        for number, digest in asked.items:
            seen = tried.setdefault((asked.caller, asked.day, number), set())
            if digest in seen:
                out.append(True)
            elif len(seen) < asked.budget:
                seen.add(digest)
                new.append(
                    {"caller": asked.caller, "number": number, "day": asked.day, "name_digest": digest, "at": asked.now}
                )
                out.append(True)
            else:
                out.append(False)
        answers.append(out)
    return answers, new


def _numbers_asked(group: Sequence[_Asked]) -> dict[tuple[str, str], list[str]]:
    """Per (caller, day) of the group, the numbers asked (sorted, each once)."""
    numbers: dict[tuple[str, str], set[str]] = defaultdict(set)
    for asked in group:
        numbers[(asked.caller, asked.day)].update(number for number, _ in asked.items)
    return {k: sorted(v) for k, v in numbers.items()}


class SqliteNames:
    """A group's transaction as one function run in aiosqlite's thread on its `sqlite3` connection: BEGIN
    IMMEDIATE (the write lock, as `write_transaction`), the reads, the decisions, the insert, COMMIT; rolled
    back if anything raises. The statements are SQLAlchemy's own, compiled once, each value through its
    column's bind processor, so the rows are those the SQLAlchemy path stores (see `chain.SqliteAppend`).

    A group whose names are all decided without adding one (tried already: admitted; refused where the budget
    is spent) is answered from a read alone, without the write lock: rows are only added during their day, so
    neither answer can change whatever the group's order or what other writers do meanwhile."""

    def __init__(self, dialect: Dialect) -> None:
        columns = ["caller", "number", "day", "name_digest", "at"]
        insert = _insert_absent_for(dialect.name).compile(dialect=dialect, column_keys=columns)
        self.columns = list(insert.positiontup or ())
        self.insert_sql = str(insert)
        self.processors = [name_checks.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in self.columns]
        self.select_sql = "SELECT number, name_digest FROM name_checks WHERE caller = ? AND day = ? AND number IN ({})"

    def __call__(self, db: Any, group: Sequence[_Asked]) -> list[list[bool]]:
        answers, new = _decide(group, self._tried(db, group))  # without the lock: see the class doc
        if not new:
            return answers
        db.execute("BEGIN IMMEDIATE")
        try:
            answers, new = _decide(group, self._tried(db, group))
            if new:
                pairs = list(zip(self.columns, self.processors, strict=True))
                db.executemany(self.insert_sql, [tuple(p(r[c]) if p else r[c] for c, p in pairs) for r in new])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return answers

    def _tried(self, db: Any, group: Sequence[_Asked]) -> _Tried:
        tried: _Tried = {}
        for (caller, day), numbers in _numbers_asked(group).items():
            for i in range(0, len(numbers), _CHUNK):
                chunk = numbers[i : i + _CHUNK]
                sql = self.select_sql.format(",".join("?" * len(chunk)))
                for number, digest in db.execute(sql, (caller, day, *chunk)):
                    tried.setdefault((caller, day, number), set()).add(digest)
        return tried


def _insert_absent_for(dialect: str) -> Any:
    """An INSERT that skips rows already present."""
    return dialect_insert(dialect, name_checks).on_conflict_do_nothing()


class DatabaseNames:
    """The tried names in the `name_checks` table (every instance on one database shares them).

    Calls are grouped as the audit log's writes are: while one transaction is being written, the calls that
    arrive meanwhile queue up and are decided together in the next one, so concurrent requests do not each
    take the database's write lock. Each call still returns only once its own names are committed."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._pruned: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._queue: list[_Asked] = []
        self._writer: asyncio.Task[None] | None = None
        self._sqlite = SqliteNames(engine.dialect) if engine.dialect.name == "sqlite" else None
        self.groups = 0  # groups decided (each one transaction, or one read): how well calls group

    async def admit_many(
        self, caller: str, day: str, items: Sequence[tuple[str, str]], budget: int, now: datetime
    ) -> list[bool]:
        """For each (number, digest), in order: True if it was tried already today or fits the budget (then
        it is recorded), else False. Decided in a write transaction serialised per caller and day, together
        with the calls queued with it; the transaction's error if it fails."""
        self._prune_before(day)
        answer: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Asked(caller, day, items, budget, now, answer))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="certq-name-checks")
        return await answer

    async def _drain(self) -> None:
        """Decide what is queued, then what queued up meanwhile, until nothing is left."""
        group: list[_Asked] = []
        try:
            while self._queue:
                queued, self._queue = self._queue, []
                group = [a for a in queued if not a.answer.done()]  # done: its caller gave up before it was asked
                if not group:
                    continue
                try:
                    answers = await self._transaction(group)
                except Exception as e:  # noqa: BLE001 - every caller of the group gets it (each fails closed)
                    for asked in group:
                        if not asked.answer.done():
                            asked.answer.set_exception(e)
                else:
                    for asked, out in zip(group, answers, strict=True):
                        if not asked.answer.done():
                            asked.answer.set_result(out)
                group = []
        finally:  # cancelled (shutdown): nobody may wait for an answer that will not come
            for asked in group + self._queue:
                if not asked.answer.done():
                    asked.answer.set_exception(RuntimeError("the name checks stopped before deciding these names"))
            self._queue = []

    async def _transaction(self, group: list[_Asked]) -> list[list[bool]]:
        self.groups += 1
        if self._sqlite is not None:
            async with self._engine.connect() as conn:
                # aiosqlite.Connection: `_execute` runs a function in its thread on its sqlite3 connection
                # (as `AuditLog._insert` does: aiosqlite's own queue, private but what its every method uses)
                driver = (await conn.get_raw_connection()).driver_connection
                return await driver._execute(self._sqlite, driver._connection, group)  # type: ignore[no-any-return]
        async with write_transaction(self._engine) as conn:
            asked = _numbers_asked(group)
            if conn.dialect.name == "postgresql":
                keys = sorted({_pg_lock_key(caller, day) for caller, day in asked})
                await conn.execute(_PG_LOCKS, {"c": _LOCK_CLASS, "keys": keys})
            tried: _Tried = {}
            triples = [(caller, day, number) for (caller, day), numbers in asked.items() for number in numbers]
            for i in range(0, len(triples), _CHUNK):  # every caller of the group in one query (a chunk at a time)
                stmt = select(*_TRIPLE.clauses, name_checks.c.name_digest).where(_TRIPLE.in_(triples[i : i + _CHUNK]))
                for caller, day, number, digest in (await conn.execute(stmt)).all():
                    tried.setdefault((caller, day, number), set()).add(digest)
            answers, new = _decide(group, tried)
            if new:
                await conn.execute(_insert_absent_for(conn.dialect.name), new)
        return answers

    async def salt(self) -> bytes:
        """The deployment's random HMAC key, made by whichever instance asks first."""
        return await deployment_secret(self._engine, "name_digest_key")

    def _prune_before(self, day: str) -> None:
        """Once a day per process, in the background: delete the rows of past days."""
        if self._pruned == day:
            return
        self._pruned = day

        async def prune() -> None:
            try:
                async with write_transaction(self._engine) as conn:
                    await conn.execute(delete(name_checks).where(name_checks.c.day < day))
            except Exception as e:  # noqa: BLE001 - tomorrow's clean-up tries again
                log.warning("could not delete past name checks: %s", e)

        task = asyncio.get_running_loop().create_task(prune(), name="certq-name-checks-prune")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
