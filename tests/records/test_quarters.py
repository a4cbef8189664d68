"""A quarter's data is as of the earlier of the quarter's end and the upload time; a quarter that has not started
yet cannot be uploaded (store, CLI exit code, HTTP 422)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from click.testing import CliRunner

from aggregator.errors import describe
from aggregator.records.report import (
    CHINA_TIME,
    FutureQuarter,
    InvalidQuarter,
    quarter_as_of,
    quarter_bounds,
    require_started,
)
from aggregator.web.problems import Unprocessable
from aggregator.web.services.uploads import parse_upload_quarter
from tests.records_support import ID_ZHANG, mem_row, write_csv

DEC_2 = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)


def test_a_quarter_upload_made_before_its_end_is_as_of_the_upload_not_the_quarters_end() -> None:
    assert quarter_as_of("2026Q4", DEC_2) == DEC_2  # not 31 December


def test_a_quarter_upload_made_after_its_end_is_as_of_the_quarters_last_day() -> None:
    # the quarter ends at midnight in Beijing, where the departments keep their quarters
    assert quarter_as_of("2026Q3", DEC_2) == datetime(2026, 9, 30, 23, 59, 59, 999999, tzinfo=CHINA_TIME)


def test_quarter_bounds() -> None:
    assert quarter_bounds("2026Q1") == (date(2026, 1, 1), date(2026, 3, 31))
    assert quarter_bounds("2026Q4") == (date(2026, 10, 1), date(2026, 12, 31))
    with pytest.raises(InvalidQuarter):
        quarter_bounds("2026Q5")


def test_a_quarter_that_has_not_started_is_refused_with_a_clear_error() -> None:
    assert require_started("2026Q4", date(2026, 12, 2)) == "2026Q4"
    assert require_started("2027Q1", date(2027, 1, 1)) == "2027Q1"
    with pytest.raises(FutureQuarter) as caught:
        require_started("2027Q1", date(2026, 12, 31))
    err = describe(caught.value)
    assert (err.status, err.exit_code) == (422, 2)
    assert "2027Q1" in err.text and "尚未开始" in err.text and "not started" in err.text


async def test_the_store_says_what_an_upload_is_as_of_and_refuses_a_future_quarter(store, tmp_path) -> None:
    path = write_csv(tmp_path / "mem.csv", [mem_row()])
    report = await store.import_file(path, department="mem", quarter="2026Q2")
    hit = await store.find("mem", number="T" + ID_ZHANG)
    assert hit.data_as_of == min(report.uploaded_at, datetime(2026, 6, 30, 23, 59, 59, 999999, tzinfo=CHINA_TIME))

    next_year = datetime.now(UTC).year + 1
    with pytest.raises(FutureQuarter):
        await store.import_file(write_csv(tmp_path / "next.csv", [mem_row(name="李四")]), department="mem",
                                quarter=f"{next_year}Q1")
    assert [b.quarter for b in await store.list_batches("mem")] == ["2026Q2"]  # nothing recorded


def test_the_upload_service_answers_422_for_a_future_quarter() -> None:
    future = f"{datetime.now(UTC).year + 1}年第1季度"
    with pytest.raises(Unprocessable) as caught:
        parse_upload_quarter(future)
    assert describe(caught.value).status == 422 and "尚未开始" in caught.value.zh


def test_certq_import_exits_2_for_a_future_quarter(tmp_path) -> None:
    from aggregator.cli import main

    path = write_csv(tmp_path / "mem.csv", [mem_row()])
    future = (datetime.now(UTC) + timedelta(days=200)).year + 1
    result = CliRunner().invoke(
        main,
        ["import", str(path), "-d", "mem", "-q", f"{future}Q1", "--db", f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite3'}"],
    )
    assert result.exit_code == 2, result.output
    assert "尚未开始" in result.output or "not started" in result.output
