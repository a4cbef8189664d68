"""Upload freshness (issue 14): the same file for a newer quarter is that quarter's upload, the same file for the
same quarter stays "already imported"; a department is overdue once the last complete quarter has not arrived
N days after it ended, and every answer resting on its records says so.

The store tests run on SQLite and on PostgreSQL; the gateway test on SQLite.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from aggregator.config import HealthConfig, Settings
from aggregator.gateway import Gateway
from aggregator.models import Department, Mode, Verdict
from aggregator.records import AlreadyImported, RecordStore
from aggregator.records.freshness import (
    china_today,
    freshness_of,
    last_complete_quarter,
    next_quarter,
    upload_freshness,
)
from aggregator.records.schema import records
from tests.records_support import ID_LI, ID_ZHANG, mem_row, write_csv

NUMBER = "T" + ID_ZHANG


async def record_rows(store: RecordStore) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(records))).scalar())


async def test_the_same_file_for_the_next_quarter_records_that_quarter_without_reinserting(store, tmp_path) -> None:
    path = write_csv(tmp_path / "mem.csv", [mem_row(), mem_row(ID_LI, "李四")])
    q1 = await store.import_file(path, department="mem", quarter="2026Q1")
    generation = await store.generation("mem")

    q2 = await store.import_file(path, department="mem", quarter="2026Q2", uploaded_by="mem-key")

    assert (q2.status, q2.quarter, q2.reaffirms) == ("imported", "2026Q2", q1.id)
    assert q2.id != q1.id and q2.rows_imported == 2 and q2.uploaded_by == "mem-key"
    assert "未重复写入" in q2.warnings[0] and f"batch {q1.id}" in q2.warnings[0]
    assert await record_rows(store) == 2  # nothing re-inserted
    assert (await store.get_batch(q2.id)).reaffirms == q1.id  # the report says so when read back
    assert [b.quarter for b in await store.list_batches("mem")] == ["2026Q2", "2026Q1"]
    assert (await store.latest_batches())[Department.MEM].quarter == "2026Q2"
    assert await store.generation("mem") != generation  # cached answers are dropped: their as-of changed
    assert {c.number for c in (await store.find("mem", number=NUMBER)).certificates} == {NUMBER}

    # the quarter after that, the same file again: re-affirms the first batch, not the re-affirmation
    q3 = await store.import_file(path, department="mem", quarter="2026Q3")
    assert q3.reaffirms == q1.id and await record_rows(store) == 2


async def test_the_same_file_for_the_same_or_an_older_quarter_stays_already_imported(store, tmp_path) -> None:
    path = write_csv(tmp_path / "mem.csv", [mem_row()])
    q1 = await store.import_file(path, department="mem", quarter="2026Q1")
    q2 = await store.import_file(path, department="mem", quarter="2026Q2")

    for quarter, existing in (("2026Q1", q1.id), ("2026 Q2", q2.id), ("2025Q4", q1.id)):  # older: the original
        with pytest.raises(AlreadyImported) as caught:
            await store.import_file(path, department="mem", quarter=quarter)
        assert caught.value.batch_id == existing, quarter
    assert len(await store.list_batches("mem")) == 2 and await record_rows(store) == 1


async def test_an_earlier_file_for_a_newer_quarter_after_another_file_is_imported_again(store, tmp_path) -> None:
    """File A (valid) in Q1, file B (suspended) in Q2, then A again for Q3: A's rows must become current again,
    so this is a real import, not a re-affirmation (which would leave B's suspension current)."""
    a = write_csv(tmp_path / "a.csv", [mem_row(status="有效")])
    b = write_csv(tmp_path / "b.csv", [mem_row(status="暂扣")])
    await store.import_file(a, department="mem", quarter="2026Q1")
    await store.import_file(b, department="mem", quarter="2026Q2")

    q3 = await store.import_file(a, department="mem", quarter="2026Q3")

    assert q3.reaffirms is None and q3.rows_imported == 1 and q3.superseded == 1
    (cert,) = (await store.find("mem", number=NUMBER)).certificates
    assert cert.status == "valid"


async def test_a_partial_upload_is_reaffirmed_only_by_a_partial_upload(store, tmp_path) -> None:
    bad = mem_row(ID_LI[:17] + ("0" if ID_LI[17] != "0" else "1"), "李四")  # a wrong check character
    path = write_csv(tmp_path / "mem.csv", [mem_row(), bad])
    q1 = await store.import_file(path, department="mem", quarter="2026Q1", partial=True)
    assert q1.status == "partial"

    strict = await store.import_file(path, department="mem", quarter="2026Q2")
    assert strict.status == "rejected" and strict.reaffirms is None  # as any file with a bad row without --partial
    partial = await store.import_file(path, department="mem", quarter="2026Q2", partial=True)
    assert (partial.status, partial.reaffirms, partial.rows_rejected) == ("partial", q1.id, 1)
    assert partial.problems and partial.problems[0].line == q1.problems[0].line


# --- overdue ---------------------------------------------------------------------------------------------------


def test_a_department_is_overdue_once_the_last_complete_quarter_is_n_days_late() -> None:
    uploaded = datetime(2026, 7, 3, tzinfo=UTC)
    on_time = freshness_of(Department.MEM, ("2026Q2", uploaded, 7, None), today=date(2026, 10, 30), overdue_days=30)
    assert (on_time.expected_quarter, on_time.due_on, on_time.overdue) == ("2026Q3", date(2026, 10, 30), False)
    late = freshness_of(Department.MEM, ("2026Q2", uploaded, 7, None), today=date(2026, 12, 2), overdue_days=30)
    assert (late.overdue, late.overdue_days) == (True, 33)
    arrived = freshness_of(Department.MEM, ("2026Q3", uploaded, 8, 7), today=date(2026, 12, 2), overdue_days=30)
    assert not arrived.overdue and arrived.reaffirms == 7
    nothing = freshness_of(Department.SAMR, None, today=date(2026, 12, 2), overdue_days=30)
    assert nothing.quarter is None and not nothing.overdue
    assert last_complete_quarter(date(2026, 1, 1)) == "2025Q4" and next_quarter("2025Q4") == "2026Q1"


def test_the_overdue_days_are_validated_config() -> None:
    with pytest.raises(ValueError, match="upload_overdue_days"):
        HealthConfig(upload_overdue_days=-1)
    with pytest.raises(ValueError, match="incident_min_minutes"):
        HealthConfig(incident_min_minutes=1)


def test_a_mistake_in_health_toml_names_the_file_and_key(tmp_path: Path) -> None:
    import shutil

    from aggregator.config import ConfigError
    from tests.helpers import CONFIG

    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    (config / "health.toml").write_text("upload_overdue_days = 'soon'\n", encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        Settings.load(config)
    assert any("health.toml: upload_overdue_days" in p for p in caught.value.problems)


async def test_upload_freshness_counts_a_reaffirmed_quarter_as_arrived(store, tmp_path) -> None:
    path = write_csv(tmp_path / "mem.csv", [mem_row()])
    await store.import_file(path, department="mem", quarter="2026Q2")
    late = await upload_freshness(store.engine, overdue_days=30, today=date(2026, 12, 2))
    assert late[Department.MEM].overdue and late[Department.MEM].quarter == "2026Q2"
    assert not late[Department.SAMR].overdue  # nothing uploaded yet: not "overdue", shown as none yet

    q3 = await store.import_file(path, department="mem", quarter="2026Q3")
    fresh = await upload_freshness(store.engine, overdue_days=30, today=date(2026, 12, 2))
    assert (fresh[Department.MEM].quarter, fresh[Department.MEM].overdue) == ("2026Q3", False)
    assert fresh[Department.MEM].batch_id == q3.id and fresh[Department.MEM].reaffirms is not None


# --- the answers ---------------------------------------------------------------------------------------------------


def _quarter_back(quarter: str, n: int) -> str:
    year, q = int(quarter[:4]), int(quarter[5])
    index = year * 4 + (q - 1) - n
    return f"{index // 4}Q{index % 4 + 1}"


async def test_every_answer_resting_on_an_overdue_departments_records_says_so(tmp_path: Path) -> None:
    """Quarters relative to today (the note is judged on today, China time), so this holds in any year."""
    settings = Settings.load()
    settings = settings.with_sources([s for s in settings.sources if s.mode == Mode.RECORDS])
    latest = last_complete_quarter(china_today())
    old = _quarter_back(latest, 2)
    url = f"sqlite+aiosqlite:///{tmp_path / 'certq.sqlite3'}"
    path = write_csv(tmp_path / "mem.csv", [mem_row()])
    async with await Gateway.open(settings, database_url=url, redis_url="") as gw:
        await gw.store.import_file(path, department="mem", quarter=old)
        late = await gw.lookup(NUMBER)
        assert late.verdict == Verdict.VALID
        assert f"上报数据逾期未更新：应急管理部截至 {old}" in late.verdict_reason
        assert "overdue since" in late.verdict_reason
        assert late.verdict_reason.count("逾期") == 2  # one note for the answer, however many sources it asked

        missing = await gw.lookup("T" + ID_LI)  # not found in the overdue records: the answer rests on them too
        assert missing.verdict == Verdict.NOT_FOUND and "上报数据逾期未更新" in missing.verdict_reason

        # the department uploads the same file for the last complete quarter: on time again
        report = await gw.store.import_file(path, department="mem", quarter=latest)
        assert report.reaffirms is not None
        gw.forget_generation(Department.MEM)
        fresh = await gw.lookup(NUMBER)
        assert fresh.verdict == Verdict.VALID and "逾期" not in fresh.verdict_reason
