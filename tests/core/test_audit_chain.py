"""The audit log's hash chain: one row edited, deleted or inserted in the database is found and named by
`verify`; writers on two engines (two processes, two machines) still extend one linear chain."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from aggregator.audit import CLI, AuditEntry, AuditLog, verify
from aggregator.records import RecordStore
from aggregator.records.database import create_engine
from aggregator.records.schema import audit_log
from aggregator.web.roles import Principal, Role

EMPLOYER = Principal(Role.EMPLOYER, key_id="k0000000001", label="某建设集团")


def lookup(i: int, **more: object) -> AuditEntry:
    return AuditEntry.now(
        EMPLOYER, action="lookup", number=f"T{i:018d}", name_given=False, id_number_given=False,
        verdict="valid", purpose="入职核验", client_ip="10.0.0.1", **more,  # type: ignore[arg-type]
    )  # fmt: skip


async def ten(store: RecordStore) -> tuple[AuditLog, list[int]]:
    log = AuditLog(store.engine)
    for i in range(10):
        await log.write([lookup(i)])
    ids = [e.id for e in reversed(await log.read(limit=10))]
    return log, [i for i in ids if i is not None]


async def sql(store: RecordStore, text: str, **params: object) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(sa.text(text), params)


async def test_an_untouched_log_verifies_and_reports_its_head(store: RecordStore) -> None:
    log, ids = await ten(store)
    entries = await log.read(limit=10)

    report = await verify(store.engine)

    assert report.ok and report.checked == 10 and report.legacy == 0
    assert report.head_seq == 10 and report.head_hash == entries[0].hash
    assert [e.seq for e in reversed(entries)] == list(range(1, 11))
    assert all(e.prev_hash == before.hash for e, before in zip(entries, entries[1:], strict=False))


async def test_an_edited_entry_is_named(store: RecordStore) -> None:
    _, ids = await ten(store)
    await sql(store, "UPDATE audit_log SET verdict = 'revoked' WHERE id = :id", id=ids[4])

    report = await verify(store.engine)

    assert report.problem is not None and report.problem.kind == "changed"
    assert report.problem.id == ids[4] and report.problem.seq == 5
    assert f"entry id {ids[4]}" in report.problem.en


async def test_a_deleted_entry_is_located_between_its_neighbours(store: RecordStore) -> None:
    _, ids = await ten(store)
    await sql(store, "DELETE FROM audit_log WHERE id = :id", id=ids[6])

    report = await verify(store.engine)

    assert report.problem is not None and report.problem.kind == "removed" and report.problem.seq == 7
    assert f"id {ids[5]} – {ids[7]}" in report.problem.en


async def test_a_row_inserted_by_hand_is_named(store: RecordStore) -> None:
    _, ids = await ten(store)
    async with store.engine.begin() as conn:
        await conn.execute(sa.insert(audit_log), [{**lookup(99).row(), "at": datetime(2026, 1, 1, tzinfo=UTC)}])
        inserted = (await conn.execute(sa.select(sa.func.max(audit_log.c.id)))).scalar()

    report = await verify(store.engine)

    assert report.problem is not None and report.problem.kind == "inserted" and report.problem.id == inserted


async def test_an_entry_edited_and_rehashed_is_still_named(store: RecordStore) -> None:
    from aggregator.audit.chain import entry_hash

    _, ids = await ten(store)
    async with store.engine.begin() as conn:
        row = dict((await conn.execute(sa.select(audit_log).where(audit_log.c.id == ids[2]))).one()._mapping)
        row["purpose"] = "随便看看"
        new_hash = entry_hash(row["prev_hash"], row)
        await conn.execute(sa.update(audit_log).where(audit_log.c.id == ids[2]).values(purpose="随便看看", hash=new_hash))

    report = await verify(store.engine)

    assert report.problem is not None and report.problem.kind == "changed" and report.problem.id == ids[2]


async def test_entries_cut_off_the_end_are_caught_only_against_an_anchored_head(store: RecordStore) -> None:
    _, ids = await ten(store)
    anchored = await verify(store.engine)
    await sql(store, "DELETE FROM audit_log WHERE id >= :id", id=ids[8])

    assert (await verify(store.engine)).ok  # what the README says: a cut tail needs the head kept elsewhere
    report = await verify(store.engine, anchor=(anchored.head_seq, anchored.head_hash))
    assert report.problem is not None and report.problem.kind == "anchor"


async def test_entries_from_before_the_chain_are_counted_apart(store: RecordStore) -> None:
    async with store.engine.begin() as conn:  # as written before migration 0007: no seq, no hash
        await conn.execute(sa.insert(audit_log), [lookup(i).row() for i in range(3)])
    log = AuditLog(store.engine)
    await log.write([lookup(10), lookup(11)])

    report = await verify(store.engine)

    assert report.ok and report.legacy == 3 and report.checked == 2


async def test_other_actions_are_chained_too(store: RecordStore) -> None:
    log = AuditLog(store.engine)
    await log.record_action(CLI, "key_create", detail={"key_id": "3f9a0c1d2e4b", "role": "employer"})
    await log.record_action(EMPLOYER, "webhook_change", detail={"webhook_id": 7, "change": "created"})
    with pytest.raises(ValueError, match="unknown audit action"):
        await log.record_action(EMPLOYER, "coffee")

    [webhook, key] = await log.read(limit=10)

    assert (key.action, key.key_id, key.role, key.details()["key_id"]) == ("key_create", "cli", "admin", "3f9a0c1d2e4b")
    assert webhook.action == "webhook_change" and webhook.prev_hash == key.hash
    assert (await verify(store.engine)).checked == 2


@pytest.mark.postgres
@pytest.mark.parametrize("store", ["postgres"], indirect=True)
async def test_two_writers_on_one_postgresql_database_extend_one_linear_chain(store: RecordStore) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    search_path = (await _search_path(store))
    other = create_engine(url, connect_args={"server_settings": {"search_path": search_path}})
    try:
        first, second = AuditLog(store.engine), AuditLog(other)  # two pools: as two processes would be
        await asyncio.gather(
            *(first.write([lookup(i)]) for i in range(60)), *(second.write([lookup(100 + i)]) for i in range(60))
        )
        report = await verify(store.engine)
    finally:
        await other.dispose()

    assert report.ok and report.checked == 120 and report.head_seq == 120


async def _search_path(store: RecordStore) -> str:
    async with store.engine.connect() as conn:
        return str((await conn.execute(sa.text("SHOW search_path"))).scalar())
