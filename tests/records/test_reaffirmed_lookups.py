"""Today's lookups date a re-affirmed quarter by the re-affirming upload: a department that uploads the same file
for a newer quarter (a batch that re-affirms the earlier one, nothing re-inserted) is answered "as of" that newer
quarter, as the as-of answers already were; a different file, a superseded or a rejected re-affirmation, as before.

The store tests run on SQLite and on PostgreSQL; the gateway test on SQLite.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from aggregator.config import Settings
from aggregator.gateway import Gateway
from aggregator.models import Department, Mode
from aggregator.records import RecordStore
from aggregator.records.asof import upload_in_force
from aggregator.records.report import CHINA_TIME
from aggregator.records.schema import batches
from tests.records_support import ID_LI, ID_ZHANG, mem_row, write_csv

ZHANG = "T" + ID_ZHANG
LI = "T" + ID_LI


def end_of(quarter: str) -> datetime:
    """What a quarter's upload made after the quarter ended is as of: its last moment, Beijing time."""
    last_day = {"Q1": (3, 31), "Q2": (6, 30), "Q3": (9, 30), "Q4": (12, 31)}[quarter[4:]]
    return datetime(int(quarter[:4]), *last_day, 23, 59, 59, 999999, tzinfo=CHINA_TIME)


async def dated(store: RecordStore, **lookup: str) -> tuple[str | None, datetime | None]:
    hit = await store.find("mem", **lookup)
    assert hit.certificates, lookup
    return hit.quarter, hit.data_as_of


async def test_a_lookup_after_the_same_file_for_a_newer_quarter_says_that_quarter(store, tmp_path) -> None:
    path = write_csv(tmp_path / "mem.csv", [mem_row(), mem_row(ID_LI, "李四")])
    await store.import_file(path, department="mem", quarter="2026Q1")
    assert await dated(store, number=ZHANG) == ("2026Q1", end_of("2026Q1"))

    q2 = await store.import_file(path, department="mem", quarter="2026Q2")

    assert q2.reaffirms is not None
    for lookup in ({"number": ZHANG}, {"id_number": ID_LI}, {"number": ZHANG, "id_number": ID_ZHANG}):
        assert await dated(store, **lookup) == ("2026Q2", end_of("2026Q2")), lookup
    (cert,) = (await store.find("mem", number=ZHANG)).certificates
    assert cert.holder_name == "张小三"  # the same certificate, once

    await store.import_file(path, department="mem", quarter="2026Q3")  # and again: the newest re-affirmation
    assert await dated(store, number=LI) == ("2026Q3", end_of("2026Q3"))


async def test_the_re_affirming_uploads_own_time_when_it_came_before_its_quarter_ended(store, tmp_path) -> None:
    path = write_csv(tmp_path / "mem.csv", [mem_row()])
    await store.import_file(path, department="mem", quarter="2026Q1")
    q2 = await store.import_file(path, department="mem", quarter="2026Q2")
    uploaded = datetime(2026, 5, 20, 8, tzinfo=UTC)  # mid-quarter: the data is as of the upload, not 30 June
    async with store.engine.begin() as conn:
        await conn.execute(sa.update(batches).where(batches.c.id == q2.id).values(uploaded_at=uploaded))

    assert await dated(store, number=ZHANG) == ("2026Q2", uploaded)


async def test_a_different_file_for_the_newer_quarter_behaves_as_before(store, tmp_path) -> None:
    first = write_csv(tmp_path / "q1.csv", [mem_row(), mem_row(ID_LI, "李四")])
    second = write_csv(tmp_path / "q2.csv", [mem_row(valid_until="2031-01-02")])  # Zhang only, renewed
    await store.import_file(first, department="mem", quarter="2026Q1")

    q2 = await store.import_file(second, department="mem", quarter="2026Q2")

    assert q2.reaffirms is None
    assert await dated(store, number=ZHANG) == ("2026Q2", end_of("2026Q2"))
    assert await dated(store, number=LI) == ("2026Q1", end_of("2026Q1"))  # not in the new file: its old row


async def test_a_re_affirmation_superseded_by_a_later_upload_of_its_quarter_no_longer_counts(store, tmp_path) -> None:
    same = write_csv(tmp_path / "mem.csv", [mem_row(), mem_row(ID_LI, "李四")])
    corrected = write_csv(tmp_path / "corrected.csv", [mem_row(status="暂扣")])  # Zhang only
    await store.import_file(same, department="mem", quarter="2026Q1")
    assert (await store.import_file(same, department="mem", quarter="2026Q2")).reaffirms is not None
    assert await dated(store, number=LI) == ("2026Q2", end_of("2026Q2"))

    await store.import_file(corrected, department="mem", quarter="2026Q2")  # the quarter's upload is now this one

    assert await dated(store, number=LI) == ("2026Q1", end_of("2026Q1"))
    assert await dated(store, number=ZHANG) == ("2026Q2", end_of("2026Q2"))


