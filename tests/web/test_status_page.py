"""The status page and `GET /api/v1/sources/{id}/history` after simulated outages (issue 14): the state now, the
availability bars, the incidents with their error kind, and the departments' upload freshness (overdue).

The history is written as gateway instances write it (`HealthLog` into the app's database) with a clock the test
moves; the page and the API are read at that clock's "now" (the service's `clock`), and overdue is judged on a
fixed day (its `today`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import schemathesis
from starlette.testclient import TestClient

from aggregator.records.source_health import HealthLog
from aggregator.web.app import create_app
from aggregator.web.openapi import openapi_spec
from aggregator.web.source_history import history_routes
from tests.helpers import FakeClock
from tests.records.test_source_health import call
from tests.web.test_pages import page_settings
from tests.web_support import WebEnv, build_env, quiet_config

START = datetime(2026, 11, 25, 8, 0, tzinfo=UTC).timestamp()
TODAY = date(2026, 12, 2)  # the 2026Q1 uploads: 2026Q3 was due by 30 October, 33 days ago
MIN = 60


@pytest.fixture()
def env(tmp_path: Path) -> WebEnv:
    env = build_env(tmp_path)
    clock = FakeClock(START)

    async def outages() -> None:
        """mem_records: 2 h healthy, a 30-minute outage (timeouts, then the store refusing), healthy again;
        samr_records: a 5-minute blip only (too short to be an incident)."""
        store = await env.open_store()
        log = HealthLog(store.engine, clock=clock)
        try:
            for minute in range(0, 4 * 60, 5):
                down = 120 <= minute < 150
                for _ in range(3):
                    log.record(call("timeout" if down and minute < 140 else "upstream_error" if down else "found",
                                    source="mem_records"))
                log.record(call("timeout" if minute == 60 else "not_found", source="samr_records"))
                clock.advance(5 * MIN)
            await log.flush()
        finally:
            await store.close()

    env.run(outages())
    env.now = clock.now  # type: ignore[attr-defined]
    return env


@pytest.fixture()
def client(env: WebEnv) -> Iterator[TestClient]:
    app = create_app(page_settings(), database_url=env.database_url, redis_url="", web=quiet_config())
    with TestClient(app, follow_redirects=False) as c:
        sources = c.app.state.services.sources  # type: ignore[attr-defined]
        sources.clock = lambda: env.now  # type: ignore[attr-defined]
        sources.today = lambda: TODAY
        yield c


def test_the_history_api_shows_the_outage_as_one_incident_with_its_error_kind(client: TestClient) -> None:
    r = client.get("/api/v1/sources/mem_records/history")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["id"], body["mode"], body["state"]) == ("mem_records", "records", "up")
    (incident,) = body["incidents"]
    assert incident["start"].startswith("2026-11-25T10:00") and incident["end"].startswith("2026-11-25T10:30")
    assert (incident["minutes"], incident["error_kind"], incident["ongoing"]) == (30, "timeout", False)
    assert incident["kinds"] == {"timeout": 12, "upstream_error": 6}
    day, month, quarter = body["windows"]
    assert [w["window"] for w in body["windows"]] == ["24h", "30d", "90d"]
    assert (len(day["bars"]), len(month["bars"]), len(quarter["bars"])) == (24, 30, 90)
    assert day["calls"] == 48 * 3 and day["availability"] == round(1 - 18 / 144, 4)
    ten = next(b for b in day["bars"] if b["start"].startswith("2026-11-25T10:00"))
    assert ten["availability"] == 0.5 and ten["kinds"] == {"timeout": 12, "upstream_error": 6}
    upload = body["upload"]
    assert (upload["quarter"], upload["expected_quarter"], upload["due_on"]) == ("2026Q1", "2026Q3", "2026-10-30")
    assert (upload["overdue"], upload["overdue_days"]) == (True, 33)

    samr = client.get("/api/v1/sources/samr_records/history").json()
    assert samr["incidents"] == []  # five minutes down is not an incident (incident_min_minutes = 10)
    assert samr["windows"][0]["outcomes"] == {"not_found": 47, "timeout": 1}


def test_the_history_answer_matches_its_declared_schema(client: TestClient) -> None:
    schema = schemathesis.openapi.from_dict(openapi_spec(history_routes()))
    operation = schema["/api/v1/sources/{source_id}/history"]["GET"]
    for source in ("mem_records", "samr_records", "mem_public"):
        r = client.get(f"/api/v1/sources/{source}/history")
        assert r.status_code == 200
        operation.validate_response(r)
    missing = client.get("/api/v1/sources/no_such_source/history")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")
    operation.validate_response(missing)


def test_the_status_page_shows_state_bars_incidents_and_overdue_uploads(client: TestClient) -> None:
    r = client.get("/sources")
    assert r.status_code == 200
    page = r.text
    for s in page_settings().sources:  # a link-out is never called by certq: no history, "manual" in the details
        assert f'data-source="{s.id}"' in page and (f'data-history="{s.id}"' in page) == (s.mode != "link")
    mem = page[page.index('data-history="mem_records"') :].split("</section>")[0]
    assert len(re.findall(r'class="bar bar-', mem)) == 24 + 30 + 90
    assert mem.count("bar bar-warn") >= 1  # the outage hour: half the calls failed
    (incident,) = re.findall(r"<li data-incident>(.*?)</li>", mem, re.S)
    assert "2026-11-25 18:00" in incident and "2026-11-25 18:30" in incident  # Beijing time
    assert "30 分钟" in incident and "数据源响应超时" in incident
    samr = page[page.index('data-history="samr_records"') :].split("</section>")[0]
    assert "过去 90 天无故障" in samr
    freshness = page[page.index('data-upload="mem"') :].split("</tr>")[0]
    assert "2026Q1" in freshness and "2026Q3" in freshness and "逾期 33 天" in freshness
    link = page[page.index('data-source="mem_public"') :].split("</tr>")[0]
    assert "人工查询" in link  # a link-out is never "down": a person checks it
    assert page.index('id="history"') < page.index('id="uploads"') < page.index('id="details"')


def test_an_unknown_source_has_no_history(client: TestClient) -> None:
    r = client.get("/api/v1/sources/../history")
    assert r.status_code == 404
    r = client.get("/api/v1/sources/x%00y/history")
    assert r.status_code == 404
