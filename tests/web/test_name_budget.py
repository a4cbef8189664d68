"""Name checks are a limited resource (issue 8): a caller may have only a few distinct names checked against
one certificate per UTC day, beyond which the lookup is made without the name and says so; a batch costs
one unit of the key's rate limit per pair; RateLimit-* headers; the attempts in the audit log; control
characters in free text; probes that ignore Authorization.

As a user checks it: over HTTP against the app (records sources only, tests/web_support.py), on SQLite, on
PostgreSQL (CERTQ_TEST_DATABASE_URL) and with a shared Redis (CERTQ_TEST_REDIS_URL; only keys of fresh API
keys are touched, never flushed).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner

from aggregator.records import RecordStore
from aggregator.web.keys import KeySpecError, KeyStore
from aggregator.web.namebudget import NameBudget, caller_for
from aggregator.web.ratelimit import MemoryWindow
from aggregator.web.roles import Principal, Role
from tests.redis_server import free_port
from tests.web_support import (
    MEM_EXPIRED,
    MEM_NUMBER,
    MOHURD_NUMBER,
    TestClient,
    WebEnv,
    quiet_config,
    records_settings,
)

SETTINGS = records_settings()
RIGHT = "张小三"  # the holder of MEM_NUMBER
WRONG = [f"错名{i}" for i in range(10)]  # names that are not the holder's
NOT_CHECKED_EN = "the name was not checked"


# --- fixtures and helpers ------------------------------------------------------------------------------


def lookup(client: TestClient, name: str | None, *, number: str = MEM_NUMBER, headers: dict[str, str] | None = None,
           **params: str) -> dict[str, Any]:
    r = client.get(f"/api/v1/certificates/{number}", params={**({"name": name} if name else {}), **params},
                   headers=headers or {})
    assert r.status_code == 200, r.text
    return r.json()


def name_check(body: dict[str, Any]) -> str | None:
    return body["query"]["name_check"]


def audit(client: TestClient, env: WebEnv, key_id: str | None = None) -> list[dict[str, Any]]:
    params = {"limit": "1000", **({"key_id": key_id} if key_id else {})}
    r = client.get("/api/v1/audit", params=params, headers=env.auth("admin"))
    assert r.status_code == 200, r.text
    return r.json()["entries"]


def audit_rows(env: WebEnv) -> int:
    with sqlite3.connect(env.root / "certq.sqlite3") as db:
        return int(db.execute("SELECT count(*) FROM audit_log").fetchone()[0])


def fresh_key(env: WebEnv, role: str = "employer") -> tuple[dict[str, str], str]:
    """A new key (its own Redis sets: nothing another test or run wrote), as headers and its id."""

    async def make() -> tuple[str, str]:
        store = await RecordStore.open(env.database_url)
        try:
            record, secret = await KeyStore(store.engine).create(role, "name budget test")
            return secret, record.key_id
        finally:
            await store.close()

    secret, key_id = asyncio.run(make())
    return {"Authorization": f"Bearer {secret}"}, key_id


def fixed_limiter(client: TestClient, at: float = 1_800_000_010.0) -> None:
    """This instance's rate limits on a clock that stands still, so that counts do not slide mid-test."""
    client.app.state.services.limiter = MemoryWindow(clock=lambda: at)  # type: ignore[attr-defined]


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    """An answer without what differs from one lookup to the next anyway (times, per-source timings)."""
    return {k: v for k, v in body.items() if k not in ("answered_at", "elapsed_ms", "sources")}


# --- the budget as a user meets it ---------------------------------------------------------------------


