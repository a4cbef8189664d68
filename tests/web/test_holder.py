"""The holder's view: number + full name + full ID number, then every keyed lookup of the holder's certificates
and the public's lookups as counts per day; nothing for a wrong detail (the same answer whichever), and attempt
limits with a lock-out that hold across instances (the database; Redis when configured)."""

from __future__ import annotations

import pytest

from aggregator.web.holders import Limits
from aggregator.web.holders.guard import HolderGuard
from tests.web_support import ID_LI, ID_ZHANG, MEM_NUMBER, MOHURD_NUMBER, SAMR_NUMBER

PROOF = {"number": MEM_NUMBER, "name": "张小三", "id_number": ID_ZHANG}
URL = "/api/v1/holder/lookups"


def tight(client, redis_client=None, **limits) -> None:
    """Small limits for this instance's guard (on the same database / Redis as the others)."""
    svc = client.app.state.services
    svc.holders.guard = HolderGuard(svc.gateway.store.engine, redis_client, limits=Limits(**limits))


def test_the_holder_sees_exactly_the_keyed_lookups_of_their_certificates_and_public_counts(env, make_client) -> None:
    client = make_client()
    client.get(f"/api/v1/certificates/{MEM_NUMBER}", headers=env.auth("employer"), params={"purpose": "入职核验"})
    client.get(f"/api/v1/certificates/{SAMR_NUMBER}", headers=env.auth("regulator"), params={"purpose": "专项检查"})
    client.get(f"/api/v1/certificates/{MOHURD_NUMBER}", headers=env.auth("regulator"), params={"purpose": "另一持证人"})  # 李四's
    client.get(f"/api/v1/certificates/{MEM_NUMBER}")  # the public, twice
    client.get(f"/api/v1/certificates/{MEM_NUMBER}")

    r = client.post(URL, json=PROOF)

    assert r.status_code == 200, r.text
    body = r.json()
    seen = {(x["organisation"], x["role"], x["purpose"], x["number"], x["verdict"]) for x in body["lookups"]}
    assert seen == {
        ("test employer", "employer", "入职核验", MEM_NUMBER, "valid"),
        ("test regulator", "regulator", "专项检查", SAMR_NUMBER, "valid"),
    }
    assert all(x["at"] for x in body["lookups"])
    assert MOHURD_NUMBER not in r.text and ID_LI not in r.text and "另一持证人" not in r.text
    [day] = body["public_lookups_per_day"]
    assert day["count"] == 2


def test_a_wrong_id_number_gets_nothing_and_the_same_answer_as_a_wrong_name(env, make_client) -> None:
    client = make_client()
    client.get(f"/api/v1/certificates/{MEM_NUMBER}", headers=env.auth("employer"), params={"purpose": "入职核验"})
    wrong_id = client.post(URL, json={**PROOF, "id_number": ID_LI})
    wrong_name = client.post(URL, json={**PROOF, "name": "张小四"})
    unknown = client.post(URL, json={**PROOF, "number": MOHURD_NUMBER})

    assert wrong_id.status_code == wrong_name.status_code == unknown.status_code == 403
    strip = lambda r: {k: v for k, v in r.json().items()}  # noqa: E731
    assert strip(wrong_id) == strip(wrong_name) == strip(unknown)
    assert "入职核验" not in wrong_id.text and "employer" not in wrong_id.text


def test_the_page_shows_the_lookups_and_the_same_refusal_for_any_mismatch(env, make_client) -> None:
    client = make_client()
    client.get(f"/api/v1/certificates/{MEM_NUMBER}", headers=env.auth("employer"), params={"purpose": "入职核验"})
    page = client.get("/holder")
    assert page.status_code == 200 and 'name="id_number"' in page.text
    csrf = client.cookies.get("certq_csrf")

    ok = client.post("/holder", data={**PROOF, "csrf": csrf})
    wrong_id = client.post("/holder", data={**PROOF, "id_number": ID_LI, "csrf": csrf})
    wrong_name = client.post("/holder", data={**PROOF, "name": "李四", "csrf": csrf})
    csv = client.post("/holder", data={**PROOF, "csrf": csrf, "format": "csv"})

    assert ok.status_code == 200 and "test employer" in ok.text and "入职核验" in ok.text
    assert wrong_id.status_code == wrong_name.status_code == 403
    assert "test employer" not in wrong_id.text and "入职核验" not in wrong_name.text
    refusal = "不能同时核实"
    assert refusal in wrong_id.text and refusal in wrong_name.text
    assert csv.headers["content-type"].startswith("text/csv") and "test employer" in csv.text
    assert "/holder" in client.get("/").text  # linked from the public pages


def test_the_attempt_limit_and_lock_out_hold_across_two_instances_on_one_database(env, make_client) -> None:
    a, b = make_client(), make_client()
    tight(a, cert_limit=2)
    tight(b, cert_limit=2)

    assert a.post(URL, json={**PROOF, "id_number": ID_LI}).status_code == 403
    assert b.post(URL, json={**PROOF, "name": "张小四"}).status_code == 403
    locked = a.post(URL, json={**PROOF, "name": "张小五"})
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 3600

    # locked out: even the right details are refused, on either instance, before anything is compared
    assert b.post(URL, json=PROOF).status_code == 429
    assert a.post(URL, json=PROOF).status_code == 429


