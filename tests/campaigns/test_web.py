"""Campaigns over HTTP and on the page: regulators and admins only; created, run as a job, reported, exported;
audited with filters, seed and who ran it."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from aggregator.records.schema import audit_log
from aggregator.sheets import XLSX_MEDIA_TYPE
from tests.web_support import WebEnv, build_env, web_client

BODY = {
    "name": "2026Q4 电工抽查",
    "filters": {"departments": ["mem", "samr"]},
    "design": {"n": 2, "seed": 42},
}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> WebEnv:
    return build_env(tmp_path_factory.mktemp("campaigns-web"))


@pytest.fixture(scope="module")
def client(env: WebEnv) -> Iterator:
    with web_client(env) as c:
        yield c


@pytest.mark.parametrize(
    ("who", "status"),
    [(None, 401), ("employer", 403), ("department-mem", 403), ("regulator", 201), ("admin", 201), ("garbage", 401)],
)
def test_only_regulators_and_admins_may_create_campaigns(client, env: WebEnv, who: str | None, status: int) -> None:
    r = client.post("/api/v1/campaigns", json=BODY, headers=env.auth(who))
    assert r.status_code == status, r.text


@pytest.mark.parametrize("who", [None, "employer", "department-samr"])
def test_nobody_else_sees_that_a_campaign_exists(client, env: WebEnv, who: str | None) -> None:
    made = client.post("/api/v1/campaigns", json=BODY, headers=env.auth("regulator")).json()
    for path in ("", f"/{made['id']}", f"/{made['id']}/report", f"/{made['id']}/export"):
        assert client.get(f"/api/v1/campaigns{path}", headers=env.auth(who)).status_code in (401, 403)
    assert client.post(f"/api/v1/campaigns/{made['id']}/runs", headers=env.auth(who)).status_code in (401, 403)
    page = client.get(f"/regulator/campaigns/{made['id']}", headers=env.auth(who))
    assert page.status_code in (401, 403) and made["name"] not in page.text


def test_bad_settings_are_422_naming_the_field(client, env: WebEnv) -> None:
    h = env.auth("regulator")
    r = client.post("/api/v1/campaigns", json={**BODY, "filters": {"province": "火星"}}, headers=h)
    assert r.status_code == 422 and "省份" in r.json()["detail"]
    r = client.post("/api/v1/campaigns", json={**BODY, "design": {"n": 5, "method": "stratified"}}, headers=h)
    assert r.status_code == 422 and "stratify_by" in r.text
    assert client.post("/api/v1/campaigns", json={"filters": {}, "design": {"n": 1}}, headers=h).status_code == 422
    assert client.post("/api/v1/campaigns", content=b"{", headers={**h, "content-type": "application/json"}).status_code == 400
    assert client.get("/api/v1/campaigns/nope", headers=h).status_code == 404


def test_a_campaign_is_drawn_run_reported_exported_and_audited(client, env: WebEnv) -> None:
    h = env.auth("regulator")
    made = client.post("/api/v1/campaigns", json=BODY, headers=h)
    assert made.status_code == 201 and made.headers["location"] == f"/api/v1/campaigns/{made.json()['id']}"
    c = made.json()
    assert c["seed"] == 42 and c["population"] == 3 and c["sample"] == 2 and c["job"] is None
    again = client.post("/api/v1/campaigns", json=BODY, headers=h).json()
    assert again["frame_digest"] == c["frame_digest"]  # same filters and seed: the same sample

    run = client.post(f"/api/v1/campaigns/{c['id']}/runs", headers=h)
    assert run.status_code == 202
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/campaigns/{c['id']}", headers=h).json()["job"]
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(0.2)
    assert job["status"] == "finished", job
    report = client.get(f"/api/v1/campaigns/{c['id']}/report", headers=h).json()
    # this app has only the uploaded records, no live site: every check is inconclusive, none a discrepancy
    assert report["outcomes"] == {"agrees": 0, "discrepant": 0, "inconclusive": 2, "pending": 0}
    assert report["finished"] and report["discrepancies"] == [] and report["overall"]["text"] == "—, n = 0"
    assert report["inconclusive_reasons"] == {"no_live_source": 2}

    csv = client.get(f"/api/v1/campaigns/{c['id']}/export", headers=h)
    assert csv.headers["content-type"].startswith("text/csv") and "attachment" in csv.headers["content-disposition"]
    assert csv.text.lstrip("\ufeff").startswith("序号,分层,发证部门,证书编号") and "无法确定" in csv.text
    xlsx = client.get(f"/api/v1/campaigns/{c['id']}/export?format=xlsx", headers=h)
    assert xlsx.headers["content-type"] == XLSX_MEDIA_TYPE
    from openpyxl import load_workbook

    sheet = load_workbook(io.BytesIO(xlsx.content)).active
    assert [cell.value for cell in sheet[1]][:4] == ["序号", "分层", "发证部门", "证书编号"] and sheet.max_row == 3
    assert client.get(f"/api/v1/campaigns/{c['id']}/export?format=pdf", headers=h).status_code == 422

    async def audited() -> list:
        store = await env.open_store()
        try:
            async with store.engine.connect() as conn:
                return (await conn.execute(sa.select(audit_log).where(audit_log.c.job_id == job["id"]))).all()
        finally:
            await store.close()

    rows = asyncio.run(audited())
    [action] = [r for r in rows if r.action == "campaign_run"]
    assert action.key_id == env.key_ids["regulator"] and action.role == "regulator"
    assert '"seed": 42' in action.detail and '"departments": ["mem", "samr"]' in action.detail
    lookups = [r for r in rows if r.action == "lookup"]  # one per check, under the job, by who ran it
    assert len(lookups) == 2 and {r.key_id for r in lookups} == {env.key_ids["regulator"]}


def test_the_page_creates_shows_and_runs_a_campaign(client, env: WebEnv) -> None:
    h = env.auth("regulator")
    page = client.get("/regulator/campaigns", headers=h)
    assert page.status_code == 200 and "新建抽查" in page.text
    csrf = client.cookies.get("certq_csrf") or page.text.split('name="csrf" value="')[1].split('"')[0]
    form = {"csrf": csrf, "name": "页面抽查", "n": "2", "method": "stratified", "stratify_by": "issuer",
            "allocation": "equal", "seed": "9", "department": "mem", "kind": "", "operation_item": "", "issuer": "",
            "province": "", "city": "", "quarter": "", "valid_on": ""}  # fmt: skip
    made = client.post("/regulator/campaigns", data=form, headers=h, follow_redirects=False)
    assert made.status_code == 303, made.text[:500]
    detail = client.get(made.headers["location"], headers=h)
    assert detail.status_code == 200 and "页面抽查" in detail.text and "<svg" in detail.text and "9" in detail.text
    bad = client.post("/regulator/campaigns", data={**form, "n": "0"}, headers=h)
    assert bad.status_code == 422 and "样本量" in bad.text
    assert client.get("/regulator/campaigns", headers=env.auth("employer")).status_code == 403


def test_the_cli_draws_the_same_sample_and_shows_it(env: WebEnv, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from aggregator.cli import main

    runner = CliRunner()
    args = ["campaigns", "create", "--name", "命令行", "--department", "mem", "--n", "1", "--seed", "42", "--json",
            "--db", env.database_url]  # fmt: skip
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    import json

    made = json.loads(first.output)
    shown = runner.invoke(main, ["campaigns", "show", made["id"], "--db", env.database_url])
    assert shown.exit_code == 0 and "命令行" in shown.output and "种子 42" in shown.output
    out = tmp_path / "c.xlsx"
    exported = runner.invoke(main, ["campaigns", "export", made["id"], "--format", "xlsx", "-o", str(out),
                                    "--db", env.database_url])  # fmt: skip
    assert exported.exit_code == 0 and out.read_bytes()[:2] == b"PK"
    bad = runner.invoke(main, ["campaigns", "create", "--name", "x", "--n", "1", "--province", "火星", "--db",
                               env.database_url])  # fmt: skip
    assert bad.exit_code == 2 and "省份" in bad.output
