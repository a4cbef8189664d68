"""SQLite's one-call append (`chain.SqliteAppend`) stores exactly what SQLAlchemy's insert stores, refuses only
the write whose row the database refuses, and leaves the chain whole."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from aggregator.audit import AuditEntry, AuditLog, AuditUnavailable, verify
from aggregator.audit.chain import GENESIS, link_rows
from aggregator.records import RecordStore
from aggregator.records.schema import audit_log
from aggregator.web.roles import Principal, Role

EMPLOYER = Principal(Role.EMPLOYER, key_id="k0000000001", label="某建设集团")


def entries() -> list[AuditEntry]:
    at = datetime(2026, 3, 1, 8, 30, 0, 120_000, tzinfo=UTC)
    out = [
        AuditEntry(
            at=at + timedelta(seconds=i), key_id="k0000000001", role="employer", action="lookup",
            number=f"T{i:018d}", name_given=i % 2 == 0, id_number_given=i % 3 == 0, verdict="valid",
            purpose="入职核验" if i else None, client_ip="10.0.0.1", name_check="match" if i % 2 == 0 else None,
            holder_id_number="110105199003071239" if i == 1 else None,
        )
        for i in range(5)
    ]  # fmt: skip
    out.append(AuditEntry.action_by(EMPLOYER, "key_create", detail={"key_id": "abc", "备注": "新"}))
    return out


def stored(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT * FROM audit_log ORDER BY seq").fetchall()


async def test_the_one_call_append_stores_what_sqlalchemy_stores(tmp_path: Path) -> None:
    a = await RecordStore.open(f"sqlite+aiosqlite:///{tmp_path / 'a.sqlite3'}")
    b = await RecordStore.open(f"sqlite+aiosqlite:///{tmp_path / 'b.sqlite3'}")
    try:
        log, given = AuditLog(a.engine), entries()
        for e in given:
            await log.write([e])  # one transaction each: the head is read back every time
        async with b.engine.begin() as conn:  # the same entries through SQLAlchemy's insert
            await conn.execute(sa.insert(audit_log), link_rows([e.row() for e in given], GENESIS, 0))
        assert stored(tmp_path / "a.sqlite3") == stored(tmp_path / "b.sqlite3")
        assert [e.at for e in reversed(await log.read())] == [e.at for e in given]
        report = await verify(a.engine)
        assert report.ok and report.checked == 6
    finally:
        await a.close()
        await b.close()


async def test_a_refused_row_fails_its_own_write_only_and_the_chain_holds(sqlite_store: RecordStore) -> None:
    async with sqlite_store.engine.begin() as conn:
        await conn.execute(sa.text(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_log WHEN NEW.purpose = 'bad' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        ))  # fmt: skip
    log = AuditLog(sqlite_store.engine)

    def entry(i: int) -> AuditEntry:
        return AuditEntry.now(
            EMPLOYER, action="lookup", number=f"T{i:018d}", name_given=False, id_number_given=False,
            verdict="valid", purpose="bad" if i == 7 else "入职核验", client_ip="10.0.0.1",
        )  # fmt: skip

    results = await asyncio.gather(*(log.write([entry(i)]) for i in range(20)), return_exceptions=True)
    assert [i for i, r in enumerate(results) if r is not None] == [7]
    assert isinstance(results[7], AuditUnavailable)
    await log.write([entry(20)])  # the connection rolled back: the next write goes through
    report = await verify(sqlite_store.engine)
    assert report.ok and report.checked == 20


@pytest.mark.parametrize("writers", [1, 3])
async def test_writers_on_two_engines_extend_one_chain(tmp_path: Path, writers: int) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.sqlite3'}"
    one, two = await RecordStore.open(url), await RecordStore.open(url)
    try:
        logs = [AuditLog(one.engine), AuditLog(two.engine)]

        async def write(i: int) -> None:
            await logs[i % 2].write([AuditEntry.action_by(EMPLOYER, "upload", detail={"i": i})])

        for start in range(0, 60, writers * 2):
            await asyncio.gather(*(write(i) for i in range(start, start + writers * 2)))
        report = await verify(one.engine)
        assert report.ok and report.checked == 60
    finally:
        await one.close()
        await two.close()
