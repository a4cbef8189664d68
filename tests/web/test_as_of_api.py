"""`?as_of=YYYY-MM-DD` on the lookup API: the answer as certq knew it then, with the `as_of` block saying what
it rests on; a date after today is a 422; a date before the oldest data is inconclusive, with the reason.

The history: the template's 2026Q1 uploads, moved back to 10 April 2026; then a 2026Q2 MEM upload (today) that
shortens 张小三's card from 2099 to 2031.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from aggregator.records import RecordStore
from aggregator.records.schema import batches
from tests.web_support import HEADER, ID_ZHANG, MEM_NUMBER

URL = f"/api/v1/certificates/{MEM_NUMBER}"
Q1_UPLOADED = datetime(2026, 4, 10, 10, tzinfo=UTC)
Q2_CSV = HEADER + (
    f"{MEM_NUMBER},张小三,{ID_ZHANG},男,电工作业,低压电工作业,北京市应急管理局,2020-01-02,2023-01-02,2031-01-02,"
    "2026-01-02,有效\n"
)


@pytest.fixture()
def history(env):
    async def build() -> None:
        store = await RecordStore.open(env.database_url)
        try:
            async with store.engine.begin() as conn:
                await conn.execute(sa.update(batches).values(uploaded_at=Q1_UPLOADED))
            path = env.root / "mem-2026Q2.csv"
            path.write_text(Q2_CSV, encoding="utf-8")
            report = await store.import_file(path, department="mem", quarter="2026Q2", uploaded_by="test")
            assert report.status == "imported", report.problems
        finally:
            await store.close()

    asyncio.run(build())
    return env


def _mem_card(body: dict) -> dict:
    return next(c for c in body["certificates"] if c["number"] == MEM_NUMBER)


def _mem_records(body: dict) -> dict:
    return next(b for b in body["as_of"]["rests_on"] if b["source"] == "mem_records")


def test_a_past_date_answers_from_the_upload_in_force_then_and_says_so(history, make_client) -> None:
    client = make_client()
    today = client.get(URL, headers=history.auth("employer"))
    past = client.get(URL, params={"as_of": "2026-06-01"}, headers=history.auth("employer"))

    assert today.status_code == 200 and past.status_code == 200, past.text
    assert _mem_card(today.json())["valid_until"] == "2031-01-02"  # today: the 2026Q2 upload
    assert today.json().get("as_of") is None
    body = past.json()
    assert body["verdict"] == "valid"
    assert _mem_card(body)["valid_until"] == "2099-01-01"  # then: the 2026Q1 upload
    assert body["as_of"]["date"] == "2026-06-01"
    basis = _mem_records(body)
    assert basis["kind"] == "upload" and basis["quarter"] == "2026Q1"
    assert basis["data_as_of"].startswith("2026-03-31")  # the quarter's end: uploaded after it
    assert past.headers["cache-control"] == "no-store"


def test_a_date_after_today_is_a_422_problem(history, make_client) -> None:
    client = make_client()
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    r = client.get(URL, params={"as_of": tomorrow})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert tomorrow in r.json()["detail"]
    bad = client.get(URL, params={"as_of": "2026-02-30"})
    assert bad.status_code == 422 and "2026-02-30" in bad.text


def test_a_date_before_the_oldest_data_is_inconclusive_with_the_reason(history, make_client) -> None:
    client = make_client()
    r = client.get(URL, params={"as_of": "2026-03-01"})

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verdict"] == "inconclusive"
    assert "2026-04-10" in body["verdict_reason"]
    assert body["certificates"] == []
    assert body["as_of"]["oldest_data"].startswith("2026-04-10")
    assert _mem_records(body)["kind"] == "none"
    assert date.fromisoformat(body["as_of"]["date"]) == date(2026, 3, 1)
