"""The JSON API v1 over HTTP: who may call what (the allowed/denied matrix), what each role sees, the audit
log, batch verification, uploads scoped to their department, size and rate limits, proxy headers, input
validation before any source is asked, probes and metrics, and problem documents for every error.

What the pages show (tests/web/test_pages.py) and the masking rules one by one (tests/web/test_masking.py)
are pinned there; here the same rules are checked as an API client meets them.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aggregator.web.app import create_app
from tests.helpers import make_id
from tests.redis_server import free_port
from tests.web.conftest import app_for
from tests.web_support import (
    HEADER,
    ID_LI,
    ID_ZHANG,
    MEM_CSV,
    MEM_EXPIRED,
    MEM_NUMBER,
    MOHURD_CSV,
    MOHURD_NUMBER,
    SAMR_CSV,
    TestClient,
    WebEnv,
    build_env,
    quiet_config,
    records_settings,
)

SETTINGS = records_settings()
CJK = re.compile(r"[\u4e00-\u9fff]")
PROBLEM_JSON = "application/problem+json"

# A new holder for each department's second-quarter file (so every upload below is a different file).
ID_NEW = make_id("110105", "19920101", "555")
MEM_NEW = "T" + ID_NEW
MEM_Q2 = MEM_CSV + (
    f"{MEM_NEW},王新,{ID_NEW},男,电工作业,高压电工作业,北京市应急管理局,2025-01-02,2025-01-02,2099-01-01,,有效\n"
)
ID_SAMR_NEW = make_id("110105", "19930202", "666")
SAMR_Q2 = SAMR_CSV + (
    f"{ID_SAMR_NEW},赵新,{ID_SAMR_NEW},男,特种设备作业,GTAW-FeII-6G-3/60-FefS-02/10/12,北京市市场监督管理局,"
    "2025-01-01,2025-01-01,2099-01-01,,有效\n"
)
MOHURD_Q2 = MOHURD_CSV + (
    f"京A012025000777,钱新,{make_id('440104', '19800101', '777')},男,建筑电工,建筑电工,北京市住房和城乡建设委员会,"
    "2025-05-06,2025-05-06,2099-05-06,,有效\n"
)
BAD_MEM = HEADER + f"{MEM_NEW},王新,{ID_NEW},男,电工作业,高压电工作业,北京市应急管理局,2025-01-02,2025-01-02,明年,,有效\n"


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture()
def client(env: WebEnv) -> Iterator[TestClient]:
    with TestClient(app_for(env)) as c:
        yield c


# --- helpers -------------------------------------------------------------------------------------------


def assert_problem(r: Any, status: int, title: str | None = None) -> dict[str, Any]:
    """An RFC 9457 problem document with the status of the response and the message in Chinese and English."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith(PROBLEM_JSON), r.headers["content-type"]
    body = r.json()
    for member in ("type", "title", "status", "detail", "detail_zh", "detail_en"):
        assert body.get(member), f"problem document without {member}: {body}"
    assert body["status"] == status
    assert body["type"].endswith(body["title"])
    if title is not None:
        assert body["title"] == title, body
    assert CJK.search(body["detail_zh"]), f"no Chinese in detail_zh: {body['detail_zh']!r}"
    assert re.search(r"[A-Za-z]{3}", body["detail_en"]) and body["detail_en"] != body["detail_zh"]
    assert body["detail_zh"] in body["detail"] and body["detail_en"] in body["detail"]
    return body


def audit(client: TestClient, env: WebEnv, key: str | None = None) -> list[dict[str, Any]]:
    """The audit log as an admin reads it (newest first), optionally only `key`'s entries."""
    params = {"key_id": env.key_ids[key]} if key else {}
    r = client.get("/api/v1/audit", params=params, headers=env.auth("admin"))
    assert r.status_code == 200, r.text
    return r.json()["entries"]


def audit_rows(env: WebEnv) -> int:
    with sqlite3.connect(env.root / "certq.sqlite3") as db:
        return int(db.execute("SELECT count(*) FROM audit_log").fetchone()[0])


def batch_count(env: WebEnv) -> int:
    with sqlite3.connect(env.root / "certq.sqlite3") as db:
        return int(db.execute("SELECT count(*) FROM batches").fetchone()[0])


def batch_id(env: WebEnv, department: str) -> int:
    with sqlite3.connect(env.root / "certq.sqlite3") as db:
        return int(db.execute("SELECT min(id) FROM batches WHERE department = ?", (department,)).fetchone()[0])


def upload(client: TestClient, headers: dict[str, str], content: str, quarter: str = "2026Q2",
           params: dict[str, str] | None = None, **fields: str) -> Any:
    return client.post(
        "/api/v1/uploads",
        params=params,
        headers=headers,
        data={"quarter": quarter, **fields},
        files={"file": ("records.csv", content.encode("utf-8"), "text/csv")},
    )


