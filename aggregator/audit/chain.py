"""Tamper evidence: every audit entry carries the hash of the one before it, and `verify` walks the chain.

    prev, seq = await head(conn)                     # inside the writer's locked transaction
    rows = link_rows(rows, prev, seq)                # seq, prev_hash and hash for each new row
    report = await verify(engine)                    # the first entry changed, removed or inserted, if any
    report = await verify(engine, anchor=(41_237, "9f3c..."))   # ... and the head noted elsewhere is still there

hash(n) = sha256(hash(n - 1) + "\\n" + canonical(entry n)), hash(0) = 64 zeros; `canonical` is the entry's
chained columns (`CHAINED`) as compact JSON with sorted keys, times in UTC with microseconds. `seq` numbers
the chain 1, 2, 3 ... without gaps (a unique index: two writers can never take the same place), so:

- an entry edited in place no longer matches its own hash: **changed** (named by id);
- an entry deleted leaves a gap in `seq`: **removed** (the positions, and the ids either side);
- a row inserted by hand has no `seq` (or repeats one, or breaks the link): **inserted**;
- an entry edited and re-hashed breaks the next entry's `prev_hash`: **changed** (the re-hashed one).

Appends are serialised (the writer holds PostgreSQL's advisory lock `LOCK`, or SQLite's write lock), so
writers on any number of processes and machines extend one linear chain. On SQLite `SqliteAppend` makes the
whole append (BEGIN IMMEDIATE, head, link, insert, COMMIT) one call in the driver's thread instead of a thread
hop per statement; the rows it stores are those SQLAlchemy's insert would store (the columns' own bind
processors), so readers and `verify` cannot tell the two apart.

What it does not catch: someone who can write to the database can recompute every hash after the entry they
changed, or cut entries off the end. Only a head hash kept somewhere else (`certq audit head`, printed into a
ticket or a regulator's report) catches that: `verify(anchor=...)` checks the anchored entry is still there
with the same hash. Rows from before migration 0007 have no hash and are not covered (`legacy`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aggregator.records.schema import audit_log

GENESIS = "0" * 64
#: PostgreSQL advisory lock (class, key) held while appending (records uses class 7345, the name budget 7346).
LOCK = (7314, 1)
CHAINED = (
    "seq", "at", "key_id", "role", "action", "number", "name_given", "id_number_given", "verdict", "purpose",
    "client_ip", "name_check", "holder_id_number", "job_id", "detail",
)  # fmt: skip
_WALK_BATCH = 5000


def _at(value: datetime) -> str:
    value = value.astimezone(UTC) if value.tzinfo else value
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(row: Mapping[str, Any]) -> bytes:
    """The chained columns of an entry as compact, key-sorted JSON (UTF-8)."""
    doc = {k: (_at(row[k]) if k == "at" else row.get(k)) for k in CHAINED}
    return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def entry_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(row)).hexdigest()


async def lock_for_append(conn: AsyncConnection) -> None:
    """Take the append lock for the rest of this (write) transaction. SQLite's BEGIN IMMEDIATE already did."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:c, :k)"), {"c": LOCK[0], "k": LOCK[1]})


async def head(conn: AsyncConnection) -> tuple[str, int]:
    """The hash and seq of the newest chained entry ((GENESIS, 0) before the first)."""
    row = (await conn.execute(_HEAD)).first()
    return (row.hash, int(row.seq)) if row is not None else (GENESIS, 0)


_HEAD = (
    sa.select(audit_log.c.hash, audit_log.c.seq)
    .where(audit_log.c.seq.is_not(None))
    .order_by(audit_log.c.seq.desc())
    .limit(1)
)  # built once: the writer asks it once per transaction


def link_rows(rows: Iterable[dict[str, Any]], prev_hash: str, seq: int) -> list[dict[str, Any]]:
    """The rows, each given the next seq, the previous entry's hash and its own."""
    out = []
    for row in rows:
        seq += 1
        row = {**row, "seq": seq, "prev_hash": prev_hash}
        row["hash"] = prev_hash = entry_hash(prev_hash, row)
        out.append(row)
    return out


