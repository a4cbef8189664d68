"""Validity on a past date: the answer as certq knew it then, from a history the test builds.

The history: a 2026Q1 upload made on 10 April (valid until 2029), a 2026Q2 upload made on 5 July (valid until
2031); the live MEM source said "valid" on 1 May and "suspended" from 10 September.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from aggregator.asof import FutureDate, InvalidDate, lookup_as_of, parse_date
from aggregator.errors import describe
from aggregator.gateway import Gateway
from aggregator.models import Certificate, CertKind, CertStatus, Department, Outcome, Query, SourceResult, Verdict
from aggregator.records import RecordStore
from aggregator.records.live import LiveHistory
from aggregator.records.report import CHINA_TIME
from aggregator.records.schema import batches
from tests.records_support import ID_LI, ID_ZHANG, mem_row, write_csv

TODAY = date(2026, 11, 25)
NUMBER = "T" + ID_ZHANG


def at(month: int, day: int, hour: int = 10) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def live_answer(status: CertStatus, seen: datetime) -> SourceResult:
    cert = Certificate(
        number=NUMBER,
        kind=CertKind.MEM_SPECIAL_OPERATION,
        department=Department.MEM,
        holder_name="张小三",
        holder_id_number=ID_ZHANG,
        category="电工作业",
        operation_item="低压电工作业",
        valid_until=date(2029, 1, 2),
        status=status,
    )
    return SourceResult(
        source="mem_api", department=Department.MEM, mode="api", outcome=Outcome.FOUND, certificates=[cert],
        fetched_at=seen,
    )


async def upload(store: RecordStore, tmp_path: Path, quarter: str, when: datetime, valid_until: str) -> int:
    path = write_csv(tmp_path / f"mem-{quarter}.csv", [mem_row(valid_until=valid_until)])
    report = await store.import_file(path, department="mem", quarter=quarter)
    async with store.engine.begin() as conn:  # as if it had been uploaded then
        await conn.execute(sa.update(batches).where(batches.c.id == report.id).values(uploaded_at=when))
    return report.id


@pytest.fixture
async def past(settings, tmp_path: Path):
    store = await RecordStore.open(f"sqlite+aiosqlite:///{tmp_path / 'certq.sqlite3'}")
    q1 = await upload(store, tmp_path, "2026Q1", at(4, 10), "2029-01-02")
    q2 = await upload(store, tmp_path, "2026Q2", at(7, 5), "2031-01-02")
    history = LiveHistory(store.engine)
    assert await history.record("mem_api", Query(number=NUMBER), live_answer(CertStatus.VALID, at(5, 1)))
    assert await history.record("mem_api", Query(number=NUMBER), live_answer(CertStatus.SUSPENDED, at(9, 10)))
    gw = Gateway(settings, store, today=lambda: TODAY)
    gw.batches = {"2026Q1": q1, "2026Q2": q2}  # type: ignore[attr-defined]
    yield gw
    await gw.close()


def basis(answer, source: str):
    return next(b for b in answer.as_of.rests_on if b.source == source)


def status(answer, source: str):
    return next(s for s in answer.sources if s.source == source)


async def test_a_date_before_the_oldest_data_is_inconclusive_and_says_from_when_there_is_data(past) -> None:
    answer = await lookup_as_of(past, NUMBER, on=date(2026, 3, 1))

    assert answer.verdict == Verdict.INCONCLUSIVE
    assert "2026-04-10" in answer.verdict_reason and "nothing to go on" in answer.verdict_reason
    assert answer.as_of.oldest_data == at(4, 10)
    assert basis(answer, "mem_records").kind == "none" and basis(answer, "mem_api").kind == "none"
    assert answer.certificates == [] and not answer.complete


async def test_after_the_first_upload_only_it_counts_and_its_data_is_as_of_its_quarters_end(past) -> None:
    answer = await lookup_as_of(past, NUMBER, on=date(2026, 4, 20))

    assert answer.verdict == Verdict.VALID
    upload = basis(answer, "mem_records")
    assert (upload.kind, upload.quarter, upload.batch_id) == ("upload", "2026Q1", past.batches["2026Q1"])
    # uploaded on 10 April, after its quarter ended: as of 31 March, not of the upload
    assert upload.data_as_of == datetime(2026, 3, 31, 23, 59, 59, 999999, tzinfo=CHINA_TIME)  # Beijing midnight
    assert answer.certificates[0].valid_until == date(2029, 1, 2)
    # the live source had said nothing yet: unknown then, not "not found"
    assert basis(answer, "mem_api").kind == "none"
    assert status(answer, "mem_api").outcome == Outcome.UNAVAILABLE and not answer.complete


async def test_the_live_answer_of_then_is_used_and_changes_when_the_source_changed(past) -> None:
    june = await lookup_as_of(past, NUMBER, on=date(2026, 6, 1))
    august = await lookup_as_of(past, NUMBER, on=date(2026, 8, 1))
    september = await lookup_as_of(past, NUMBER, on=date(2026, 9, 15))

    assert june.verdict == Verdict.VALID and basis(june, "mem_records").quarter == "2026Q1"
    assert basis(june, "mem_api").first_seen == at(5, 1)
    # the second quarter's upload is in force from 5 July on
    assert august.verdict == Verdict.VALID and basis(august, "mem_records").quarter == "2026Q2"
    assert august.certificates[0].valid_until == date(2031, 1, 2)
    # from 10 September the live source says suspended, fresher than the 2026Q2 upload
    assert september.verdict == Verdict.SUSPENDED, september.verdict_reason
    assert basis(september, "mem_api").first_seen == at(9, 10)
    assert basis(september, "mem_records").quarter == "2026Q2"
    assert status(september, "mem_api").fetched_at == at(9, 10)


async def test_the_day_a_live_answer_changed_counts_it_from_that_day(past) -> None:
    answer = await lookup_as_of(past, NUMBER, on=date(2026, 9, 10))
    assert answer.verdict == Verdict.SUSPENDED
    before = await lookup_as_of(past, NUMBER, on=date(2026, 9, 9))
    assert before.verdict == Verdict.VALID


async def test_before_the_oldest_data_a_records_only_deployment_is_inconclusive_too(past) -> None:
    records_only = past.settings.with_sources([s for s in past.settings.sources if s.mode == "records"])
    gw = Gateway(records_only, past.store, today=lambda: TODAY)
    before = await lookup_as_of(gw, NUMBER, on=date(2026, 4, 9))
    after = await lookup_as_of(gw, "T" + ID_LI, on=date(2026, 4, 10))
    assert before.verdict == Verdict.INCONCLUSIVE  # not "not found": certq knew nothing yet
    assert after.verdict == Verdict.NOT_FOUND  # the upload of that day holds no such number


async def test_expiry_is_judged_on_the_date_asked_about(past) -> None:
    # The 2026Q2 upload's card runs to 2031; looking at 2026 it is valid, whatever today is.
    answer = await lookup_as_of(past, NUMBER, on=date(2026, 8, 1))
    assert answer.certificates[0].effective == CertStatus.VALID


async def test_a_date_after_today_is_refused_as_invalid_input(past) -> None:
    with pytest.raises(FutureDate) as caught:
        await lookup_as_of(past, NUMBER, on=date(2026, 11, 26))
    err = describe(caught.value)
    assert (err.status, err.exit_code) == (422, 2) and "2026-11-26" in err.text


def test_a_date_is_written_yyyy_mm_dd() -> None:
    assert parse_date(" 2026-08-01 ") == date(2026, 8, 1)
    for bad in ("2026-8-1", "20260801", "2026-02-30", "yesterday"):
        with pytest.raises(InvalidDate):
            parse_date(bad)


async def test_the_live_lookup_is_untouched_by_the_history_of_uploads(past) -> None:
    """Today's lookup still sees only the current rows (2026Q2)."""
    hit = await past.store.find("mem", number=NUMBER)
    assert hit.quarter == "2026Q2" and hit.certificates[0].valid_until == date(2031, 1, 2)