def test_the_per_ip_limit_counts_every_attempt(env, make_client) -> None:
    a, b = make_client(), make_client()
    tight(a, ip_limit=3)
    tight(b, ip_limit=3)
    assert a.post(URL, json=PROOF).status_code == 200
    assert b.post(URL, json=PROOF).status_code == 200
    assert a.post(URL, json={**PROOF, "number": MOHURD_NUMBER}).status_code == 403
    assert b.post(URL, json=PROOF).status_code == 429  # the fourth attempt from this address


def test_a_holders_own_visits_do_not_lock_their_certificate(env, make_client) -> None:
    client = make_client()
    tight(client, cert_limit=2)
    for _ in range(4):
        assert client.post(URL, json=PROOF).status_code == 200


@pytest.mark.redis
def test_with_redis_the_lock_out_holds_across_instances(env, make_client, redis_url) -> None:
    import redis.asyncio as aioredis

    a, b = make_client(redis_url=redis_url), make_client(redis_url=redis_url)
    for c in (a, b):
        svc = c.app.state.services
        prefix = f"certq-test-{id(env)}"
        svc.holders.guard = HolderGuard(
            svc.gateway.store.engine, svc.gateway.cache.client, limits=Limits(cert_limit=1), prefix=prefix
        )
    assert a.post(URL, json={**PROOF, "id_number": ID_LI}).status_code == 403
    assert b.post(URL, json={**PROOF, "id_number": ID_LI}).status_code == 429
    assert a.post(URL, json=PROOF).status_code == 429
    assert aioredis  # the client the app made is the one the guard uses



def _logged(env, client, role: str, number: str, holder_id: str, *, id_given: bool, purpose: str) -> None:
    """An audit entry as a lookup by `role`'s key writes it, about `holder_id` (what `audit_holder` decided)."""
    from aggregator.audit import AuditEntry
    from aggregator.audit.entry import CliActor

    entry = AuditEntry.now(
        CliActor(key_id=env.key_ids[role], role=role), action="lookup", number=number, name_given=False,
        id_number_given=id_given, verdict="valid", purpose=purpose, client_ip="10.0.0.8", holder_id_number=holder_id,
    )
    client.portal.call(client.app.state.services.audit.write, [entry])


def test_lookups_logged_as_about_the_holder_are_shown_and_nobody_elses(env, make_client) -> None:
    client = make_client()
    live_only = "京B099999000001"  # a certificate a live source found for 张小三: in no uploaded row
    _logged(env, client, "employer", live_only, ID_ZHANG, id_given=False, purpose="现场核验")
    # 李四's certificate looked up with 张小三's ID number: about 张小三 (his ID was used), but 李四's number and
    # verdict are not his to see
    _logged(env, client, "regulator", MOHURD_NUMBER, ID_ZHANG, id_given=True, purpose="身份证号有误")
    _logged(env, client, "regulator", "京B099999000002", ID_LI, id_given=False, purpose="李四的证书")
    # by the ID number itself, through the API: already the holder's number
    client.get(f"/api/v1/certificates/{ID_ZHANG}", headers=env.auth("employer"), params={"purpose": "按身份证号"})

    r = client.post(URL, json=PROOF)

    assert r.status_code == 200, r.text
    rows = {x["purpose"]: x for x in r.json()["lookups"]}
    assert set(rows) == {"现场核验", "身份证号有误", "按身份证号"}
    assert rows["现场核验"]["number"] == live_only and rows["现场核验"]["organisation"] == "test employer"
    assert rows["身份证号有误"]["organisation"] == "test regulator" and rows["身份证号有误"]["verdict"] is None
    assert rows["按身份证号"]["number"] == ID_ZHANG
    assert MOHURD_NUMBER not in r.text and "京B099999000002" not in r.text and "李四的证书" not in r.text

    li = client.post(URL, json={"number": MOHURD_NUMBER, "name": "李四", "id_number": ID_LI})
    assert li.status_code == 200, li.text
    li_rows = {x["purpose"]: x for x in li.json()["lookups"]}
    assert set(li_rows) == {"身份证号有误", "李四的证书"}  # his certificate was looked up, whoever's ID was given
    assert ID_ZHANG not in li.text and "现场核验" not in li.text


def test_the_attempt_limits_are_web_settings_read_from_the_environment(env, make_client) -> None:
    from pydantic import ValidationError

    from aggregator.web.config import WebConfig
    from tests.web_support import quiet_config

    config = WebConfig.from_env({"CERTQ_WEB_HOLDER_CERT_LIMIT": "2", "CERTQ_WEB_HOLDER_CERT_LOCKOUT_S": "600"})
    assert (config.holder_cert_limit, config.holder_cert_lockout_s, config.holder_ip_limit) == (2, 600, 10)
    for bad in ({"CERTQ_WEB_HOLDER_IP_LIMIT": "0"}, {"CERTQ_WEB_HOLDER_CERT_WINDOW_S": "soon"}):
        with pytest.raises(ValidationError, match="holder_"):
            WebConfig.from_env(bad)

    client = make_client(quiet_config(holder_cert_limit=2, holder_cert_lockout_s=600))
    assert client.app.state.services.holders.guard.limits.cert_limit == 2
    assert client.post(URL, json={**PROOF, "id_number": ID_LI}).status_code == 403
    assert client.post(URL, json={**PROOF, "name": "张小四"}).status_code == 403
    locked = client.post(URL, json=PROOF)
    assert locked.status_code == 429 and 0 < int(locked.headers["Retry-After"]) <= 600