def test_the_sixth_name_is_not_checked_and_a_right_name_then_looks_like_a_wrong_one(
    make_client: Callable[..., TestClient], env: WebEnv
) -> None:
    client = make_client()
    employer = env.auth("employer")
    first = [lookup(client, n, headers=employer) for n in WRONG[:5]]
    assert all(b["verdict"] == "name_mismatch" and name_check(b) == "checked" for b in first)
    assert all(b["name_matches"] is False for b in first)

    right, wrong = lookup(client, RIGHT, headers=employer), lookup(client, WRONG[5], headers=employer)
    for b in (right, wrong):
        assert name_check(b) == "not_checked" and b["query"]["name_given"] is True
        assert b["verdict"] == "valid" and b["name_matches"] is None  # what a lookup without a name says
        assert NOT_CHECKED_EN in b["verdict_reason"] and "未核对姓名" in b["verdict_reason"]
        assert all("name_matches" not in c or c["name_matches"] is None for c in b["certificates"])
    assert comparable(right) == comparable(wrong)  # nothing in the answer depends on the name
    no_name = lookup(client, None, headers=employer)
    assert no_name["verdict"] == right["verdict"] and no_name["certificates"] == right["certificates"]
    assert name_check(no_name) is None

    # a name tried already today is checked again at no cost; so are normalised forms of it
    again = lookup(client, WRONG[2], headers=employer)
    assert name_check(again) == "checked" and again["verdict"] == "name_mismatch"
    spaced = lookup(client, " ".join(WRONG[3]), headers=employer)
    assert name_check(spaced) == "checked" and spaced["verdict"] == "name_mismatch"

    # another certificate, another key: budgets of their own
    assert name_check(lookup(client, WRONG[6], number=MEM_EXPIRED, headers=employer)) == "checked"
    other = lookup(client, RIGHT, headers=env.auth("department-mem"))
    assert name_check(other) == "checked" and other["verdict"] == "valid"
    # regulators and admins see the holder's name anyway: never budgeted
    admin = [lookup(client, n, headers=env.auth("admin")) for n in WRONG[:7]]
    assert {name_check(b) for b in admin} == {"checked"}


def test_the_public_has_a_budget_per_client_ip(make_client: Callable[..., TestClient], env: WebEnv) -> None:
    client = make_client(quiet_config(trusted_proxies=["10.0.0.0/8"]), client=("10.0.0.2", 40000))
    ip_a, ip_b = {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "198.51.100.8"}
    for n in WRONG[:5]:
        assert lookup(client, n, headers=ip_a)["verdict"] == "name_mismatch"
    assert audit_rows(env) == 0  # public lookups are not audited ...
    refused = lookup(client, RIGHT, headers=ip_a)
    assert name_check(refused) == "not_checked" and refused["verdict"] == "valid"
    assert refused["certificates"][0]["holder_name"] == "张*三"  # masked, as without a name
    assert name_check(lookup(client, RIGHT, headers=ip_b)) == "checked"  # another client

    # ... except a refused name check, so that regulators see who keeps guessing
    [entry] = audit(client, env, "-")
    assert entry["role"] == "public" and entry["action"] == "lookup" and entry["client_ip"] == "203.0.113.7"
    assert entry["name_check"] == "not_checked" and entry["name_given"] is True and entry["number"] == MEM_NUMBER
    assert RIGHT not in json.dumps(entry, ensure_ascii=False)

    # an IPv6 client holds its /64: hopping addresses inside it does not buy names
    v6 = [{"X-Forwarded-For": f"2001:db8:1:2::{i:x}"} for i in range(1, 8)]
    assert [name_check(lookup(client, n, headers=h)) for n, h in zip(WRONG[:7], v6, strict=True)] == (
        ["checked"] * 5 + ["not_checked"] * 2
    )


def test_two_instances_on_one_database_share_the_budget(
    make_client: Callable[..., TestClient], env: WebEnv
) -> None:
    a, b = make_client(), make_client()
    employer = env.auth("employer")
    for i, n in enumerate(WRONG[:5]):
        assert name_check(lookup(a if i % 2 else b, n, headers=employer)) == "checked"
    assert name_check(lookup(a, WRONG[5], headers=employer)) == "not_checked"
    assert name_check(lookup(b, WRONG[6], headers=employer)) == "not_checked"

    # only keyed digests are stored: never a name, and one random key per deployment
    with sqlite3.connect(env.root / "certq.sqlite3") as db:
        rows = db.execute("SELECT caller, number, day, name_digest FROM name_checks").fetchall()
        secrets = db.execute("SELECT name FROM deployment_secrets").fetchall()
    tried = rows
    assert len(tried) == 5 and {r[0] for r in tried} == {f"key:{env.key_ids['employer']}"}
    assert {r[2] for r in tried} == {datetime.now(UTC).date().isoformat()}
    assert all(len(r[3]) == 64 and all(n not in r[3] for n in WRONG) for r in tried)
    assert secrets == [("name_digest_key",)]
    assert "错名" not in (env.root / "certq.sqlite3").read_bytes().decode("utf-8", "replace")


