"""Changes to a roster as the audit log and monitoring see them: creating a roster, changing its monitoring and
adding, changing or removing members are each one "roster_change" entry that holds counts, refs and settings but
never a member's name, certificate number or ID number; a member added to a monitored roster is due at once."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from aggregator.audit import AuditLog
from aggregator.records.schema import roster_members
from tests.records_support import ID_LI, ID_ZHANG
from tests.web_support import MEM_NUMBER, MOHURD_NUMBER, TestClient, WebEnv, build_env, web_client

CSV = f"证书编号,姓名,身份证号,工号\n{MEM_NUMBER},张小三,{ID_ZHANG},E001\n{MOHURD_NUMBER},李四,{ID_LI},E002\n"
PERSONAL = ("张小三", "李四", "王五", ID_ZHANG, ID_LI, MEM_NUMBER, MOHURD_NUMBER)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> WebEnv:
    return build_env(tmp_path_factory.mktemp("rosters-changes"))


@pytest.fixture(scope="module")
def client(env: WebEnv) -> Iterator[TestClient]:
    with web_client(env) as c:
        yield c


def _changes(env: WebEnv) -> list:
    async def read() -> list:
        store = await env.open_store()
        try:
            return [e for e in await AuditLog(store.engine).read(limit=200) if e.action == "roster_change"]
        finally:
            await store.close()

    return list(reversed(env.run(read())))  # oldest first


def _due_at(env: WebEnv, roster_id: str, ref: str) -> int | None:
    async def read() -> int | None:
        store = await env.open_store()
        try:
            async with store.engine.connect() as conn:
                return (await conn.execute(sa.select(roster_members.c.due_at).where(
                    roster_members.c.roster_id == roster_id, roster_members.c.ref == ref))).scalar()
        finally:
            await store.close()

    return env.run(read())


def test_roster_changes_are_audited_without_personal_data(client: TestClient, env: WebEnv) -> None:
    auth = env.auth("employer")
    before = len(_changes(env))
    r = client.post("/api/v1/rosters", headers=auth, files={"file": ("r.csv", CSV.encode())}, data={"name": "审计"})
    assert r.status_code == 201, r.text
    rid = r.json()["roster"]["id"]
    r = client.put(f"/api/v1/rosters/{rid}/monitoring", headers=auth,
                   json={"enabled": True, "every_h": 12, "expiry_warn_days": [30, 7]})
    assert r.status_code == 200, r.text
    r = client.post(f"/api/v1/rosters/{rid}/members", headers=auth,
                    json={"ref": "E003", "number": "京A012024000124", "name": "王五"})
    assert r.status_code == 201, r.text
    r = client.patch(f"/api/v1/rosters/{rid}/members/E003", headers=auth, json={"name": "王五", "team": "二班"})
    assert r.status_code == 200, r.text
    assert client.delete(f"/api/v1/rosters/{rid}/members/E002", headers=auth).status_code == 200
    assert client.put(f"/api/v1/rosters/{rid}/monitoring", headers=auth, json={"enabled": False}).status_code == 200

    entries = _changes(env)[before:]
    details = [e.details() for e in entries]
    assert [(d["roster"], d["change"]) for d in details] == [
        (rid, "created"), (rid, "monitoring"), (rid, "member_added"), (rid, "member_updated"),
        (rid, "member_removed"), (rid, "monitoring"),
    ]
    assert all(e.key_id == env.key_ids["employer"] and e.role == "employer" for e in entries)
    assert details[0]["members"] == 2
    assert (details[1]["enabled"], details[1]["every_h"], details[1]["expiry_warn_days"]) == (True, 12, [30, 7])
    assert (details[2]["ref"], details[2]["monitored"]) == ("E003", True)
    assert (details[3]["ref"], details[3]["fields"]) == ("E003", ["team"])
    assert details[4]["ref"] == "E002"
    assert details[5]["enabled"] is False
    text = " ".join((e.detail or "") + e.number for e in entries)
    assert not [p for p in PERSONAL if p in text]


def test_a_refused_change_is_not_audited(client: TestClient, env: WebEnv) -> None:
    rid = client.post("/api/v1/rosters", headers=env.auth("employer"), files={"file": ("r.csv", CSV.encode())},
                      data={"name": "x"}).json()["roster"]["id"]
    before = len(_changes(env))
    assert client.delete(f"/api/v1/rosters/{rid}/members/NOPE", headers=env.auth("employer")).status_code == 404
    other = client.put(f"/api/v1/rosters/{rid}/monitoring", headers=env.auth("admin"), json={"enabled": True})
    assert other.status_code == 404  # another organisation's roster
    assert len(_changes(env)) == before


def test_a_member_added_to_a_monitored_roster_is_checked_at_the_next_tick(client: TestClient, env: WebEnv) -> None:
    auth = env.auth("employer")
    rid = client.post("/api/v1/rosters", headers=auth, files={"file": ("r.csv", CSV.encode())},
                      data={"name": "监控"}).json()["roster"]["id"]
    added = client.post(f"/api/v1/rosters/{rid}/members", headers=auth, json={"ref": "U1", "number": MEM_NUMBER,
                                                                             "name": "张小三"})
    assert added.json()["monitored"] is False and _due_at(env, rid, "U1") is None  # not monitored yet

    assert client.put(f"/api/v1/rosters/{rid}/monitoring", headers=auth, json={"enabled": True}).status_code == 200
    now = int(time.time())
    added = client.post(f"/api/v1/rosters/{rid}/members", headers=auth, json={"ref": "M1", "number": MOHURD_NUMBER,
                                                                             "name": "李四"})
    assert added.status_code == 201 and added.json()["monitored"] is True
    due = _due_at(env, rid, "M1")
    assert due is not None and now - 5 <= due <= int(time.time())  # due now: the next tick takes it
    members = client.get(f"/api/v1/rosters/{rid}/members", headers=auth).json()["members"]
    assert {m["ref"]: m["monitored"] for m in members} == {"E001": True, "E002": True, "U1": True, "M1": True}

    assert client.put(f"/api/v1/rosters/{rid}/monitoring", headers=auth, json={"enabled": False}).status_code == 200
    client.post(f"/api/v1/rosters/{rid}/members", headers=auth, json={"ref": "M2", "number": MEM_NUMBER, "name": "张小三"})
    assert _due_at(env, rid, "M2") is None  # monitoring stopped: not scheduled
