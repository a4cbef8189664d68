"""The roster API as an employer uses it: create from a file or JSON, read, edit members, verify as a job and
read the results (JSON, CSV, XLSX) and events; another organisation's roster is a 404, and regulators,
departments and the public cannot read rosters at all."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.web.keys import KeyStore
from aggregator.web.problems import PROBLEM_JSON
from tests.records_support import write_xlsx
from tests.rosters.support import add_event
from tests.web_support import MEM_NUMBER, MOHURD_NUMBER, TestClient, WebEnv, build_env, web_client

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV = ("证书编号,姓名,工号,部门/班组\n"
       f"{MEM_NUMBER},张小三,E001,电工一班\n"
       f"{MOHURD_NUMBER},李四,E002,=cmd|' /C calc'!A0\n")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> WebEnv:
    env = build_env(tmp_path_factory.mktemp("rosters-api"))

    async def more_keys() -> None:
        store = await env.open_store()
        try:
            keys = KeyStore(store.engine)
            for name, label in (("colleague", "test employer"), ("other-org", "另一家公司")):
                _, secret = await keys.create("employer", label)
                env.keys[name] = secret
        finally:
            await store.close()

    asyncio.run(more_keys())
    return env


@pytest.fixture(scope="module")
def client(env: WebEnv) -> Iterator[TestClient]:
    with web_client(env) as c:
        yield c


def _create(client: TestClient, env: WebEnv, who: str = "employer", text: str = CSV, **form: str) -> dict:
    r = client.post("/api/v1/rosters", headers=env.auth(who), files={"file": ("r.csv", text.encode("utf-8"))},
                    data={"name": "二标段", **form})
    assert r.status_code == 201, r.text
    return r.json()


def test_create_from_a_file_and_read_it_back(client: TestClient, env: WebEnv) -> None:
    made = _create(client, env)
    roster = made["roster"]
    assert (roster["name"], roster["members"], made["problems_total"]) == ("二标段", 2, 0)
    assert client.get(f"/api/v1/rosters/{roster['id']}", headers=env.auth("employer")).json()["members"] == 2
    assert roster["id"] in {r["id"] for r in client.get("/api/v1/rosters", headers=env.auth("employer")).json()["rosters"]}
    members = client.get(f"/api/v1/rosters/{roster['id']}/members?per_page=1&page=2", headers=env.auth("employer")).json()
    assert (members["total"], members["pages"], members["members"][0]["ref"]) == (2, 2, "E002")


def test_an_xlsx_roster(client: TestClient, env: WebEnv, tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "r.xlsx", [[MEM_NUMBER, "张小三", "E1"]], header=["Certificate Number", "Name", "Employee ID"])
    r = client.post("/api/v1/rosters", headers=env.auth("employer"), data={"name": "xlsx"},
                    files={"file": ("r.xlsx", path.read_bytes(), XLSX)})
    assert r.status_code == 201, r.text
    assert r.json()["roster"]["members"] == 1


def test_bad_rows_refuse_the_roster_with_the_report_unless_partial(client: TestClient, env: WebEnv) -> None:
    text = CSV + f"bad!,王五,E003,\n{MEM_NUMBER},张小三,E009,\n"
    r = client.post("/api/v1/rosters", headers=env.auth("employer"), files={"file": ("r.csv", text.encode())},
                    data={"name": "x"})
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM_JSON)
    report = r.json()["report"]
    assert report["duplicates"] == 1
    assert {(p["line"], p["column"]) for p in report["problems"]} == {(4, "证书编号"), (5, "证书编号")}
    made = _create(client, env, text=text, partial="true")
    assert (made["roster"]["members"], made["problems_total"]) == (2, 2)


def test_json_members_and_editing_by_reference(client: TestClient, env: WebEnv) -> None:
    h = env.auth("employer")
    r = client.post("/api/v1/rosters", headers=h, json={"name": "json", "members": [
        {"number": MEM_NUMBER, "name": "张小三", "ref": "E1"}]})
    assert r.status_code == 201, r.text
    rid = r.json()["roster"]["id"]
    added = client.post(f"/api/v1/rosters/{rid}/members", headers=h, json={"number": MOHURD_NUMBER, "name": "李四", "ref": "E2"})
    assert added.status_code == 201 and added.json()["ref"] == "E2"
    again = client.post(f"/api/v1/rosters/{rid}/members", headers=h, json={"number": MOHURD_NUMBER, "name": "李四", "ref": "E2"})
    assert again.status_code == 409
    bad = client.post(f"/api/v1/rosters/{rid}/members", headers=h, json={"number": "x!", "name": "李四", "ref": "E3"})
    assert bad.status_code == 422 and bad.json()["report"]["problems"][0]["column"] == "number"
    patched = client.patch(f"/api/v1/rosters/{rid}/members/E2", headers=h, json={"team": "钢筋班"})
    assert patched.status_code == 200 and (patched.json()["team"], patched.json()["name"]) == ("钢筋班", "李四")
    assert client.delete(f"/api/v1/rosters/{rid}/members/E2", headers=h).status_code == 200
    assert client.delete(f"/api/v1/rosters/{rid}/members/E2", headers=h).status_code == 404
    assert client.patch(f"/api/v1/rosters/{rid}/members/nobody", headers=h, json={"team": "x"}).status_code == 404


def test_another_organisations_roster_is_a_404_and_a_colleagues_is_shared(client: TestClient, env: WebEnv) -> None:
    rid = _create(client, env)["roster"]["id"]
    for path in ("", "/members", "/results", "/events"):
        r = client.get(f"/api/v1/rosters/{rid}{path}", headers=env.auth("other-org"))
        assert r.status_code == 404, path
    assert client.post(f"/api/v1/rosters/{rid}/verify", headers=env.auth("other-org")).status_code == 404
    assert client.delete(f"/api/v1/rosters/{rid}/members/E001", headers=env.auth("other-org")).status_code == 404
    assert rid not in {r["id"] for r in client.get("/api/v1/rosters", headers=env.auth("other-org")).json()["rosters"]}
    assert client.get(f"/api/v1/rosters/{rid}", headers=env.auth("colleague")).status_code == 200  # same label


@pytest.mark.parametrize(("who", "status"), [(None, 401), ("regulator", 403), ("department-mem", 403)])
def test_regulators_departments_and_the_public_cannot_read_rosters(
    client: TestClient, env: WebEnv, who: str | None, status: int
) -> None:
    rid = _create(client, env)["roster"]["id"]
    headers = env.auth(who, purpose="audit" if who == "regulator" else None)
    for path in ("/api/v1/rosters", f"/api/v1/rosters/{rid}", f"/api/v1/rosters/{rid}/results",
                 f"/api/v1/rosters/{rid}/events"):
        assert client.get(path, headers=headers).status_code == status, path


def _wait(client: TestClient, env: WebEnv, job_id: str, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}", headers=env.auth("employer")).json()
        if job["status"] not in ("queued", "running") or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def test_verify_as_a_job_then_results_as_json_csv_and_xlsx(client: TestClient, env: WebEnv) -> None:
    rid = _create(client, env)["roster"]["id"]
    r = client.post(f"/api/v1/rosters/{rid}/verify", headers=env.auth("employer"))
    assert r.status_code == 202 and r.headers["location"] == f"/api/v1/jobs/{r.json()['id']}"
    assert client.get(f"/api/v1/jobs/{r.json()['id']}", headers=env.auth("other-org")).status_code == 404
    job = _wait(client, env, r.json()["id"])
    assert job["status"] == "finished" and (job["done"], job["total"]) == (2, 2), job

    body = client.get(f"/api/v1/rosters/{rid}/results", headers=env.auth("employer")).json()
    assert body["job"]["id"] == job["id"] and body["total"] == 2
    by_ref = {x["ref"]: x for x in body["results"]}
    assert by_ref["E001"]["verdict"] == "valid" and by_ref["E001"]["certificates"]

    text = client.get(f"/api/v1/rosters/{rid}/results?format=csv", headers=env.auth("employer")).text
    lines = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    assert lines[0]["工号"] == "E001" and lines[0]["结论"] == "有效"
    assert lines[1]["部门/班组"] == "'=cmd|' /C calc'!A0"
    en = client.get(f"/api/v1/rosters/{rid}/results?format=csv&lang=en", headers=env.auth("employer")).text
    assert en.lstrip("\ufeff").startswith("ref,name,number,team,verdict")
    x = client.get(f"/api/v1/rosters/{rid}/results?format=xlsx", headers=env.auth("employer"))
    assert x.status_code == 200 and x.headers["content-type"].startswith(XLSX) and x.content[:2] == b"PK"


def test_events_by_cursor(client: TestClient, env: WebEnv) -> None:
    rid = _create(client, env)["roster"]["id"]

    async def write() -> None:
        store = await env.open_store()
        try:
            for i in range(3):
                await add_event(store.engine, rid, "test employer", "E001", "status_changed", old="valid", new="revoked",
                                number=MEM_NUMBER, department="mem", detail={"i": i})
        finally:
            await store.close()

    asyncio.run(write())
    h = env.auth("employer")
    first = client.get(f"/api/v1/rosters/{rid}/events?limit=2", headers=h).json()
    assert len(first["events"]) == 2 and first["next_after"] == first["events"][-1]["id"]
    rest = client.get(f"/api/v1/rosters/{rid}/events?after={first['next_after']}", headers=h).json()
    assert [e["detail"]["i"] for e in rest["events"]] == [2] and rest["next_after"] is None
    assert client.get(f"/api/v1/rosters/{rid}/events?member=E002", headers=h).json()["events"] == []
    assert client.get(f"/api/v1/rosters/{rid}/events?type=bogus", headers=h).status_code == 422


def test_the_synchronous_batch_accepts_xlsx_too(client: TestClient, env: WebEnv, tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "pairs.xlsx", [[MEM_NUMBER, "张小三"], [MOHURD_NUMBER, "李四"]], header=["证书编号", "姓名"])
    r = client.post("/api/v1/verifications", headers=env.auth("employer"),
                    files={"file": ("pairs.xlsx", path.read_bytes(), XLSX)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 2 and [x["verdict"] for x in body["results"]] == ["valid", "valid"]