@pytest.mark.redis
def test_two_instances_on_one_redis_share_the_budget(
    make_client: Callable[..., TestClient], env: WebEnv, redis_url: str
) -> None:
    import redis

    a, b = make_client(redis_url=redis_url), make_client(redis_url=redis_url)
    headers, key_id = fresh_key(env)
    assert [name_check(lookup(c, n, headers=headers)) for c, n in zip([a, b] * 3, WRONG[:6], strict=True)] == (
        ["checked"] * 5 + ["not_checked"]
    )
    assert name_check(lookup(a, WRONG[0], headers=headers)) == "checked"
    day = datetime.now(UTC).date().isoformat()
    key = f"certq:web:names:{day}:key:{key_id}:{MEM_NUMBER}"
    r = redis.Redis.from_url(redis_url)
    try:
        assert r.scard(key) == 5 and 0 < r.ttl(key) <= 25 * 3600 + 60  # gone an hour after the day
    finally:
        r.delete(key)
        r.close()
    with sqlite3.connect(env.root / "certq.sqlite3") as db:  # Redis kept it; the database had no part
        assert db.execute("SELECT count(*) FROM name_checks WHERE caller = ?", (f"key:{key_id}",)).fetchone()[0] == 0


def test_with_redis_down_the_database_keeps_the_budget(
    make_client: Callable[..., TestClient], env: WebEnv
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    a, b = make_client(redis_url=dead), make_client(redis_url=dead)
    employer = env.auth("employer")
    checks = [name_check(lookup(c, n, headers=employer)) for c, n in zip([a, b] * 4, WRONG[:8], strict=True)]
    assert checks == ["checked"] * 5 + ["not_checked"] * 3
    assert a.app.state.services.names.health.down  # type: ignore[attr-defined]


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_concurrent_callers_on_the_database_never_get_more_than_the_budget(store: RecordStore) -> None:
    """Four instances at once, 40 distinct names and some repeats: exactly five are admitted, on SQLite and
    on PostgreSQL (where the transactions do run at the same time)."""
    instances = [NameBudget(store.engine, per_certificate=5) for _ in range(4)]
    names = [f"名{i}" for i in range(40)]
    results = await asyncio.gather(
        *(instances[i % 4].admit("key:concurrent", MEM_NUMBER, n) for i, n in enumerate(names + names[:10]))
    )
    admitted = {n for n, ok in zip(names + names[:10], results, strict=True) if ok}
    assert len(admitted) == 5
    assert all(await asyncio.gather(*(instances[0].admit("key:concurrent", MEM_NUMBER, n) for n in admitted)))
    assert not await instances[1].admit("key:concurrent", MEM_NUMBER, "又一个名字")
    assert await instances[2].admit("key:other", MEM_NUMBER, "又一个名字")
    # every instance found the same per-deployment key in the database
    assert len({await i._key() for i in instances}) == 1


# --- batches ---------------------------------------------------------------------------------------------


def test_a_batch_of_a_thousand_names_for_one_certificate_checks_five(
    make_client: Callable[..., TestClient], env: WebEnv
) -> None:
    client = make_client(quiet_config(key_per_minute=1200))
    names = [f"候选{i}" for i in range(1000)]
    names[500] = RIGHT
    pairs = [{"number": MEM_NUMBER, "name": n} for n in names]
    r = client.post("/api/v1/verifications", json={"pairs": pairs}, headers=env.auth("employer"))
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["name_check"] for x in results] == ["checked"] * 5 + ["not_checked"] * 995
    assert {x["verdict"] for x in results[:5]} == {"name_mismatch"}
    assert results[500]["verdict"] == "valid" and results[500]["name_matches"] is None  # the right name: unseen
    assert {x["verdict"] for x in results[5:]} == {"valid"} and {x["name_matches"] for x in results[5:]} == {None}
    assert int(r.headers["ratelimit-remaining"]) <= 200  # 1,000 pairs cost 1,000

    entries = audit(client, env, env.key_ids["employer"])
    assert len(entries) == 1000
    counts: dict[str | None, int] = {}
    for e in entries:
        counts[e["name_check"]] = counts.get(e["name_check"], 0) + 1
    assert counts == {"mismatch": 5, "not_checked": 995}

    # CSV: the same per row, with a note a person can read
    csv_body = "number,name\n" + "".join(f"{MEM_NUMBER},{n}\n" for n in (RIGHT, WRONG[0]))
    out = client.post("/api/v1/verifications?format=csv", content=csv_body.encode(),
                      headers={**env.auth("employer"), "Content-Type": "text/csv"})
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(out.text.lstrip("\ufeff"))))
    assert [(x["verdict"], x["name_matches"], x["name_check"]) for x in rows] == [
        ("valid", "", "not_checked"), ("valid", "", "not_checked")
    ]
    assert all(NOT_CHECKED_EN in x["verdict_reason"] for x in rows)