def spy_on_sources(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the sources the app's gateway asks from now on."""
    gateway = client.app.state.services.gateway  # type: ignore[attr-defined]
    asked: list[str] = []
    original = gateway._ask

    async def recording(source: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(source.id)
        return await original(source, *args, **kwargs)

    monkeypatch.setattr(gateway, "_ask", recording)
    return asked


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: dict, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when there is none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


# --- the allowed/denied matrix ---------------------------------------------------------------------------

WHO = ("public", "employer", "regulator", "department-mem", "department-samr", "admin", "revoked", "garbage")
PURPOSE = "matrix spot check"


def _verify(c: TestClient, h: dict[str, str], env: WebEnv, who: str) -> Any:
    return c.post("/api/v1/verifications", headers=h, json={"pairs": [{"number": MEM_NUMBER, "name": "张小三"}]})


def _upload(c: TestClient, h: dict[str, str], env: WebEnv, who: str) -> Any:
    # each caller that may upload sends its own department's file; the admin names the department
    if who == "department-samr":
        return upload(c, h, SAMR_Q2)
    if who == "admin":
        return upload(c, h, MOHURD_Q2, department="mohurd")
    return upload(c, h, MEM_Q2)


def _get(path: str) -> Callable[..., Any]:
    def call(c: TestClient, h: dict[str, str], env: WebEnv, who: str) -> Any:
        return c.get(path.format(mem_batch=batch_id(env, "mem")), headers=h)

    return call


# Every endpoint, and what each caller gets. A regulator always states a purpose here (without one: 400, below).
MATRIX: dict[str, tuple[int, ...]] = {
    #                                  public employer regulator dept-mem dept-samr admin revoked garbage
    "GET  /api/v1/certificates/{number}": (200, 200, 200, 200, 200, 200, 401, 401),
    "POST /api/v1/verifications":         (401, 200, 200, 403, 403, 200, 401, 401),
    "POST /api/v1/uploads":               (401, 403, 403, 201, 201, 201, 401, 401),
    "GET  /api/v1/uploads":               (401, 403, 200, 200, 200, 200, 401, 401),
    "GET  /api/v1/uploads/{batch_id}":    (401, 403, 200, 200, 403, 200, 401, 401),  # mem's batch
    "GET  /api/v1/sources":               (200, 200, 200, 200, 200, 200, 401, 401),
    "GET  /api/v1/sources/{source_id}/history": (200, 200, 200, 200, 200, 200, 401, 401),
    "GET  /api/v1/recognition":           (200, 200, 200, 200, 200, 200, 401, 401),
    "GET  /api/v1/audit":                 (401, 403, 200, 403, 403, 200, 401, 401),
    "GET  /api/v1/whoami":                (200, 200, 200, 200, 200, 200, 401, 401),
    # signed receipts (issue 12): anyone may have one issued of what they may see; whoever holds its id may read it
    "POST /api/v1/receipts":              (201, 201, 201, 201, 201, 201, 401, 401),
    "GET  /api/v1/receipts/{receipt_id}": (200, 200, 200, 200, 200, 200, 401, 401),
    "GET  /openapi.json":                 (200, 200, 200, 200, 200, 200, 401, 401),
    "GET  /docs":                         (200, 200, 200, 200, 200, 200, 401, 401),
    # probes answer whatever Authorization header comes with them (a load balancer's stray header included)
    "GET  /healthz":                      (200, 200, 200, 200, 200, 200, 200, 200),
    "GET  /readyz":                       (200, 200, 200, 200, 200, 200, 200, 200),
    "GET  /metrics":                      (200, 200, 200, 200, 200, 200, 200, 200),
    # the pages take the same keys (a Bearer header here; signed in with a cookie in tests/web/test_pages.py)
    "GET  /":                             (200, 200, 200, 200, 200, 200, 401, 401),
    "GET  /lookup":                       (200, 200, 200, 200, 200, 200, 401, 401),
    "GET  /sources":                      (200, 200, 200, 200, 200, 200, 401, 401),
    "GET  /employer":                     (401, 200, 200, 403, 403, 200, 401, 401),
    "GET  /regulator":                    (401, 403, 200, 403, 403, 200, 401, 401),
    "GET  /department":                   (401, 403, 403, 200, 200, 200, 401, 401),
    # the holder's view (issue 12): the holder proves who they are with the details, whatever key comes along
    "POST /api/v1/holder/lookups":        (200, 200, 200, 200, 200, 200, 401, 401),
    "GET  /holder":                       (200, 200, 200, 200, 200, 200, 401, 401),
    # rosters (issue 11): employers' (and admins', each as its own organisation); the roster and job here are the
    # employer's, so the admin (another organisation) gets 404 as if they did not exist
    "POST /api/v1/rosters":                          (401, 201, 403, 403, 403, 201, 401, 401),
    "GET  /api/v1/rosters":                          (401, 200, 403, 403, 403, 200, 401, 401),
    "GET  /api/v1/rosters/{roster_id}":              (401, 200, 403, 403, 403, 404, 401, 401),
    "GET  /api/v1/rosters/{roster_id}/members":      (401, 200, 403, 403, 403, 404, 401, 401),
    "POST /api/v1/rosters/{roster_id}/members":      (401, 201, 403, 403, 403, 404, 401, 401),
    "PATCH /api/v1/rosters/{roster_id}/members/{ref}": (401, 200, 403, 403, 403, 404, 401, 401),
    "DELETE /api/v1/rosters/{roster_id}/members/{ref}": (401, 200, 403, 403, 403, 404, 401, 401),
    "PUT  /api/v1/rosters/{roster_id}/monitoring":   (401, 200, 403, 403, 403, 404, 401, 401),
    "POST /api/v1/rosters/{roster_id}/verify":       (401, 202, 403, 403, 403, 404, 401, 401),
    "GET  /api/v1/rosters/{roster_id}/results":      (401, 200, 403, 403, 403, 404, 401, 401),
    "GET  /api/v1/rosters/{roster_id}/events":       (401, 200, 403, 403, 403, 404, 401, 401),
    "GET  /api/v1/jobs/{job_id}":                    (401, 200, 403, 403, 403, 404, 401, 401),
    "POST /api/v1/jobs/{job_id}/cancel":             (401, 200, 403, 403, 403, 404, 401, 401),
    # webhooks (issue 11): like rosters; the endpoint here is the employer's (the admin is another organisation),
    # and the delivery replayed does not exist
    "POST /api/v1/webhooks":                              (401, 201, 403, 403, 403, 201, 401, 401),
    "GET  /api/v1/webhooks":                              (401, 200, 403, 403, 403, 200, 401, 401),
    "GET  /api/v1/webhooks/{webhook_id}":                 (401, 200, 403, 403, 403, 404, 401, 401),
    "PATCH /api/v1/webhooks/{webhook_id}":                (401, 200, 403, 403, 403, 404, 401, 401),
    "DELETE /api/v1/webhooks/{webhook_id}":               (401, 200, 403, 403, 403, 404, 401, 401),
    "POST /api/v1/webhooks/{webhook_id}/rotate-secret":   (401, 200, 403, 403, 403, 404, 401, 401),
    "GET  /api/v1/webhooks/{webhook_id}/deliveries":      (401, 200, 403, 403, 403, 404, 401, 401),
    "POST /api/v1/webhooks/deliveries/{delivery_id}/replay": (401, 404, 403, 403, 403, 404, 401, 401),
    # spot-check campaigns (issue 14): regulators' and admins' only; nobody else learns that one exists
    "POST /api/v1/campaigns":                             (401, 403, 201, 403, 403, 201, 401, 401),
    "GET  /api/v1/campaigns":                             (401, 403, 200, 403, 403, 200, 401, 401),
    "GET  /api/v1/campaigns/{campaign_id}":               (401, 403, 200, 403, 403, 200, 401, 401),
    "POST /api/v1/campaigns/{campaign_id}/runs":          (401, 403, 202, 403, 403, 202, 401, 401),
    "GET  /api/v1/campaigns/{campaign_id}/report":        (401, 403, 200, 403, 403, 200, 401, 401),
    "GET  /api/v1/campaigns/{campaign_id}/export":        (401, 403, 200, 403, 403, 200, 401, 401),
    "GET  /regulator/campaigns":                          (401, 403, 200, 403, 403, 200, 401, 401),
}  # fmt: skip


def _employer_roster(c: TestClient, env: WebEnv) -> str:
    r = c.post("/api/v1/rosters", headers=env.auth("employer"),
               json={"name": "matrix", "members": [{"number": MEM_NUMBER, "name": "张小三", "ref": "E1"}]})
    return str(r.json()["roster"]["id"])


def _on_roster(method: str, suffix: str, **kw: Any) -> Callable[..., Any]:
    def call(c: TestClient, h: dict[str, str], env: WebEnv, who: str) -> Any:
        return c.request(method, f"/api/v1/rosters/{_employer_roster(c, env)}{suffix}", headers=h, **kw)

    return call


def _on_job(suffix: str, method: str = "GET") -> Callable[..., Any]:
    def call(c: TestClient, h: dict[str, str], env: WebEnv, who: str) -> Any:
        job = c.post(f"/api/v1/rosters/{_employer_roster(c, env)}/verify", headers=env.auth("employer")).json()
        return c.request(method, f"/api/v1/jobs/{job['id']}{suffix}", headers=h)

    return call


WEBHOOK = {"url": "https://93.184.215.14/certq-hook"}  # a public address: no DNS needed


def _on_webhook(method: str, suffix: str, **kw: Any) -> Callable[..., Any]:
    def call(c: TestClient, h: dict[str, str], env: WebEnv, who: str) -> Any:
        have = c.get("/api/v1/webhooks", headers=env.auth("employer")).json()["webhooks"]  # (at most 20 each)
        webhook = have[0] if have else c.post("/api/v1/webhooks", headers=env.auth("employer"), json=WEBHOOK).json()
        return c.request(method, f"/api/v1/webhooks/{webhook['id']}{suffix}", headers=h, **kw)

    return call


CAMPAIGN = {"name": "matrix", "filters": {"departments": ["mem"]}, "design": {"n": 1, "seed": 1}}


def _on_campaign(method: str, suffix: str) -> Callable[..., Any]:
    def call(c: TestClient, h: dict[str, str], env: WebEnv, who: str) -> Any:
        made = c.post("/api/v1/campaigns", headers=env.auth("regulator"), json=CAMPAIGN).json()
        return c.request(method, f"/api/v1/campaigns/{made['id']}{suffix}", headers=h)

    return call


# How each endpoint is called (the rest are plain GETs of their path).
REQUESTS: dict[str, Callable[..., Any]] = {
    "POST /api/v1/webhooks": lambda c, h, env, who: c.post("/api/v1/webhooks", headers=h, json=WEBHOOK),
    "GET  /api/v1/webhooks/{webhook_id}": _on_webhook("GET", ""),
    "PATCH /api/v1/webhooks/{webhook_id}": _on_webhook("PATCH", "", json={"description": "HR"}),
    "DELETE /api/v1/webhooks/{webhook_id}": _on_webhook("DELETE", ""),
    "POST /api/v1/webhooks/{webhook_id}/rotate-secret": _on_webhook("POST", "/rotate-secret"),
    "GET  /api/v1/webhooks/{webhook_id}/deliveries": _on_webhook("GET", "/deliveries"),
    "POST /api/v1/webhooks/deliveries/{delivery_id}/replay": lambda c, h, env, who: c.post(
        "/api/v1/webhooks/deliveries/999999/replay", headers=h
    ),
    "POST /api/v1/campaigns": lambda c, h, env, who: c.post("/api/v1/campaigns", headers=h, json=CAMPAIGN),
    "GET  /api/v1/campaigns/{campaign_id}": _on_campaign("GET", ""),
    "POST /api/v1/campaigns/{campaign_id}/runs": _on_campaign("POST", "/runs"),
    "GET  /api/v1/campaigns/{campaign_id}/report": _on_campaign("GET", "/report"),
    "GET  /api/v1/campaigns/{campaign_id}/export": _on_campaign("GET", "/export"),
    "POST /api/v1/rosters": lambda c, h, env, who: c.post(
        "/api/v1/rosters", headers=h, json={"name": "m", "members": [{"number": MEM_NUMBER, "name": "张小三"}]}
    ),
    "GET  /api/v1/rosters/{roster_id}": _on_roster("GET", ""),
    "GET  /api/v1/rosters/{roster_id}/members": _on_roster("GET", "/members"),
    "POST /api/v1/rosters/{roster_id}/members": _on_roster(
        "POST", "/members", json={"number": MOHURD_NUMBER, "name": "李四", "ref": "E2"}
    ),
    "PATCH /api/v1/rosters/{roster_id}/members/{ref}": _on_roster("PATCH", "/members/E1", json={"team": "二班"}),
    "DELETE /api/v1/rosters/{roster_id}/members/{ref}": _on_roster("DELETE", "/members/E1"),
    "PUT  /api/v1/rosters/{roster_id}/monitoring": _on_roster("PUT", "/monitoring", json={"enabled": True, "every_h": 12}),
    "POST /api/v1/rosters/{roster_id}/verify": _on_roster("POST", "/verify"),
    "GET  /api/v1/rosters/{roster_id}/results": _on_roster("GET", "/results"),
    "GET  /api/v1/rosters/{roster_id}/events": _on_roster("GET", "/events"),
    "GET  /api/v1/jobs/{job_id}": _on_job(""),
    "POST /api/v1/jobs/{job_id}/cancel": _on_job("/cancel", "POST"),
    "GET  /api/v1/certificates/{number}": _get(f"/api/v1/certificates/{MEM_NUMBER}"),
    "POST /api/v1/verifications": _verify,
    "POST /api/v1/uploads": _upload,
    "GET  /api/v1/uploads/{batch_id}": _get("/api/v1/uploads/{mem_batch}"),
    "GET  /api/v1/sources/{source_id}/history": _get("/api/v1/sources/mem_records/history"),
    "GET  /lookup": _get(f"/lookup?number={MEM_NUMBER}&purpose={quote(PURPOSE)}"),
    "POST /api/v1/receipts": lambda c, h, env, who: c.post("/api/v1/receipts", headers=h, json={"number": MEM_NUMBER}),
    "GET  /api/v1/receipts/{receipt_id}": lambda c, h, env, who: c.get(
        "/api/v1/receipts/" + c.post("/api/v1/receipts", json={"number": MEM_NUMBER}).json()["id"], headers=h
    ),
    "POST /api/v1/holder/lookups": lambda c, h, env, who: c.post(
        "/api/v1/holder/lookups", headers=h, json={"number": MEM_NUMBER, "name": "张小三", "id_number": MEM_NUMBER[1:]}
    ),
}
assert all(len(row) == len(WHO) for row in MATRIX.values())
CASES = [
    pytest.param(endpoint, who, expected, id=f"{' '.join(endpoint.split())} as {who} -> {expected}")
    for endpoint, statuses in MATRIX.items()
    for who, expected in zip(WHO, statuses, strict=True)
]


@pytest.fixture(scope="module")
def matrix_env(tmp_path_factory: pytest.TempPathFactory) -> WebEnv:
    return build_env(tmp_path_factory.mktemp("web-api-matrix"))


@pytest.fixture(scope="module")
def matrix_client(matrix_env: WebEnv) -> Iterator[TestClient]:
    with TestClient(app_for(matrix_env)) as c:
        yield c


def test_the_matrix_covers_every_route_of_the_app() -> None:
    app = create_app(SETTINGS, database_url="sqlite+aiosqlite:///:memory:", redis_url="", web=quiet_config())
    routes = {(m, r.path) for r in app.routes if getattr(r, "methods", None) for m in r.methods if m != "HEAD"}
    machine = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")
    api = {r for r in routes if r[1].startswith("/api/") or r[1] in machine}
    assert len(api) >= 14
    covered = {tuple(e.split()) for e in MATRIX}
    assert api <= covered, f"endpoints missing from the matrix: {sorted(api - covered)}"


@pytest.mark.parametrize(("endpoint", "who", "expected"), CASES)
def test_allowed_and_denied(matrix_client: TestClient, matrix_env: WebEnv, endpoint: str, who: str,
                            expected: int) -> None:
    call = REQUESTS.get(endpoint) or _get(endpoint.split()[1])
    headers = matrix_env.auth(None if who == "public" else who, purpose=PURPOSE if who == "regulator" else None)
    r = call(matrix_client, headers, matrix_env, who)
    assert r.status_code == expected, f"{endpoint} as {who}: {r.status_code} {r.text[:300]}"
    if expected == 401 and r.headers["content-type"].startswith(PROBLEM_JSON):
        body = assert_problem(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert body["title"] == ("authentication-required" if who == "public" else "invalid-key")
    elif expected in (403, 404) and r.headers["content-type"].startswith(PROBLEM_JSON):
        assert_problem(r, expected)  # 404: another organisation's roster or job, as if it did not exist
    elif expected >= 400:  # a page: the sign-in form instead of the page, as HTML
        assert r.headers["content-type"].startswith("text/html") and 'name="key"' in r.text


# --- what each role sees, through the API -----------------------------------------------------------------


def test_the_public_gets_a_masked_answer_without_id_numbers(client: TestClient) -> None:
    r = client.get(f"/api/v1/certificates/{MOHURD_NUMBER}", params={"name": "李四"})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    view = r.json()
    assert view["verdict"] == "valid" and view["view"] == {"role": "public", "masked": True}
    assert [c["holder_name"] for c in view["certificates"]] == ["李*"]
    assert "name_matches" not in view and "name_matches" not in view["certificates"][0]
    assert "李四" not in r.text and ID_LI not in r.text
    assert "holder_id_number" not in r.text and '"gender"' not in r.text


@pytest.mark.parametrize("who", ["employer", "department-mem"])
def test_keyed_roles_short_of_regulator_see_masked_answers_too(client: TestClient, env: WebEnv, who: str) -> None:
    r = client.get(f"/api/v1/certificates/{MOHURD_NUMBER}", params={"name": "李四"}, headers=env.auth(who))
    view = r.json()
    assert view["view"]["masked"] is True and view["certificates"][0]["holder_name"] == "李*"
    assert "李四" not in r.text and ID_LI not in r.text


def test_an_employer_learns_whether_the_name_matches_and_nothing_more(client: TestClient, env: WebEnv) -> None:
    ok = client.get(f"/api/v1/certificates/{MEM_NUMBER}", params={"name": "张小三"}, headers=env.auth("employer"))
    assert ok.json()["verdict"] == "valid" and ok.json()["name_matches"] is True
    wrong = client.get(f"/api/v1/certificates/{MOHURD_NUMBER}", params={"name": "王五"}, headers=env.auth("employer"))
    assert wrong.json()["verdict"] == "name_mismatch" and wrong.json()["name_matches"] is False
    assert "李" not in json.dumps(wrong.json()["certificates"], ensure_ascii=False)  # whose it is stays hidden
    assert ID_LI not in wrong.text


@pytest.mark.parametrize("who", ["regulator", "admin"])
def test_regulators_and_admins_see_the_full_record(client: TestClient, env: WebEnv, who: str) -> None:
    r = client.get(f"/api/v1/certificates/{MOHURD_NUMBER}", headers=env.auth(who, purpose="spot check"))
    view = r.json()
    assert view["view"] == {"role": who, "masked": False}
    cert = view["certificates"][0]
    assert cert["holder_name"] == "李四" and cert["holder_id_number"] == ID_LI and cert["gender"] == "男"


def test_batch_answers_are_masked_for_employers_and_full_for_regulators(client: TestClient, env: WebEnv) -> None:
    body = {"pairs": [{"number": MOHURD_NUMBER, "name": "李四"}], "purpose": "复核"}
    employer = client.post("/api/v1/verifications", json=body, headers=env.auth("employer"))
    assert employer.json()["results"][0]["answer"]["certificates"][0]["holder_name"] == "李*"
    assert "李四" not in employer.text and ID_LI not in employer.text
    regulator = client.post("/api/v1/verifications", json=body, headers=env.auth("regulator"))
    assert regulator.json()["results"][0]["answer"]["certificates"][0]["holder_id_number"] == ID_LI


# --- the audit log -----------------------------------------------------------------------------------


def test_a_lookup_by_key_writes_who_role_purpose_query_verdict_and_time(client: TestClient, env: WebEnv) -> None:
    before = datetime.now(UTC)
    typed = MEM_NUMBER[:7].lower() + " " + MEM_NUMBER[7:]  # as a person types it
    r = client.get(
        f"/api/v1/certificates/{quote(typed)}",
        params={"name": "张小三"},
        headers={**env.auth("employer"), "X-Purpose": quote("入职核验 2026")},
    )
    assert r.status_code == 200 and r.json()["verdict"] == "valid"
    entries = audit(client, env, "employer")
    assert len(entries) == 1
    e = entries[0]
    assert e["key_id"] == env.key_ids["employer"] and e["role"] == "employer" and e["action"] == "lookup"
    assert e["number"] == MEM_NUMBER  # normalised
    assert e["name_given"] is True and e["id_number_given"] is False
    assert e["verdict"] == "valid" and e["purpose"] == "入职核验 2026" and e["client_ip"] == "testclient"
    at = datetime.fromisoformat(e["at"])
    assert before - timedelta(seconds=5) <= at <= datetime.now(UTC) + timedelta(seconds=5)
    assert "张小三" not in json.dumps(entries, ensure_ascii=False)  # the name given is never logged


@pytest.mark.parametrize("who", ["employer", "regulator", "department-mem", "admin"])
def test_every_keyed_role_is_audited_and_the_public_is_not(client: TestClient, env: WebEnv, who: str) -> None:
    client.get(f"/api/v1/certificates/{MEM_EXPIRED}")
    assert audit_rows(env) == 0
    r = client.get(f"/api/v1/certificates/{MEM_EXPIRED}", headers=env.auth(who, purpose="spot check"))
    assert r.status_code == 200
    [entry] = audit(client, env, who)
    assert entry["role"] == who.split("-")[0] and entry["verdict"] == "expired" and entry["number"] == MEM_EXPIRED


def test_a_regulator_without_a_purpose_is_refused_before_anything_is_asked(
    client: TestClient, env: WebEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = spy_on_sources(client, monkeypatch)
    for headers in (env.auth("regulator"), {**env.auth("regulator"), "X-Purpose": "   "}):
        r = client.get(f"/api/v1/certificates/{MEM_NUMBER}", headers=headers)
        assert_problem(r, 400, "purpose-required")
        assert "certificates" not in r.json()
    assert asked == [] and audit_rows(env) == 0

    too_long = client.get(f"/api/v1/certificates/{MEM_NUMBER}", params={"purpose": "x" * 501},
                          headers=env.auth("regulator"))
    assert_problem(too_long, 422)

    r = client.get(f"/api/v1/certificates/{MEM_NUMBER}", params={"purpose": "专项检查"}, headers=env.auth("regulator"))
    assert r.status_code == 200 and asked  # the purpose as a query parameter is enough
    assert audit(client, env, "regulator")[0]["purpose"] == "专项检查"

    batch = client.post("/api/v1/verifications", json={"pairs": [{"number": MEM_NUMBER}]},
                        headers=env.auth("regulator"))
    assert_problem(batch, 400, "purpose-required")


def test_a_batch_writes_one_entry_per_pair_looked_up(client: TestClient, env: WebEnv) -> None:
    pairs = [{"number": MEM_NUMBER, "name": "张小三"}, {"number": MOHURD_NUMBER}, {"number": "T1101<05"}]
    r = client.post("/api/v1/verifications", json={"pairs": pairs, "purpose": "入职前核验"}, headers=env.auth("employer"))
    assert r.status_code == 200
    entries = audit(client, env, "employer")
    assert sorted(e["number"] for e in entries) == sorted([MEM_NUMBER, MOHURD_NUMBER])  # the bad one was not looked up
    assert {e["action"] for e in entries} == {"verification"} and {e["purpose"] for e in entries} == {"入职前核验"}
    by_number = {e["number"]: e for e in entries}
    assert by_number[MEM_NUMBER]["name_given"] is True and by_number[MOHURD_NUMBER]["name_given"] is False


def test_the_audit_log_can_be_read_per_key(client: TestClient, env: WebEnv) -> None:
    client.get(f"/api/v1/certificates/{MEM_NUMBER}", headers=env.auth("employer"))
    client.get(f"/api/v1/certificates/{MOHURD_NUMBER}", headers=env.auth("admin"))
    assert [e["number"] for e in audit(client, env)] == [MOHURD_NUMBER, MEM_NUMBER]  # newest first
    assert [e["number"] for e in audit(client, env, "employer")] == [MEM_NUMBER]
    limited = client.get("/api/v1/audit", params={"limit": 1}, headers=env.auth("regulator")).json()["entries"]
    assert len(limited) == 1
    assert_problem(client.get("/api/v1/audit", params={"limit": "many"}, headers=env.auth("admin")), 422)


def test_no_answer_is_shown_when_the_audit_log_cannot_be_written(client: TestClient, env: WebEnv) -> None:
    with sqlite3.connect(env.root / "certq.sqlite3") as db:
        db.execute("DROP TABLE audit_log")
    r = client.get(f"/api/v1/certificates/{MEM_NUMBER}", headers=env.auth("regulator", purpose="check"))
    assert_problem(r, 503, "audit-unavailable")
    assert "张小三" not in r.text and "certificates" not in r.json()
    assert client.get(f"/api/v1/certificates/{MEM_NUMBER}").status_code == 200  # unaudited public lookups go on


# --- batch verification ------------------------------------------------------------------------------------


def test_batch_verification_json(client: TestClient, env: WebEnv) -> None:
    pairs = [
        {"number": MEM_NUMBER, "name": "张小三"},
        {"number": MOHURD_NUMBER, "name": "王五"},
        {"number": MEM_EXPIRED, "name": "欧阳小明"},
        {"number": "T1101<05", "name": "张三"},
    ]
    r = client.post("/api/v1/verifications", json={"pairs": pairs}, headers=env.auth("employer"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["count"] == 4
    assert body["summary"] == {"error": 1, "expired": 1, "name_mismatch": 1, "valid": 1}
    rows = body["results"]
    assert [row["row"] for row in rows] == [1, 2, 3, 4]
    assert [row["verdict"] for row in rows] == ["valid", "name_mismatch", "expired", None]
    assert [row["name_matches"] for row in rows] == [True, False, True, None]
    bad = rows[3]
    assert bad["answer"] is None and bad["error"]["status"] == 422 and bad["error"]["title"] == "invalid-number"
    assert CJK.search(bad["error"]["detail_zh"]) and bad["error"]["detail_en"]


def test_a_bare_list_of_pairs_is_accepted(client: TestClient, env: WebEnv) -> None:
    r = client.post("/api/v1/verifications", json=[{"number": MEM_NUMBER}], headers=env.auth("employer"))
    assert r.status_code == 200 and r.json()["count"] == 1


def test_batch_verification_csv_in_and_out(client: TestClient, env: WebEnv) -> None:
    text = f"证书编号,姓名\n{MEM_NUMBER},张小三\n{MOHURD_NUMBER},王五\n"
    r = client.post(
        "/api/v1/verifications",
        content=text.encode("gb18030"),  # spreadsheet programs in China save GB18030
        headers={**env.auth("employer"), "Content-Type": "text/csv", "Accept": "text/csv"},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert [(row["row"], row["number"], row["verdict"], row["name_matches"]) for row in rows] == [
        ("2", MEM_NUMBER, "valid", "yes"),
        ("3", MOHURD_NUMBER, "name_mismatch", "no"),
    ]
    assert "李四" not in r.content.decode("utf-8-sig")

    as_json = client.post("/api/v1/verifications", content=text.encode(), params={"format": "json"},
                          headers={**env.auth("employer"), "Content-Type": "text/csv", "Accept": "text/csv"})
    assert as_json.headers["content-type"].startswith("application/json") and as_json.json()["count"] == 2

    form = client.post("/api/v1/verifications", params={"format": "csv"}, headers=env.auth("employer"),
                       files={"file": ("list.csv", text.encode("utf-8-sig"), "text/csv")})
    assert form.status_code == 200 and form.headers["content-type"].startswith("text/csv")
    assert len(list(csv.DictReader(io.StringIO(form.content.decode("utf-8-sig"))))) == 2


def test_batch_limits_and_bad_bodies_are_problems_and_nothing_is_looked_up(
    make_client: Callable[..., TestClient], env: WebEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(quiet_config(batch_max=3))
    asked = spy_on_sources(client, monkeypatch)
    h = env.auth("employer")
    four = [{"number": MEM_NUMBER}] * 4
    assert_problem(client.post("/api/v1/verifications", json={"pairs": four}, headers=h), 422)
    csv_four = "number\n" + f"{MEM_NUMBER}\n" * 4
    assert_problem(client.post("/api/v1/verifications", content=csv_four,
                               headers={**h, "Content-Type": "text/csv"}), 422)
    assert_problem(client.post("/api/v1/verifications", json={"pairs": []}, headers=h), 422)
    assert_problem(client.post("/api/v1/verifications", json={"pairs": [{"number": "x" * 65}]}, headers=h), 422)
    assert_problem(client.post("/api/v1/verifications", json={"pairs": [{"numbr": MEM_NUMBER}]}, headers=h), 422)
    assert_problem(client.post("/api/v1/verifications", content=b"{not json",
                               headers={**h, "Content-Type": "application/json"}), 400)
    assert_problem(client.post("/api/v1/verifications", content=b"<pairs/>",
                               headers={**h, "Content-Type": "application/xml"}), 415)
    assert_problem(client.post("/api/v1/verifications", params={"format": "xlsx"}, json={"pairs": four[:1]},
                               headers=h), 422)
    assert asked == [] and audit_rows(env) == 0


# --- uploads -----------------------------------------------------------------------------------------------


def test_a_department_uploads_its_own_records_and_reads_the_report(client: TestClient, env: WebEnv) -> None:
    assert client.get(f"/api/v1/certificates/{MEM_NEW}").json()["verdict"] == "not_found"
    r = upload(client, env.auth("department-mem"), MEM_Q2)
    assert r.status_code == 201, r.text
    report = r.json()
    assert report["department"] == "mem" and report["quarter"] == "2026Q2" and report["status"] == "imported"
    assert report["rows_total"] == 3 and report["rows_imported"] == 3 and report["problems"] == []
    assert "department-mem" in report["uploaded_by"] or env.key_ids["department-mem"] in report["uploaded_by"]
    assert r.headers["location"] == f"/api/v1/uploads/{report['id']}"

    again = client.get(r.headers["location"], headers=env.auth("department-mem"))
    assert again.status_code == 200
    assert again.json()["id"] == report["id"] and again.json()["sha256"] == report["sha256"]
    # the new record answers at once (the department's cached answers were dropped)
    assert client.get(f"/api/v1/certificates/{MEM_NEW}").json()["verdict"] == "valid"

    listed = client.get("/api/v1/uploads", headers=env.auth("department-mem")).json()
    assert {b["department"] for b in listed["batches"]} == {"mem"} and listed["batches"][0]["id"] == report["id"]
    assert set(listed["current"]) == {"mem"} and listed["current"]["mem"]["quarter"] == "2026Q2"


def test_another_departments_upload_and_report_are_refused(client: TestClient, env: WebEnv) -> None:
    mem_batch = batch_id(env, "mem")
    samr = env.auth("department-samr")
    assert_problem(client.get(f"/api/v1/uploads/{mem_batch}", headers=samr), 403, "wrong-department")
    assert_problem(client.get("/api/v1/uploads", params={"department": "mem"}, headers=samr), 403, "wrong-department")
    own = client.get("/api/v1/uploads", headers=samr).json()
    assert {b["department"] for b in own["batches"]} == {"samr"}

    before = batch_count(env)
    mem = env.auth("department-mem")
    body = assert_problem(upload(client, mem, SAMR_Q2, department="samr"), 403, "wrong-department")
    assert "mem" in body["detail_en"] and "samr" in body["detail_en"]
    assert_problem(upload(client, mem, SAMR_Q2, params={"department": "samr"}), 403, "wrong-department")
    assert batch_count(env) == before
    assert client.get(f"/api/v1/certificates/{ID_SAMR_NEW}").json()["verdict"] == "not_found"


def test_an_admin_upload_names_its_department(client: TestClient, env: WebEnv) -> None:
    assert_problem(upload(client, env.auth("admin"), MEM_Q2), 422)
    r = upload(client, env.auth("admin"), MEM_Q2, department="mem")
    assert r.status_code == 201 and r.json()["department"] == "mem"


def test_a_rejected_or_repeated_upload_imports_nothing(client: TestClient, env: WebEnv) -> None:
    h = env.auth("department-mem")
    rejected = upload(client, h, BAD_MEM)
    body = assert_problem(rejected, 422, "import-rejected")
    report = body["report"]
    assert report["status"] == "rejected" and report["rows_imported"] == 0
    assert report["problems"][0]["line"] == 2 and report["problems"][0]["value"] == "明年"
    assert client.get(f"/api/v1/certificates/{MEM_NEW}").json()["verdict"] == "not_found"
    assert client.get(f"/api/v1/uploads/{report['id']}", headers=h).json()["status"] == "rejected"

    assert upload(client, h, MEM_Q2).status_code == 201
    before = batch_count(env)
    body = assert_problem(upload(client, h, MEM_Q2), 409, "already-imported")
    assert body["batch"] == f"/api/v1/uploads/{body['batch_id']}"
    assert batch_count(env) == before

    assert_problem(upload(client, h, MEM_Q2, quarter="2026Q5"), 422)
    no_file = client.post("/api/v1/uploads", headers=h, data={"quarter": "2026Q2"},
                          files={"other": ("x.txt", b"", "text/plain")})
    assert no_file.status_code in (400, 422) and no_file.headers["content-type"].startswith(PROBLEM_JSON)


def test_a_missing_upload_is_404_for_those_who_may_read_uploads(client: TestClient, env: WebEnv) -> None:
    assert_problem(client.get("/api/v1/uploads/999999", headers=env.auth("regulator")), 404)
    assert_problem(client.get("/api/v1/uploads/abc", headers=env.auth("admin")), 404)


# --- size limits --------------------------------------------------------------------------------------------


def _chunks(data: bytes, size: int = 512) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_an_oversize_body_is_413_and_nothing_is_looked_up(
    make_client: Callable[..., TestClient], env: WebEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(quiet_config(body_limit=1024))
    asked = spy_on_sources(client, monkeypatch)
    h = env.auth("employer")
    big = json.dumps({"pairs": [{"number": MEM_NUMBER, "name": "张小三"}] * 40}).encode()
    assert len(big) > 1024
    body = assert_problem(client.post("/api/v1/verifications", content=big,
                                      headers={**h, "Content-Type": "application/json"}), 413, "body-too-large")
    assert body["limit_bytes"] == 1024
    # without a Content-Length (chunked), the limit is enforced while the body streams in
    streamed = client.post("/api/v1/verifications", content=_chunks(big),
                           headers={**h, "Content-Type": "application/json"})
    assert_problem(streamed, 413, "body-too-large")
    assert asked == [] and audit_rows(env) == 0
    small = client.post("/api/v1/verifications", json={"pairs": [{"number": MEM_NUMBER}]}, headers=h)
    assert small.status_code == 200  # under the limit all is well


def _multipart(content: bytes, quarter: str = "2026Q2") -> tuple[bytes, str]:
    boundary = "certq-test-" + uuid.uuid4().hex
    parts = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="quarter"\r\n\r\n{quarter}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="mem.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return parts, f"multipart/form-data; boundary={boundary}"


def test_an_oversize_upload_is_413_and_nothing_is_imported(
    make_client: Callable[..., TestClient], env: WebEnv, tmp_path: Path
) -> None:
    spool = tmp_path / "uploads"
    spool.mkdir()
    client = make_client(quiet_config(upload_limit=4096, upload_dir=str(spool)))
    h = env.auth("department-mem")
    padding = "".join(
        f"T{make_id('110105', '19900101', f'{i:03d}')},王{i},{make_id('110105', '19900101', f'{i:03d}')},男,电工作业,"
        "高压电工作业,北京市应急管理局,2025-01-02,2025-01-02,2099-01-01,,有效\n"
        for i in range(100, 160)
    )
    content = (MEM_Q2 + padding).encode()
    assert len(content) > 4096
    before = batch_count(env)

    body = assert_problem(upload(client, h, MEM_Q2 + padding), 413, "upload-too-large")
    assert body["limit_bytes"] == 4096
    payload, ctype = _multipart(content)
    streamed = client.post("/api/v1/uploads", content=_chunks(payload), headers={**h, "Content-Type": ctype})
    assert_problem(streamed, 413, "upload-too-large")

    assert batch_count(env) == before and list(spool.iterdir()) == []  # nothing imported, no file left behind
    assert client.get(f"/api/v1/certificates/{MEM_NEW}").json()["verdict"] == "not_found"
    ok = upload(client, h, MEM_Q2)  # a file under the limit goes in
    assert ok.status_code == 201 and list(spool.iterdir()) == []


# --- rate limits --------------------------------------------------------------------------------------------


def assert_429(r: Any, scope: str, limit: int) -> None:
    body = assert_problem(r, 429, "rate-limited")
    retry = r.headers["retry-after"]
    assert retry.isdigit() and 1 <= int(retry) <= 120
    assert body["retry_after_s"] == int(retry) and body["scope"] == scope and body["limit_per_minute"] == limit


def test_anonymous_callers_are_limited_per_ip(make_client: Callable[..., TestClient], env: WebEnv) -> None:
    client = make_client(quiet_config(ip_per_minute=3))
    for _ in range(3):
        assert client.get("/api/v1/recognition").status_code == 200
    assert_429(client.get(f"/api/v1/certificates/{MEM_NUMBER}"), "ip", 3)
    assert_429(client.get("/api/v1/recognition"), "ip", 3)  # refused requests do not reset the window
    # a key has its own budget; probes and metrics are never limited
    assert client.get("/api/v1/whoami", headers=env.auth("employer")).status_code == 200
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200


def test_each_key_is_limited_on_its_own(make_client: Callable[..., TestClient], env: WebEnv) -> None:
    client = make_client(quiet_config(key_per_minute=2))
    employer = env.auth("employer")
    for _ in range(2):
        assert client.get(f"/api/v1/certificates/{MEM_NUMBER}", headers=employer).status_code == 200
    assert_429(client.get(f"/api/v1/certificates/{MEM_NUMBER}", headers=employer), "key", 2)
    assert_429(client.post("/api/v1/verifications", json=[{"number": MEM_NUMBER}], headers=employer), "key", 2)
    assert client.get("/api/v1/whoami", headers=env.auth("admin")).status_code == 200  # another key
    assert client.get("/api/v1/whoami").status_code == 200  # the same IP without a key
    assert len(audit(client, env, "employer")) == 2  # the refused lookups never ran


def test_guessing_keys_counts_against_the_ip(make_client: Callable[..., TestClient], env: WebEnv) -> None:
    client = make_client(quiet_config(ip_per_minute=2))
    assert_problem(client.get("/api/v1/whoami", headers=env.auth("garbage")), 401, "invalid-key")
    assert_problem(client.get("/api/v1/whoami", headers=env.auth("revoked")), 401, "invalid-key")
    assert_429(client.get("/api/v1/whoami", headers=env.auth("garbage")), "ip", 2)


def test_a_revoked_key_stops_working(client: TestClient, env: WebEnv) -> None:
    assert client.get("/api/v1/whoami", headers=env.auth("employer")).json()["role"] == "employer"

    async def revoke() -> None:
        from aggregator.web.keys import KeyStore

        store = await env.open_store()
        try:
            await KeyStore(store.engine).revoke(env.key_ids["employer"])
        finally:
            await store.close()

    env.run(revoke())  # as `certq keys revoke` does, from another process
    assert_problem(client.get("/api/v1/whoami", headers=env.auth("employer")), 401, "invalid-key")


def _unique_ip() -> str:
    """A documentation IPv6 address no other test (or test run) uses, so shared Redis counters start at 0."""
    h = uuid.uuid4().hex
    return f"2001:db8:{h[:4]}:{h[4:8]}:{h[8:12]}:{h[12:16]}:{h[16:20]}:{h[20:24]}"


@pytest.mark.redis
def test_limits_are_shared_by_instances_through_redis(
    make_client: Callable[..., TestClient], env: WebEnv, redis_url: str
) -> None:
    web = quiet_config(ip_per_minute=3, key_per_minute=2, trusted_proxies=["10.0.0.0/8"])
    a = make_client(web, redis_url=redis_url, client=("10.0.0.2", 40000))
    b = make_client(web, redis_url=redis_url, client=("10.0.0.3", 40000))
    ip = {"X-Forwarded-For": _unique_ip()}
    assert a.get("/api/v1/recognition", headers=ip).status_code == 200
    assert a.get("/api/v1/recognition", headers=ip).status_code == 200
    assert b.get("/api/v1/recognition", headers=ip).status_code == 200
    assert_429(b.get("/api/v1/recognition", headers=ip), "ip", 3)
    assert_429(a.get("/api/v1/recognition", headers=ip), "ip", 3)

    key = env.auth("employer")  # a fresh key id per test database
    assert a.get("/api/v1/whoami", headers=key).status_code == 200
    assert b.get("/api/v1/whoami", headers=key).status_code == 200
    assert_429(a.get("/api/v1/whoami", headers=key), "key", 2)


def test_without_redis_each_instance_counts_alone(make_client: Callable[..., TestClient]) -> None:
    web = quiet_config(ip_per_minute=2)
    a, b = make_client(web), make_client(web)
    assert [a.get("/api/v1/recognition").status_code for _ in range(2)] == [200, 200]
    assert [b.get("/api/v1/recognition").status_code for _ in range(2)] == [200, 200]
    assert a.get("/api/v1/recognition").status_code == 429


# --- client IPs and proxy headers --------------------------------------------------------------------------


def _logged_ip(client: TestClient, env: WebEnv, headers: dict[str, str]) -> str:
    client.get(f"/api/v1/certificates/{MEM_NUMBER}", headers={**env.auth("employer"), **headers})
    return audit(client, env, "employer")[0]["client_ip"]


def test_proxy_headers_are_ignored_unless_configured(make_client: Callable[..., TestClient], env: WebEnv) -> None:
    client = make_client(quiet_config(ip_per_minute=2), client=("10.0.0.2", 40000))
    assert _logged_ip(client, env, {"X-Forwarded-For": "203.0.113.9"}) == "10.0.0.2"
    assert _logged_ip(client, env, {"X-Real-IP": "203.0.113.9"}) == "10.0.0.2"
    # a client cannot dodge the per-IP limit by writing a new X-Forwarded-For each time
    statuses = [client.get("/api/v1/recognition", headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code
                for i in range(3)]
    assert statuses == [200, 200, 429]


def test_proxy_headers_from_a_trusted_proxy_name_the_client(
    make_client: Callable[..., TestClient], env: WebEnv
) -> None:
    web = quiet_config(ip_per_minute=2, trusted_proxies=["10.0.0.0/8"])
    client = make_client(web, client=("10.0.0.2", 40000))
    assert _logged_ip(client, env, {"X-Forwarded-For": "203.0.113.9"}) == "203.0.113.9"
    assert _logged_ip(client, env, {"X-Forwarded-For": "198.51.100.7, 203.0.113.9, 10.0.0.1"}) == "203.0.113.9"
    assert _logged_ip(client, env, {"X-Real-IP": "192.0.2.44"}) == "192.0.2.44"
    # the limit is per forwarded client
    one, other = {"X-Forwarded-For": "203.0.113.10"}, {"X-Forwarded-For": "203.0.113.11"}
    assert [client.get("/api/v1/recognition", headers=one).status_code for _ in range(3)] == [200, 200, 429]
    assert client.get("/api/v1/recognition", headers=other).status_code == 200

    untrusted = make_client(web, client=("192.0.2.50", 40000))  # the same settings, a peer that is not a proxy
    assert _logged_ip(untrusted, env, {"X-Forwarded-For": "203.0.113.9"}) == "192.0.2.50"


# --- input validation before any fan-out ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/certificates/T1101%3C05", {}),
        ("/api/v1/certificates/" + quote("110105;DROP TABLE"), {}),
        ("/api/v1/certificates/" + "1" * 65, {}),
        (f"/api/v1/certificates/{MEM_NUMBER}", {"id_number": "12#4"}),
    ],
    ids=["angle bracket", "semicolon", "too long", "bad id_number"],
)
def test_a_malformed_number_is_a_422_before_any_source_is_asked(
    client: TestClient, env: WebEnv, monkeypatch: pytest.MonkeyPatch, path: str, params: dict[str, str]
) -> None:
    asked = spy_on_sources(client, monkeypatch)
    body = assert_problem(client.get(path, params=params, headers=env.auth("employer")), 422)
    assert body["title"] in ("invalid-number", "invalid-request")
    assert asked == []
    assert client.get(f"/api/v1/certificates/{MEM_NUMBER}").status_code == 200 and asked  # the spy sees lookups


def test_over_long_name_parameters_are_refused(client: TestClient) -> None:
    assert_problem(client.get(f"/api/v1/certificates/{MEM_NUMBER}", params={"name": "张" * 65}), 422)


# --- errors are problem documents ---------------------------------------------------------------------------


def test_unknown_routes_and_methods_are_problem_documents(client: TestClient) -> None:
    assert_problem(client.get("/api/v1/nothing-here"), 404, "not-found")
    r = client.delete("/api/v1/sources")
    assert_problem(r, 405, "method-not-allowed")
    assert "GET" in r.headers["allow"]


def test_an_unexpected_failure_is_a_500_problem_that_leaks_nothing(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = client.app.state.services.gateway  # type: ignore[attr-defined]

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("connection string postgresql://secret@db")

    monkeypatch.setattr(gateway, "lookup", broken)
    r = client.get(f"/api/v1/certificates/{MEM_NUMBER}")
    assert_problem(r, 500, "internal-error")
    assert "secret" not in r.text and "RuntimeError" not in r.text


# --- probes and metrics -----------------------------------------------------------------------------------


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"store": "ok", "redis": "not configured"}}


def test_readyz_fails_honestly_when_redis_is_down(make_client: Callable[..., TestClient]) -> None:
    client = make_client(redis_url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    body = assert_problem(client.get("/readyz"), 503, "not-ready")
    assert body["checks"]["store"] == "ok" and body["checks"]["redis"].startswith("failed")
    assert "redis" in body["detail_en"]
    assert client.get("/healthz").status_code == 200  # the process itself is fine
    assert client.get(f"/api/v1/certificates/{MEM_NUMBER}").json()["verdict"] == "valid"  # and lookups go on


@pytest.mark.redis
def test_readyz_with_redis(make_client: Callable[..., TestClient], redis_url: str) -> None:
    r = make_client(redis_url=redis_url).get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"store": "ok", "redis": "ok"}


def test_metrics_count_requests_lookups_sources_and_rate_limits(
    make_client: Callable[..., TestClient], env: WebEnv
) -> None:
    client = make_client(quiet_config(ip_per_minute=3))
    for _ in range(2):
        assert client.get(f"/api/v1/certificates/{MEM_NUMBER}").status_code == 200
    assert client.get(f"/api/v1/certificates/{MOHURD_NUMBER}").status_code == 200
    assert client.get("/api/v1/recognition").status_code == 429

    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = metric_samples(r.text)
    route = "/api/v1/certificates/{number}"
    assert sample(samples, "certq_http_requests_total", route=route, method="GET", status="200") == 3
    assert sample(samples, "certq_http_requests_total", status="429") == 1
    assert sample(samples, "certq_http_request_duration_seconds_count", route=route) == 3
    assert sample(samples, "certq_lookups_total", verdict="valid") == 3
    assert sample(samples, "certq_source_calls_total", source="mem_records", outcome="found") == 2
    assert sample(samples, "certq_source_calls_total", source="mohurd_records", outcome="found") == 1
    assert sample(samples, "certq_rate_limited_total", scope="ip") == 1
    assert any(n == "certq_cache_events_total" for n, _ in samples)
    # labels are route templates: no certificate or ID number ends up in the metrics
    assert MEM_NUMBER not in r.text and ID_ZHANG not in r.text and MOHURD_NUMBER not in r.text


# --- PostgreSQL: keys, the audit log and uploads on the production database ---------------------------------


@pytest.fixture()
def any_env(request: pytest.FixtureRequest, env: WebEnv, tmp_path: Path) -> Iterator[WebEnv]:
    """The test data set on SQLite, or in a fresh PostgreSQL database of its own (dropped afterwards)."""
    if request.param == "sqlite":
        yield env
        return
    import asyncio

    import asyncpg
    from sqlalchemy.engine import make_url

    base = make_url(request.getfixturevalue("postgres_url"))
    name = f"certq_web_{uuid.uuid4().hex[:12]}"
    dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    (tmp_path / "pg").mkdir()
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield build_env(tmp_path / "pg", database_url=base.set(database=name).render_as_string(hide_password=False))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("any_env", BACKENDS, indirect=True)
def test_keys_audit_and_uploads_on_either_database(any_env: WebEnv) -> None:
    env = any_env
    with TestClient(app_for(env)) as client:
        r = client.get(f"/api/v1/certificates/{MEM_NUMBER}", params={"name": "张小三", "purpose": "抽查"},
                       headers=env.auth("regulator"))
        assert r.status_code == 200 and r.json()["certificates"][0]["holder_name"] == "张小三"
        [entry] = audit(client, env, "regulator")
        assert entry["purpose"] == "抽查" and entry["verdict"] == "valid" and entry["name_given"] is True
        assert_problem(client.get("/api/v1/whoami", headers=env.auth("revoked")), 401, "invalid-key")

        created = upload(client, env.auth("department-mem"), MEM_Q2)
        assert created.status_code == 201, created.text
        assert_problem(client.get(created.headers["location"], headers=env.auth("department-samr")), 403)
        assert client.get(f"/api/v1/certificates/{MEM_NEW}").json()["verdict"] == "valid"


@pytest.mark.parametrize("any_env", BACKENDS, indirect=True)
def test_a_nul_in_a_purpose_or_key_id_is_bad_input_not_an_outage(any_env: WebEnv) -> None:
    """PostgreSQL refuses NUL in text: it used to fail the audit write (503, "audit log unavailable") or the
    audit query (500). It is the caller's input that is wrong: 422, on either database."""
    env = any_env
    with TestClient(app_for(env)) as client:
        lookup = f"/api/v1/certificates/{MEM_NUMBER}"
        assert_problem(client.get(lookup, params={"purpose": "a\x00b"}, headers=env.auth("regulator")), 422)
        assert_problem(client.get(lookup, headers={**env.auth("employer"), "X-Purpose": "a%00b"}), 422)
        batch = client.post("/api/v1/verifications", json={"pairs": [{"number": MEM_NUMBER}], "purpose": "p\x00"},
                            headers=env.auth("employer"))
        assert_problem(batch, 422)
        assert_problem(client.get("/api/v1/audit", params={"key_id": "\x00"}, headers=env.auth("admin")), 422)
        assert audit(client, env) == []  # nothing was looked up
        # a tab, CR or LF would forge lines in the audit log and its tables: refused like any control character
        assert_problem(client.get(lookup, headers={**env.auth("employer"), "X-Purpose": quote("入职\t核验")}), 422)
        ok = client.get(lookup, headers={**env.auth("employer"), "X-Purpose": quote("入职 核验")})
        assert ok.status_code == 200 and audit(client, env)[0]["purpose"] == "入职 核验"
