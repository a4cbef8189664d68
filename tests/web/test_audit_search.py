"""Searching the audit log as a regulator does: each filter finds its entries, a job's lookups fold into one
line, pages hold still while the log grows, the CSV has Chinese headers and organisations by label, and only
regulators may search by (or see) a holder's ID number. Uploads and lookups made through the API are audited
with whom they were about."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

from aggregator.audit import CLI, AuditEntry, AuditLog
from aggregator.records import RecordStore
from aggregator.web.roles import Principal, Role
from tests.web_support import ID_ZHANG, MEM_CSV, MEM_NUMBER, MOHURD_NUMBER, WebEnv


def at(day: int, hour: int = 9) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def seed(env: WebEnv, entries: list[AuditEntry]) -> None:
    async def write() -> None:
        store = await RecordStore.open(env.database_url)
        try:
            await AuditLog(store.engine).write(entries)
        finally:
            await store.close()

    env.run(write())


def entry(env: WebEnv, who: str, role: Role, day: int, **fields: Any) -> AuditEntry:
    base = AuditEntry.now(
        Principal(role, key_id=env.key_ids[who]), action="lookup", number=fields.pop("number", MOHURD_NUMBER),
        name_given=False, id_number_given=False, verdict=fields.pop("verdict", "valid"),
        purpose=fields.pop("purpose", "入职核验"), client_ip="10.0.0.1", **fields,
    )  # fmt: skip
    return AuditEntry(**{**base.__dict__, "at": at(day)})


@pytest.fixture()
def seeded(env: WebEnv) -> dict[str, AuditEntry]:
    e = {
        "zhang": entry(env, "employer", Role.EMPLOYER, 1, number=MEM_NUMBER, holder_id_number=ID_ZHANG),
        "revoked": entry(env, "regulator", Role.REGULATOR, 15, verdict="revoked", purpose="2026年第四季度专项检查"),
        "key": AuditEntry(**{**AuditEntry.action_by(CLI, "key_create", detail={"key_id": "x"}).__dict__, "at": at(20)}),
    }
    jobs = [entry(env, "employer", Role.EMPLOYER, 10, job_id="roster-7", number=f"T{i:018d}") for i in range(5)]
    seed(env, [e["zhang"], *jobs, e["revoked"], e["key"]])
    return e


def search(client: TestClient, env: WebEnv, who: str = "regulator", **params: Any) -> list[dict[str, Any]]:
    r = client.get("/api/v1/audit", params=params, headers=env.auth(who))
    assert r.status_code == 200, r.text
    return r.json()["entries"]  # type: ignore[no-any-return]


FILTERS = {
    "number": ({"number": MEM_NUMBER.lower()}, ["zhang"]),  # as typed: normalised
    "holder": ({"holder_id_number": ID_ZHANG}, ["zhang"]),
    "role": ({"role": "regulator"}, ["revoked"]),
    "action": ({"action": "key_create"}, ["key"]),
    "verdict": ({"verdict": "revoked"}, ["revoked"]),
    "purpose": ({"purpose": "专项"}, ["revoked"]),
    "dates": ({"since": "2026-11-14", "until": "2026-11-15"}, ["revoked"]),
    "organisation": ({"organisation": "TEST Regulator"}, ["revoked"]),  # by label, any case
}


@pytest.mark.parametrize("name", FILTERS)
def test_each_filter_finds_its_entries(
    make_client: Callable[..., TestClient], env: WebEnv, seeded: dict[str, AuditEntry], name: str
) -> None:
    params, expected = FILTERS[name]
    found = search(make_client(), env, **params)
    assert [(e["number"], e["action"], e["at"]) for e in found] == [
        (seeded[k].number, seeded[k].action, seeded[k].at.isoformat()) for k in expected
    ]


def test_an_organisation_is_searched_by_its_label_never_its_key_id(
    make_client: Callable[..., TestClient], env: WebEnv, seeded: dict[str, AuditEntry]
) -> None:
    client = make_client()
    assert search(client, env, organisation=env.key_ids["regulator"]) == []
    [found] = search(client, env, organisation="regulator")
    assert found["organisation"] == "test regulator" and found["role_text"] == "监管部门 regulator"


def test_a_jobs_lookups_are_one_line_with_their_count(
    make_client: Callable[..., TestClient], env: WebEnv, seeded: dict[str, AuditEntry]
) -> None:
    client = make_client()
    default = search(client, env)
    assert [e["kind"] for e in default] == ["entry", "entry", "job", "entry"]  # newest first, the job at its newest
    job = default[2]
    assert (job["job_id"], job["count"], job["organisation"]) == ("roster-7", 5, "test employer")
    assert len(search(client, env, group="0")) == 8
    assert {e["job_id"] for e in search(client, env, job_id="roster-7")} == {"roster-7"}
    assert len(search(client, env, job_id="roster-7")) == 5


def test_holder_id_search_and_the_holder_column_are_for_regulators_only(
    make_client: Callable[..., TestClient], env: WebEnv, seeded: dict[str, AuditEntry]
) -> None:
    client = make_client()
    r = client.get("/api/v1/audit", params={"holder_id_number": ID_ZHANG}, headers=env.auth("admin"))
    assert r.status_code == 403 and r.json()["title"] == "forbidden"
    assert {e.get("holder_id_number") for e in search(client, env, "admin")} == {None}
    assert ID_ZHANG in {e.get("holder_id_number") for e in search(client, env, "regulator")}
    assert client.get("/api/v1/audit", params={"number": MEM_NUMBER}, headers=env.auth("employer")).status_code == 403


def test_pages_hold_still_while_the_log_grows(make_client: Callable[..., TestClient], env: WebEnv) -> None:
    seed(env, [entry(env, "employer", Role.EMPLOYER, 1 + i % 28, number=f"T{i:018d}") for i in range(25)])
    client = make_client()
    seen: list[str] = []
    cursor = None
    for page in range(5):
        params: dict[str, Any] = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        r = client.get("/api/v1/audit", params=params, headers=env.auth("regulator")).json()
        seen += [e["number"] for e in r["entries"]]
        cursor = r["cursor"]
        if page == 0:  # new lookups arrive while the regulator reads page 1
            seed(env, [entry(env, "employer", Role.EMPLOYER, 2, number=f"N{i:018d}") for i in range(7)])
        if cursor is None:
            break
    assert seen == [f"T{i:018d}" for i in reversed(range(25))]


def test_bad_searches_are_refused_with_a_reason(make_client: Callable[..., TestClient], env: WebEnv) -> None:
    client = make_client()
    for params in ({"cursor": "garbage"}, {"since": "2026-12-01", "until": "2026-11-01"}, {"since": "yesterday"},
                   {"role": "boss"}):  # fmt: skip
        r = client.get("/api/v1/audit", params=params, headers=env.auth("regulator"))
        assert r.status_code == 422, (params, r.text)
        assert r.json()["detail_zh"]


def test_the_csv_export_has_chinese_headers_and_organisations_by_label(
    make_client: Callable[..., TestClient], env: WebEnv, seeded: dict[str, AuditEntry]
) -> None:
    r = make_client().get("/api/v1/audit", params={"format": "csv", "group": "0"}, headers=env.auth("regulator"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text.lstrip("\ufeff"))))
    assert len(rows) == 8
    by_number = {row["编号 Number"]: row for row in rows}
    zhang = by_number[MEM_NUMBER]
    assert zhang["机构 Organisation"] == "test employer" and zhang["角色 Role"] == "用人单位 employer"
    assert zhang["操作 Action"] == "查询 lookup" and zhang["身份证号 Holder ID"] == ID_ZHANG
    assert env.key_ids["employer"] not in r.text
    assert by_number[""]["操作 Action"] == "创建密钥 key_create"


def test_uploads_and_lookups_through_the_api_are_audited(make_client: Callable[..., TestClient], env: WebEnv) -> None:
    client = make_client()
    r = client.post(
        "/api/v1/uploads", headers=env.auth("department-mem"), data={"quarter": "2026Q2"},
        files={"file": ("records.csv", MEM_CSV.encode("utf-8"), "text/csv")},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    assert client.get(
        f"/api/v1/certificates/{MEM_NUMBER}", params={"purpose": "抽查"}, headers=env.auth("regulator")
    ).status_code == 200

    [upload] = search(client, env, action="upload")
    assert upload["organisation"] == "test department-mem" and '"quarter": "2026Q2"' in upload["detail"]
    [lookup] = search(client, env, holder_id_number=ID_ZHANG)
    assert lookup["number"] == MEM_NUMBER and lookup["holder_id_number"] == ID_ZHANG


def test_the_regulator_page_searches_folds_jobs_and_exports(
    make_client: Callable[..., TestClient], env: WebEnv, seeded: dict[str, AuditEntry]
) -> None:
    client = make_client()
    r = client.get("/regulator", params={"number": MEM_NUMBER}, headers=env.auth("regulator"))
    audit = r.text[r.text.index('id="audit-title"') :]
    assert r.status_code == 200 and MEM_NUMBER in audit and MOHURD_NUMBER not in audit
    folded = client.get("/regulator", headers=env.auth("regulator")).text
    assert "roster-7" in folded and "×5" in folded

    csv_text = client.get("/regulator", params={"number": MEM_NUMBER, "format": "csv"}, headers=env.auth("regulator"))
    assert csv_text.headers["content-type"].startswith("text/csv") and "机构 Organisation" in csv_text.text
    assert MEM_NUMBER in csv_text.text and MOHURD_NUMBER not in csv_text.text

    admin = client.get("/regulator", params={"holder_id_number": ID_ZHANG}, headers=env.auth("admin"))
    assert admin.status_code == 422 and "search the audit log by holder ID number" in admin.text
    assert 'name="holder_id_number"' not in admin.text  # admins do not get the field at all