def test_a_batch_costs_one_unit_per_pair_and_is_refused_whole_if_it_does_not_fit(
    make_client: Callable[..., TestClient], env: WebEnv
) -> None:
    client = make_client(quiet_config(key_per_minute=10))
    fixed_limiter(client)
    employer = env.auth("employer")
    for _ in range(3):
        assert client.get("/api/v1/whoami", headers=employer).status_code == 200
    before = audit_rows(env)
    pairs = [{"number": MOHURD_NUMBER, "name": "李四"}] * 8
    refused = client.post("/api/v1/verifications", json=pairs, headers=employer)
    assert refused.status_code == 429 and refused.json()["title"] == "rate-limited"
    assert refused.headers["retry-after"].isdigit() and int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-limit"] == "10" and refused.headers["ratelimit-remaining"] == "6"
    assert refused.headers["ratelimit-policy"] == "10;w=60"
    assert refused.headers["ratelimit-reset"] == refused.headers["retry-after"]
    assert audit_rows(env) == before  # nothing was looked up

    fits = client.post("/api/v1/verifications", json=pairs[:6], headers=employer)  # the 6 left (5 used)
    assert fits.status_code == 200 and fits.json()["count"] == 6
    assert fits.headers["ratelimit-remaining"] == "0"
    too_big = client.post("/api/v1/verifications", json=pairs * 2, headers=env.auth("admin"))  # 16 > 10/min
    assert too_big.status_code == 422 and "per minute" in too_big.json()["detail_en"]


def test_ratelimit_headers_on_every_limited_response(make_client: Callable[..., TestClient], env: WebEnv) -> None:
    client = make_client(quiet_config(ip_per_minute=3, key_per_minute=50))
    fixed_limiter(client)
    first = client.get("/api/v1/recognition")
    assert first.status_code == 200
    assert (first.headers["ratelimit-limit"], first.headers["ratelimit-remaining"]) == ("3", "2")
    assert first.headers["ratelimit-policy"] == "3;w=60" and 1 <= int(first.headers["ratelimit-reset"]) <= 60
    keyed = client.get(f"/api/v1/certificates/{MEM_NUMBER}", headers=env.auth("employer"))
    assert (keyed.headers["ratelimit-limit"], keyed.headers["ratelimit-remaining"]) == ("50", "49")
    bad_key = client.get("/api/v1/whoami", headers=env.auth("garbage"))  # counted against the IP
    assert bad_key.status_code == 401 and bad_key.headers["ratelimit-remaining"] == "1"
    client.get("/api/v1/recognition")
    limited = client.get("/api/v1/recognition")
    assert limited.status_code == 429 and limited.headers["ratelimit-remaining"] == "0"
    assert limited.headers["ratelimit-reset"] == limited.headers["retry-after"]
    for path in ("/healthz", "/metrics", "/static/certq.css"):  # never limited: no headers
        assert "ratelimit-limit" not in client.get(path).headers
    off = make_client()  # limits switched off: nothing to report
    assert "ratelimit-limit" not in off.get("/api/v1/recognition").headers