async def test_a_newer_quarters_different_file_leaves_the_re_affirmation_standing(store, tmp_path) -> None:
    """The department said in 2026Q2 that its 2026Q1 file still held; its 2026Q3 file names only Zhang, so Li's
    row stays current, and stays as of 2026Q2. An as-of lookup for any moment after agrees with today's."""
    same = write_csv(tmp_path / "mem.csv", [mem_row(), mem_row(ID_LI, "李四")])
    newer = write_csv(tmp_path / "q3.csv", [mem_row(valid_until="2031-01-02")])
    await store.import_file(same, department="mem", quarter="2026Q1")
    await store.import_file(same, department="mem", quarter="2026Q2")

    await store.import_file(newer, department="mem", quarter="2026Q3")

    assert await dated(store, number=LI) == ("2026Q2", end_of("2026Q2"))
    assert await dated(store, number=ZHANG) == ("2026Q3", end_of("2026Q3"))
    then = await upload_in_force(store.engine, "mem", datetime(2100, 1, 1, tzinfo=UTC), number=LI)
    assert then is not None and then.data_as_of == end_of("2026Q2")


async def test_a_rejected_re_affirmation_does_not_count(store, tmp_path) -> None:
    bad = mem_row(ID_LI[:17] + ("0" if ID_LI[17] != "0" else "1"), "李四")  # a wrong check character
    path = write_csv(tmp_path / "mem.csv", [mem_row(), bad])
    await store.import_file(path, department="mem", quarter="2026Q1", partial=True)

    strict = await store.import_file(path, department="mem", quarter="2026Q2")  # the same file, without --partial

    assert strict.status == "rejected"
    assert await dated(store, number=ZHANG) == ("2026Q1", end_of("2026Q1"))


async def test_a_re_affirmation_withdrawn_later_no_longer_counts(store, tmp_path) -> None:
    path = write_csv(tmp_path / "mem.csv", [mem_row()])
    await store.import_file(path, department="mem", quarter="2026Q1")
    q2 = await store.import_file(path, department="mem", quarter="2026Q2")
    async with store.engine.begin() as conn:  # as an operator marking the upload rejected after the fact would
        await conn.execute(sa.update(batches).where(batches.c.id == q2.id).values(status="rejected"))

    assert await dated(store, number=ZHANG) == ("2026Q1", end_of("2026Q1"))


async def test_the_answer_names_the_re_affirmed_quarter_and_its_as_of(tmp_path: Path) -> None:
    settings = Settings.load()
    settings = settings.with_sources([s for s in settings.sources if s.mode == Mode.RECORDS])
    url = f"sqlite+aiosqlite:///{tmp_path / 'certq.sqlite3'}"
    path = write_csv(tmp_path / "mem.csv", [mem_row()])
    async with await Gateway.open(settings, database_url=url, redis_url="") as gw:
        await gw.store.import_file(path, department="mem", quarter="2026Q1")
        before = next(s for s in (await gw.lookup(ZHANG)).sources if s.source == "mem_records")
        await gw.store.import_file(path, department="mem", quarter="2026Q2")
        gw.forget_generation(Department.MEM)
        after = next(s for s in (await gw.lookup(ZHANG)).sources if s.source == "mem_records")
    assert (before.message, before.data_as_of) == ("上报批次 2026Q1", end_of("2026Q1"))
    assert (after.message, after.data_as_of) == ("上报批次 2026Q2", end_of("2026Q2"))


async def test_a_late_file_for_an_older_quarter_does_not_replace_rows_the_department_vouched_for_since(
    store, tmp_path
) -> None:
    """F for 2026Q1, the same F for 2026Q2, then a late correction H for 2026Q1: F's rows count as 2026Q2's, so
    H's row of the same certificate is outdated on arrival (kept as history), not the one in force."""
    f = write_csv(tmp_path / "f.csv", [mem_row()])
    h = write_csv(tmp_path / "h.csv", [mem_row(status="暂扣")])
    await store.import_file(f, department="mem", quarter="2026Q1")
    await store.import_file(f, department="mem", quarter="2026Q2")

    late = await store.import_file(h, department="mem", quarter="2026Q1")

    assert (late.status.value, late.superseded, late.outdated) == ("imported", 0, 1)
    hit = await store.find("mem", number=ZHANG)
    assert hit.quarter == "2026Q2" and [c.status.value for c in hit.certificates] == ["valid"]

    newer = await store.import_file(h, department="mem", quarter="2026Q3")  # a newer quarter still replaces it
    assert (newer.superseded, newer.outdated) == (1, 0)
    assert [c.status.value for c in (await store.find("mem", number=ZHANG)).certificates] == ["suspended"]