class SqliteAppend:
    """The append as one function run in aiosqlite's thread on its `sqlite3` connection (see the module doc).

    The INSERT is SQLAlchemy's own, compiled once for the dialect; each value goes through its column's bind
    processor as SQLAlchemy's executemany would (times as SQLite DATETIME text, booleans as 0/1)."""

    def __init__(self, dialect: sa.engine.Dialect) -> None:
        names = [c.name for c in audit_log.columns if c.name != "id"]
        compiled = sa.insert(audit_log).compile(dialect=dialect, column_keys=names)
        self.columns = [name for name in compiled.positiontup or ()]
        self.insert_sql = str(compiled)
        self.head_sql = str(_HEAD.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        self.processors = [
            audit_log.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in self.columns
        ]

    def __call__(self, db: Any, rows: list[dict[str, Any]]) -> None:
        """BEGIN IMMEDIATE (SQLite's write lock, as `write_transaction`), head, link, insert, COMMIT; rolled back
        if anything raises. `db` is the sqlite3 connection (autocommit mode: certq issues BEGIN itself)."""
        db.execute("BEGIN IMMEDIATE")
        try:
            head_row = db.execute(self.head_sql).fetchone()
            prev_hash, seq = (head_row[0], int(head_row[1])) if head_row is not None else (GENESIS, 0)
            linked = link_rows(rows, prev_hash, seq)
            pairs = list(zip(self.columns, self.processors, strict=True))
            db.executemany(
                self.insert_sql, [tuple(p(r.get(c)) if p else r.get(c) for c, p in pairs) for r in linked]
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


# --- verification ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainProblem:
    """The first place the chain does not hold."""

    kind: str  # changed | removed | inserted | anchor
    id: int | None  # the entry named (None: a removed entry's own id is gone)
    seq: int | None
    zh: str
    en: str

    @property
    def text(self) -> str:
        return f"{self.zh} ({self.en})"


@dataclass
class ChainReport:
    checked: int = 0  # chained entries walked
    legacy: int = 0  # entries from before the chain (no hash), not covered
    head_seq: int = 0
    head_hash: str = GENESIS
    problem: ChainProblem | None = None
    legacy_ids: tuple[int, int] | None = field(default=None)  # (lowest, highest) id of the legacy entries

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "legacy": self.legacy,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "problem": None if self.problem is None else {
                "kind": self.problem.kind, "id": self.problem.id, "seq": self.problem.seq,
                "zh": self.problem.zh, "en": self.problem.en,
            },
        }  # fmt: skip


_COLS = [audit_log.c.id, *(audit_log.c[k] for k in CHAINED), audit_log.c.prev_hash, audit_log.c.hash]


async def verify(engine: AsyncEngine, *, anchor: tuple[int, str] | None = None) -> ChainReport:
    """Walk the whole chain in seq order; the report names the first entry changed, removed or inserted."""
    report = ChainReport()
    async with engine.connect() as conn:
        first_chained = (
            await conn.execute(sa.select(sa.func.min(audit_log.c.id)).where(audit_log.c.seq.is_not(None)))
        ).scalar()
        legacy = sa.select(sa.func.count(), sa.func.min(audit_log.c.id), sa.func.max(audit_log.c.id)).where(
            audit_log.c.seq.is_(None)
        )
        if first_chained is not None:
            legacy = legacy.where(audit_log.c.id < first_chained)
        n, lo, hi = (await conn.execute(legacy)).one()
        report.legacy = int(n or 0)
        report.legacy_ids = (int(lo), int(hi)) if n else None
        problems: list[ChainProblem] = []
        if first_chained is not None:
            stray = (
                await conn.execute(
                    sa.select(audit_log.c.id)
                    .where(audit_log.c.seq.is_(None), audit_log.c.id > first_chained)
                    .order_by(audit_log.c.id)
                    .limit(1)
                )
            ).scalar()
            if stray is not None:
                problems.append(
                    ChainProblem(
                        "inserted", int(stray), None,
                        f"第 {stray} 条记录是后来插入的（不在哈希链中）",
                        f"entry id {stray} was inserted: it is not part of the hash chain",
                    )
                )  # fmt: skip
        walked = await _walk(conn, report, anchor)
        if walked is not None:
            problems.append(walked)
    if problems:  # the earliest in the log (by id) is the first
        report.problem = min(problems, key=lambda p: p.id if p.id is not None else 0)
    elif anchor is not None and report.head_seq < anchor[0]:
        report.problem = ChainProblem(
            "anchor", None, anchor[0],
            f"记录的链头（第 {anchor[0]} 位）已不在日志中：日志被截短",
            f"the anchored head (seq {anchor[0]}) is gone: entries were cut off the end",
        )  # fmt: skip
    return report


async def _walk(conn: AsyncConnection, report: ChainReport, anchor: tuple[int, str] | None) -> ChainProblem | None:
    expected_seq, expected_prev = 1, GENESIS
    prev_id: int | None = None
    after = 0
    while True:
        rows = (
            await conn.execute(
                sa.select(*_COLS)
                .where(audit_log.c.seq.is_not(None), audit_log.c.seq > after)
                .order_by(audit_log.c.seq, audit_log.c.id)
                .limit(_WALK_BATCH)
            )
        ).all()
        if not rows:
            return None
        for r in rows:
            m = r._mapping
            seq = int(m["seq"])
            if seq < expected_seq:
                return ChainProblem(
                    "inserted", m["id"], seq,
                    f"第 {m['id']} 条记录是后来插入的（重复占用链上第 {seq} 位）",
                    f"entry id {m['id']} was inserted: it repeats chain position {seq}",
                )  # fmt: skip
            if seq > expected_seq:
                gap = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}-{seq - 1}"
                between = f"id {prev_id} – {m['id']}" if prev_id is not None else f"before id {m['id']}"
                return ChainProblem(
                    "removed", None, expected_seq,
                    f"链上第 {gap} 位的记录已被删除（{between} 之间）",
                    f"the entries at chain position {gap} were removed ({between})",
                )  # fmt: skip
            if entry_hash(m["prev_hash"] or "", m) != m["hash"]:
                return ChainProblem(
                    "changed", m["id"], seq,
                    f"第 {m['id']} 条记录（链上第 {seq} 位）已被改动",
                    f"entry id {m['id']} (chain position {seq}) was changed",
                )  # fmt: skip
            if m["prev_hash"] != expected_prev:
                return ChainProblem(
                    "changed", prev_id, seq - 1,
                    f"第 {prev_id} 条记录（链上第 {seq - 1} 位）已被改动并重算了哈希",
                    f"entry id {prev_id} (chain position {seq - 1}) was changed and its hash recomputed",
                )  # fmt: skip
            if anchor is not None and seq == anchor[0] and m["hash"] != anchor[1]:
                return ChainProblem(
                    "anchor", m["id"], seq,
                    f"链上第 {seq} 位的哈希与记录的链头不同：此前的日志被改写",
                    f"the hash at chain position {seq} differs from the anchored head: the log was rewritten",
                )  # fmt: skip
            report.checked += 1
            report.head_seq, report.head_hash = seq, m["hash"]
            expected_seq, expected_prev, prev_id = seq + 1, m["hash"], m["id"]
        after = int(rows[-1].seq)