# --- the audit log ---------------------------------------------------------------------------------------


def test_the_audit_log_says_what_became_of_each_name(make_client: Callable[..., TestClient], env: WebEnv) -> None:
    client = make_client(quiet_config(names_per_certificate=2))
    employer = env.auth("employer")
    lookup(client, RIGHT, headers=employer)
    lookup(client, WRONG[0], headers=employer)
    lookup(client, WRONG[1], headers=employer)
    lookup(client, None, headers=employer)
    client.post("/api/v1/verifications", json=[{"number": MEM_NUMBER, "name": RIGHT},
                                               {"number": MEM_NUMBER, "name": WRONG[2]}], headers=employer)
    for n in (WRONG[0], WRONG[1], WRONG[2]):  # the public: the third name is refused (and audited)
        lookup(client, n)
    key = env.key_ids["employer"]
    assert [(e["key_id"], e["action"], e["name_check"]) for e in reversed(audit(client, env))] == [
        (key, "lookup", "match"),
        (key, "lookup", "mismatch"),
        (key, "lookup", "not_checked"),  # a third name, budget 2
        (key, "lookup", None),  # no name given
        (key, "verification", "match"),  # a name tried already: checked again
        (key, "verification", "not_checked"),
        ("-", "lookup", "not_checked"),  # the public's first two names are not audited, the refused third is
    ]

    # the regulator's page shows the log, the public's entry included
    page = client.get("/regulator", headers=env.auth("regulator"))
    assert page.status_code == 200 and "<code>-</code>" in page.text

    # and so does `certq audit`
    from aggregator.web.cli import audit_command

    out = CliRunner().invoke(audit_command, ["--json", "--db", env.database_url, "--limit", "3"])
    assert out.exit_code == 0, out.output
    assert [json.loads(line)["name_check"] for line in out.output.splitlines()][0] == "not_checked"
    table = CliRunner().invoke(audit_command, ["--db", env.database_url], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "name check" in table.output and "not_checked" in table.output


# --- free text and probes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["入职\r\n核验", "入职\n核验", "入职\t核验", "入职\x85核验", "入职\u2028核验"])
def test_a_purpose_with_line_breaks_or_control_characters_is_refused(
    make_client: Callable[..., TestClient], env: WebEnv, text: str
) -> None:
    client = make_client()
    lookup_path = f"/api/v1/certificates/{MEM_NUMBER}"
    assert client.get(lookup_path, headers={**env.auth("employer"), "X-Purpose": quote(text)}).status_code == 422
    assert client.get(lookup_path, params={"purpose": text}, headers=env.auth("regulator")).status_code == 422
    batch = client.post("/api/v1/verifications", json={"pairs": [{"number": MEM_NUMBER}], "purpose": text},
                        headers=env.auth("employer"))
    assert batch.status_code == 422 and "control characters" in batch.json()["detail_en"]
    assert audit_rows(env) == 0


def test_a_key_label_with_control_characters_is_refused(env: WebEnv) -> None:
    async def create(label: str) -> None:
        store = await RecordStore.open(env.database_url)
        try:
            await KeyStore(store.engine).create("employer", label)
        finally:
            await store.close()

    for label in ("某公司\n人事部", "某公司\t人事部", "a\x00b"):
        with pytest.raises(KeySpecError):
            asyncio.run(create(label))


def test_probes_ignore_the_authorization_header(make_client: Callable[..., TestClient]) -> None:
    client = make_client(quiet_config(ip_per_minute=1))
    for auth in ("Bearer garbage", "Basic dXNlcjpwYXNz", "Bearer cq_000000000000_" + "A" * 43):
        for path in ("/healthz", "/readyz", "/metrics"):
            r = client.get(path, headers={"Authorization": auth})
            assert r.status_code == 200, (path, auth, r.text)


def test_whose_budget_a_lookup_spends() -> None:
    employer = Principal(Role.EMPLOYER, key_id="3f9a0c1d2e4b")
    assert caller_for(employer, "203.0.113.9") == "key:3f9a0c1d2e4b"
    assert caller_for(Principal.anonymous(), "203.0.113.9") == "ip:203.0.113.9"
    assert caller_for(Principal.anonymous(), "::ffff:203.0.113.9") == "ip:203.0.113.9"
    assert caller_for(Principal.anonymous(), "2001:db8:1:2:aaaa::1") == "ip:2001:db8:1:2::/64"
    assert caller_for(Principal(Role.REGULATOR, key_id="a"), None) is None
    assert caller_for(Principal(Role.ADMIN, key_id="b"), None) is None


def test_the_window_counts_a_cost_in_full_or_not_at_all() -> None:
    now = [1_800_000_030.0]  # half-way into a minute
    w = MemoryWindow(clock=lambda: now[0])
    one = w.hit_now("k", 10)
    assert one.allowed and (one.limit, one.remaining, one.reset_s) == (10, 9, 30)
    nine = w.hit_now("k", 10, cost=9)
    assert nine.allowed and nine.remaining == 0
    refused = w.hit_now("k", 10)
    # 6 s into the next minute this one's 10 weigh 9 (the sliding window), and one more fits
    assert not refused.allowed and refused.remaining == 0 and refused.retry_after_s == refused.reset_s == 36
    now[0] += 60  # the previous minute now weighs half: 5 used
    half = w.hit_now("k", 10, cost=6)
    assert not half.allowed and half.remaining == 5 and half.retry_after_s == 6
    assert w.hit_now("k", 10, cost=5).allowed


@pytest.mark.redis
async def test_concurrent_callers_on_redis_go_together_and_never_get_more_than_the_budget(
    sqlite_store: RecordStore, redis_url: str
) -> None:
    """Calls made at once share script calls (issue 13), yet each caller gets its own answers in its own order:
    exactly five names per caller and certificate, a repeated name free, another caller untouched."""
    import uuid

    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    prefix = f"certq-test-{uuid.uuid4().hex[:12]}"
    budget = NameBudget(sqlite_store.engine, client, per_certificate=5, salt="s", prefix=prefix)
    sent = 0
    script = budget._script

    async def counted(**kw: Any) -> Any:
        nonlocal sent
        sent += 1
        return await script(**kw)  # type: ignore[misc]

    budget._script = counted  # type: ignore[assignment]
    names = [f"名{i}" for i in range(40)]
    try:
        calls = [budget.admit("key:a", MEM_NUMBER, n) for n in names + names[:10]]
        calls += [budget.admit_many("key:b", [(MEM_NUMBER, n) for n in names[:7]])]  # type: ignore[list-item]
        *results, b = await asyncio.gather(*calls)
        admitted = [n for n, ok in zip(names + names[:10], results, strict=True) if ok]
        assert admitted == names[:5] + names[:5]  # in the order asked; the repeats cost nothing
        assert b == [True] * 5 + [False] * 2
        assert sent < len(calls)  # grouped: fewer round trips than calls
        assert not budget.health.down and budget.health.fallbacks == 0
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.mark.redis
async def test_the_shared_window_counts_a_cost_as_the_local_one_does(redis_url: str) -> None:
    import uuid

    import redis.asyncio as aioredis

    from aggregator.web.ratelimit import RedisWindow

    client = aioredis.Redis.from_url(redis_url)
    prefix = f"certq-test-{uuid.uuid4().hex[:12]}"
    now = [1_800_000_030.0]
    shared, local = RedisWindow(client, prefix=prefix, clock=lambda: now[0]), MemoryWindow(clock=lambda: now[0])
    try:
        for cost in (1, 9, 1):
            a, b = await shared.hit("key:k", 10, cost=cost), await local.hit("key:k", 10, cost=cost)
            assert a == b
        now[0] += 60
        assert await shared.hit("key:k", 10, cost=6) == await local.hit("key:k", 10, cost=6)
        assert (await shared.hit("key:k", 10, cost=5)).allowed and not shared.health.down
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