async def test_the_same_file_uploaded_for_a_newer_quarter_makes_the_data_as_of_that_quarter(settings, tmp_path) -> None:
    store = await RecordStore.open(f"sqlite+aiosqlite:///{tmp_path / 'certq.sqlite3'}")
    gw = Gateway(settings, store, today=lambda: TODAY)
    try:
        q1 = await upload(store, tmp_path, "2026Q1", at(4, 10), "2029-01-02")
        path = tmp_path / "mem-2026Q1.csv"  # unchanged: the department re-affirms it for 2026Q2
        report = await store.import_file(path, department="mem", quarter="2026Q2")
        assert report.reaffirms == q1
        async with store.engine.begin() as conn:
            await conn.execute(sa.update(batches).where(batches.c.id == report.id).values(uploaded_at=at(7, 5)))
        before = await lookup_as_of(gw, NUMBER, on=date(2026, 6, 1))
        after = await lookup_as_of(gw, NUMBER, on=date(2026, 8, 1))
    finally:
        await gw.close()
    assert basis(before, "mem_records").data_as_of == datetime(2026, 3, 31, 23, 59, 59, 999999, tzinfo=CHINA_TIME)
    upload_then = basis(after, "mem_records")
    assert upload_then.quarter == "2026Q2"
    assert upload_then.data_as_of == datetime(2026, 6, 30, 23, 59, 59, 999999, tzinfo=CHINA_TIME)
    assert after.verdict == Verdict.VALID and after.certificates[0].valid_until == date(2029, 1, 2)
