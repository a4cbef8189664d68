"""The audit log commits concurrent writes together, yet each write returns only once its own entries are
stored, and a refused entry fails only the lookup it belongs to (the lookup is then refused: fail closed)."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from aggregator.audit import AuditEntry, AuditLog, AuditUnavailable
from aggregator.records import RecordStore  # the `store` fixture (tests/records_support.py): SQLite and PostgreSQL
from aggregator.web.roles import Principal, Role


def entry(i: int, purpose: str = "入职核验") -> AuditEntry:
    who = Principal(Role.EMPLOYER, key_id=f"k{i:04d}", label="test")
    return AuditEntry.now(
        who, action="lookup", number=f"T{i:018d}", name_given=True, id_number_given=False,
        verdict="valid", purpose=purpose, client_ip="127.0.0.1",
    )


async def test_concurrent_writes_are_all_stored_before_each_returns(store: RecordStore) -> None:
    log = AuditLog(store.engine)
    seen_after_return: list[bool] = []

    async def one(i: int) -> None:
        await log.write([entry(i)])
        stored = await log.read(limit=1000, key_id=f"k{i:04d}")
        seen_after_return.append(len(stored) == 1)

    await asyncio.gather(*(one(i) for i in range(200)))
    assert len(seen_after_return) == 200 and all(seen_after_return)
    assert len(await log.read(limit=1000)) == 200


async def test_a_write_the_database_refuses_raises_audit_unavailable(store: RecordStore) -> None:
    log = AuditLog(store.engine)
    async with store.engine.begin() as conn:
        await conn.execute(sa.text("DROP TABLE audit_log"))
    with pytest.raises(AuditUnavailable):
        await log.write([entry(1)])


@pytest.mark.postgres
@pytest.mark.parametrize("store", ["postgres"], indirect=True)  # PostgreSQL refuses a NUL in text; SQLite stores it
async def test_one_refused_entry_fails_only_its_own_write(store: RecordStore) -> None:
    log = AuditLog(store.engine)
    results = await asyncio.gather(
        *(log.write([entry(i, purpose="bad\x00purpose" if i == 7 else "入职核验")]) for i in range(20)),
        return_exceptions=True,
    )
    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [7] and isinstance(results[7], AuditUnavailable)
    assert sorted(e.key_id for e in await log.read(limit=100)) == [f"k{i:04d}" for i in range(20) if i != 7]


async def test_a_cancelled_writer_does_not_stop_the_others(store: RecordStore) -> None:
    log = AuditLog(store.engine)
    tasks = [asyncio.create_task(log.write([entry(i)])) for i in range(10)]
    tasks[3].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    assert all(r is None for i, r in enumerate(results) if i != 3)
    stored = {e.key_id for e in await log.read(limit=100)}
    assert {f"k{i:04d}" for i in range(10) if i != 3} <= stored
