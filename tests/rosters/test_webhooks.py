"""Webhooks: signed deliveries a real receiver verifies with `standardwebhooks`, retries on a clock the test
controls, endpoints disabled when they are gone, server-side request forgery refused, and the API around them."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook

from aggregator.records.database import write_transaction
from aggregator.records.schema import roster_events, webhook_deliveries
from aggregator.rosters.webhook_config import WebhookConfig
from aggregator.rosters.webhook_store import WebhookStore
from aggregator.rosters.webhook_urls import UnsafeWebhookUrl, UrlPolicy
from aggregator.rosters.webhooks import WebhookDispatcher, payload_of
from tests.records_support import ID_ZHANG

ORG = "某建设集团"
LOOPBACK = WebhookConfig(allow=["127.0.0.1/32"], jitter=0.2)


class Clock:
    """Wall-clock time that moves only when the test says so."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = (start or datetime.now(UTC)).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Receiver:
    """A real HTTP receiver on loopback: answers from `script` (then 200), keeps what it got."""

    server: TestServer
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    delay_s: float = 0.0
    gone_hits: int = 0

    @property
    def url(self) -> str:
        return str(self.server.make_url("/hook"))


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    holder: list[Receiver] = []

    async def hook(request: web.Request) -> web.Response:
        me = holder[0]
        me.got.append((dict(request.headers), await request.read()))
        if me.delay_s:
            await asyncio.sleep(me.delay_s)
        status, headers = me.script.pop(0) if me.script else (200, {})
        return web.Response(status=status, headers=headers, text="ok")

    async def gone(request: web.Request) -> web.Response:
        holder[0].gone_hits += 1
        return web.Response(status=410)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/gone", gone)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    holder.append(Receiver(server))
    try:
        yield holder[0]
    finally:
        await server.close()


async def add_event(engine: Any, at: datetime, *, type: str = "status_changed", org: str = ORG, **more: Any) -> int:
    values = {
        "roster_id": "r1",
        "organisation": org,
        "member_ref": "E001",
        "type": type,
        "number": "T" + ID_ZHANG,
        "department": "MEM",
        "old": "valid",
        "new": "revoked",
        "detail": {"valid_until": "2029-01-02", "was_valid_until": "2029-01-02"},
        "at": at,
    }
    values.update(more)
    async with write_transaction(engine) as conn:
        return int((await conn.execute(sa.insert(roster_events).values(**values).returning(roster_events.c.id))).scalar_one())


async def deliveries(engine: Any) -> list[Any]:
    async with engine.connect() as conn:
        return (await conn.execute(sa.select(webhook_deliveries).order_by(webhook_deliveries.c.id))).all()


def dispatcher(engine: Any, clock: Clock, config: WebhookConfig = LOOPBACK, **kw: Any) -> WebhookDispatcher:
    return WebhookDispatcher(engine, config, clock=clock, rng=random.Random(7), **kw)


# --- delivery ---------------------------------------------------------------------------------------------


async def test_a_revoked_certificate_reaches_the_receiver_signed_and_standardwebhooks_verifies_it(
    store, receiver: Receiver
) -> None:
    clock = Clock()  # real time: the receiver's verify checks the timestamp against its own clock
    hooks = WebhookStore(store.engine, clock=clock)
    endpoint, secret = await hooks.create(ORG, created_by="k1", url=receiver.url)
    await add_event(store.engine, clock(), detail={"valid_until": "2029-01-02", "name": "张小三", "id_number": ID_ZHANG})

    await dispatcher(store.engine, clock).tick()

    [(headers, body)] = receiver.got
    data = Webhook(secret).verify(body, headers)
    assert data["type"] == "status_changed"
    assert data["data"] | {"event_id": 0} == {
        "event_id": 0,
        "roster_id": "r1",
        "member_ref": "E001",
        "number": "T" + ID_ZHANG,
        "department": "MEM",
        "old": "valid",
        "new": "revoked",
        "valid_until": "2029-01-02",
    }
    assert "张小三" not in body.decode() and "id_number" not in body.decode()
    [row] = await deliveries(store.engine)
    assert row.status == "delivered" and row.attempts == 1 and row.last_status_code == 200
    assert headers["webhook-id"] == row.msg_id and headers["Content-Type"] == "application/json"
    # the next tick sends nothing again
    await dispatcher(store.engine, clock).tick()
    assert len(receiver.got) == 1 and endpoint.enabled


async def test_only_the_chosen_event_types_and_only_events_after_registration_are_sent(
    sqlite_store, receiver: Receiver
) -> None:
    engine, clock = sqlite_store.engine, Clock()
    await add_event(engine, clock())  # before the endpoint existed
    await WebhookStore(engine, clock=clock).create(ORG, created_by="k1", url=receiver.url, event_types=["expiry_approaching"])
    await add_event(engine, clock())
    await add_event(engine, clock(), type="expiry_approaching", old=None, new="valid")
    await add_event(engine, clock(), type="expiry_approaching", org="另一家公司")

    await dispatcher(engine, clock).tick()

    assert [json.loads(body)["type"] for _, body in receiver.got] == ["expiry_approaching"]


async def test_failing_three_times_then_200_is_delivered_once_more_with_the_same_id_after_the_backoff(
    sqlite_store, receiver: Receiver
) -> None:
    engine, clock = sqlite_store.engine, Clock()
    receiver.script = [(500, {}), (503, {}), (502, {})]
    hooks = WebhookStore(engine, clock=clock)
    await hooks.create(ORG, created_by="k1", url=receiver.url)
    await add_event(engine, clock())
    d = dispatcher(engine, clock)
    sent_at: list[datetime] = []

    await d.tick()
    sent_at.append(clock())
    for attempt in (1, 2, 3):
        [row] = await deliveries(engine)
        wait = (row.next_attempt_at.replace(tzinfo=UTC) - clock()).total_seconds()
        base = LOOPBACK.backoff_s(attempt)
        assert base * 0.8 <= wait <= base * 1.2, (attempt, wait)  # 30 s, 60 s, 120 s, give or take 20 %
        clock.advance(wait - 1)
        await d.tick()
        assert len(receiver.got) == attempt  # not a second early
        clock.advance(1)
        await d.tick()
        sent_at.append(clock())
        assert len(receiver.got) == attempt + 1

    assert [h["webhook-id"] for h, _ in receiver.got] == [receiver.got[0][0]["webhook-id"]] * 4
    assert len({body for _, body in receiver.got}) == 1  # the same message each time
    [row] = await deliveries(engine)
    assert row.status == "delivered" and row.attempts == 4
    [delivery] = await hooks.deliveries(ORG, row.endpoint_id)
    assert [a.status_code for a in delivery.log] == [500, 503, 502, 200]
    assert all(a.latency_ms is not None for a in delivery.log)


async def test_after_a_rotation_deliveries_verify_with_the_new_secret_and_for_a_day_with_the_old(
    sqlite_store, receiver: Receiver
) -> None:
    engine, clock = sqlite_store.engine, Clock()
    hooks = WebhookStore(engine, clock=clock)
    endpoint, old = await hooks.create(ORG, created_by="k1", url=receiver.url)
    rotated = await hooks.rotate(ORG, endpoint.id, grace_s=86400)
    assert rotated is not None
    _, new = rotated
    await add_event(engine, clock())
    await dispatcher(engine, clock).tick()
    [(headers, body)] = receiver.got
    assert Webhook(new).verify(body, headers) and Webhook(old).verify(body, headers)
    assert len(headers["webhook-signature"].split(" ")) == 2


async def test_retry_after_is_honoured_when_longer_than_the_backoff(sqlite_store, receiver: Receiver) -> None:
    engine, clock = sqlite_store.engine, Clock()
    receiver.script = [(429, {"Retry-After": "3600"})]
    await WebhookStore(engine, clock=clock).create(ORG, created_by="k1", url=receiver.url)
    await add_event(engine, clock())
    d = dispatcher(engine, clock)
    await d.tick()
    [row] = await deliveries(engine)
    assert row.next_attempt_at.replace(tzinfo=UTC) == clock() + timedelta(seconds=3600)
    clock.advance(3599)
    await d.tick()
    assert len(receiver.got) == 1
    clock.advance(1)
    await d.tick()
    assert len(receiver.got) == 2 and (await deliveries(engine))[0].status == "delivered"


async def test_410_disables_the_endpoint_with_an_event_the_organisations_other_endpoints_receive(
    sqlite_store, receiver: Receiver
) -> None:
    engine, clock = sqlite_store.engine, Clock()
    hooks = WebhookStore(engine, clock=clock)
    gone, _ = await hooks.create(ORG, created_by="k1", url=receiver.url.replace("/hook", "/gone"))
    other, _ = await hooks.create(ORG, created_by="k1", url=receiver.url, event_types=["webhook_disabled"])
    await add_event(engine, clock())
    d = dispatcher(engine, clock)

    await d.tick()  # the 410 disables the endpoint
    now = await hooks.get(ORG, gone.id)
    assert now is not None and not now.enabled and "410" in (now.disabled_reason or "")
    assert receiver.gone_hits == 1
    await add_event(engine, clock())
    await d.tick()  # the webhook_disabled event goes out to the other endpoint; nothing more to the gone one
    [(headers, body)] = receiver.got
    data = json.loads(body)
    assert data["type"] == "webhook_disabled" and data["data"]["webhook_id"] == gone.id
    assert data["data"]["roster_id"] is None and data["data"]["reason"] == "gone"
    assert receiver.gone_hits == 1
    assert [r.status for r in await deliveries(engine) if r.endpoint_id == gone.id] == ["failed"]
    assert (await hooks.get(ORG, other.id)).enabled  # type: ignore[union-attr]


async def test_an_endpoint_failing_for_the_whole_retry_period_is_disabled(sqlite_store, receiver: Receiver) -> None:
    engine, clock = sqlite_store.engine, Clock()
    receiver.script = [(500, {})] * 100
    hooks = WebhookStore(engine, clock=clock)
    endpoint, _ = await hooks.create(ORG, created_by="k1", url=receiver.url)
    await add_event(engine, clock())
    d = dispatcher(engine, clock)
    start = clock()
    for _ in range(40):
        await d.tick()
        [row] = await deliveries(engine)
        if row.status != "pending":
            break
        clock.now = row.next_attempt_at.replace(tzinfo=UTC)
    assert row.status == "failed"
    assert 10 <= row.attempts <= 20  # about 16 with the default schedule
    assert timedelta(days=2) < clock() - start <= timedelta(days=3)
    after = await hooks.get(ORG, endpoint.id)
    assert after is not None and not after.enabled and "失败" in (after.disabled_reason or "")
    async with engine.connect() as conn:
        types = (await conn.execute(sa.select(roster_events.c.type))).scalars().all()
    assert types.count("webhook_disabled") == 1


async def test_a_slow_receiver_does_not_hold_up_the_others(sqlite_store, receiver: Receiver) -> None:
    engine, clock = sqlite_store.engine, Clock()
    slow_app = web.Application()
    answered: list[int] = []

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        answered.append(1)
        return web.Response(status=200)

    slow_app.router.add_post("/hook", slow)
    slow_server = TestServer(slow_app, host="127.0.0.1")
    await slow_server.start_server()
    try:
        hooks = WebhookStore(engine, clock=clock)
        await hooks.create(ORG, created_by="k1", url=str(slow_server.make_url("/hook")))
        await hooks.create(ORG, created_by="k1", url=receiver.url)
        for _ in range(6):
            await add_event(engine, clock())
        config = WebhookConfig(allow=["127.0.0.1/32"], timeout_s=1, per_endpoint=2, concurrency=4)
        await dispatcher(engine, clock, config).tick()
        assert answered == []  # the tick came back long before the slow receiver would have answered
    finally:
        await slow_server.close()
    assert len(receiver.got) == 6  # every delivery to the quick receiver went out
    slow_rows = [r for r in await deliveries(engine) if r.status != "delivered"]
    assert len(slow_rows) == 6 and all(r.status == "pending" for r in slow_rows)
    tried = [r for r in slow_rows if r.attempts]
    assert tried and all("timeout" in r.last_error for r in tried)


async def test_two_dispatchers_never_send_the_same_attempt_twice(store, receiver: Receiver) -> None:
    engine, clock = store.engine, Clock()
    await WebhookStore(engine, clock=clock).create(ORG, created_by="k1", url=receiver.url)
    for _ in range(20):
        await add_event(engine, clock())
    config = WebhookConfig(allow=["127.0.0.1/32"], per_endpoint=8, concurrency=8)
    a, b = dispatcher(engine, clock, config), dispatcher(engine, clock, config)
    await asyncio.gather(a.fan_out(), b.fan_out())
    assert len(await deliveries(engine)) == 20
    await asyncio.gather(a.send_due(), b.send_due())
    ids = [h["webhook-id"] for h, _ in receiver.got]
    assert len(ids) == 20 and len(set(ids)) == 20
    assert {r.attempts for r in await deliveries(engine)} == {1}


# --- server-side request forgery ---------------------------------------------------------------------------


def fake_dns(table: dict[str, list[str]]) -> Any:
    async def resolve(host: str) -> list[str]:
        if host not in table:
            raise OSError(f"{host}: no such name")
        return table[host]

    return resolve


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://100.100.100.200/",
        "http://[::ffff:127.0.0.1]/",
        "http://metadata.test/hook",  # a name whose address is the metadata service
        "http://mixed.test/hook",  # one public and one private address
        "ftp://hooks.example.com/x",
        "http://user:pw@hooks.example.com/x",
        "http://nowhere.test/",
    ],
)
async def test_internal_addresses_and_odd_urls_are_refused_at_registration(url: str) -> None:
    dns = fake_dns({"localhost": ["127.0.0.1"], "metadata.test": ["169.254.169.254"],
                    "mixed.test": ["93.184.215.14", "10.0.0.1"], "hooks.example.com": ["93.184.215.14"]})  # fmt: skip
    with pytest.raises(UnsafeWebhookUrl):
        await UrlPolicy(WebhookConfig(), resolve=dns).check(url)


async def test_public_addresses_and_allowlisted_ones_are_accepted() -> None:
    dns = fake_dns({"hooks.example.com": ["93.184.215.14"], "hooks.internal": ["10.0.0.5"]})
    assert await UrlPolicy(WebhookConfig(), resolve=dns).check("https://hooks.example.com/certq")
    allowed = UrlPolicy(WebhookConfig(allow=["127.0.0.1/32", "hooks.internal"]), resolve=dns)
    assert await allowed.check("http://127.0.0.1:9000/hook")
    assert await allowed.check("http://hooks.internal/hook")
    with pytest.raises(UnsafeWebhookUrl):
        await allowed.check("http://127.0.0.2/hook")


def test_the_allowlist_is_validated() -> None:
    with pytest.raises(ValueError, match="not a CIDR or host name"):
        WebhookConfig(allow=["10.0.0.0/33x"])
    assert WebhookConfig.from_env({"CERTQ_WEBHOOK_ALLOW": "127.0.0.1/32, Hooks.Internal"}).allow == (
        "127.0.0.1/32",
        "hooks.internal",
    )


async def test_a_name_that_turns_internal_after_registration_is_refused_at_delivery(
    sqlite_store, receiver: Receiver
) -> None:
    """DNS rebinding: registered while the name was public; at delivery it resolves to the metadata service."""
    engine, clock = sqlite_store.engine, Clock()
    port = receiver.server.port
    table = {"rebind.test": ["93.184.215.14"]}
    url = f"http://rebind.test:{port}/hook"
    await UrlPolicy(LOOPBACK, resolve=fake_dns(table)).check(url)
    await WebhookStore(engine, clock=clock).create(ORG, created_by="k1", url=url)
    await add_event(engine, clock())
    table["rebind.test"] = ["169.254.169.254"]
    await dispatcher(engine, clock, resolve=fake_dns(table)).tick()
    [row] = await deliveries(engine)
    assert row.status == "pending" and row.attempts == 1
    assert row.last_error.startswith("refused") and "169.254.169.254" in row.last_error
    table["rebind.test"] = ["127.0.0.1"]  # allowed (loopback is in the test allowlist): the connection goes there
    clock.advance(3600)
    await dispatcher(engine, clock, resolve=fake_dns(table)).tick()
    assert len(receiver.got) == 1


def test_the_payload_carries_the_minimum() -> None:
    event = {"id": 9, "type": "inconclusive_too_long", "roster_id": "r1", "member_ref": "E7", "number": None,
             "department": None, "old": None, "new": None, "at": datetime(2026, 12, 1, tzinfo=UTC),
             "detail": {"since": "2026-11-27T00:00:00+00:00", "days": 4, "reason": "姓名 张小三 不符",
                        "id_number": ID_ZHANG, "holder": {"name": "张小三"}}}  # fmt: skip
    body = payload_of(event)
    assert json.loads(body) == {
        "type": "inconclusive_too_long",
        "timestamp": "2026-12-01T00:00:00Z",
        "data": {"event_id": 9, "roster_id": "r1", "member_ref": "E7", "number": None, "department": None,
                 "old": None, "new": None, "since": "2026-11-27T00:00:00+00:00", "days": 4},
    }  # fmt: skip


# --- the API -----------------------------------------------------------------------------------------------

PUBLIC_URL = "https://93.184.215.14/certq-hook"  # a public address: registration needs no DNS


@pytest.fixture(scope="module")
def web_env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.web_support import build_env

    return build_env(tmp_path_factory.mktemp("webhooks-web"), with_records=False)


@pytest.fixture
def client(web_env: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An app on a copy of the module's database, without an allowlist."""
    import shutil

    from aggregator.web.app import create_app
    from tests.web_support import TestClient, quiet_config, records_settings

    for f in web_env.root.glob("certq.sqlite3*"):
        shutil.copy(f, tmp_path / f.name)
    monkeypatch.delenv("CERTQ_WEBHOOK_ALLOW", raising=False)
    app = create_app(records_settings(), database_url=f"sqlite+aiosqlite:///{tmp_path / 'certq.sqlite3'}",
                     redis_url="", web=quiet_config())  # fmt: skip
    with TestClient(app) as c:
        yield c


def test_the_secret_is_shown_once_and_each_change_is_audited(client: Any, web_env: Any) -> None:
    employer = web_env.auth("employer")
    r = client.post("/api/v1/webhooks", headers=employer, json={"url": PUBLIC_URL, "event_types": ["status_changed"]})
    assert r.status_code == 201, r.text
    created = r.json()
    secret = created["secret"]
    assert secret.startswith("whsec_") and created["event_types"] == ["status_changed"] and created["enabled"]
    assert r.headers["location"] == f"/api/v1/webhooks/{created['id']}"
    for path in ("/api/v1/webhooks", f"/api/v1/webhooks/{created['id']}"):
        again = client.get(path, headers=employer)
        assert again.status_code == 200 and secret not in again.text and '"secret"' not in again.text
    rotated = client.post(f"/api/v1/webhooks/{created['id']}/rotate-secret", headers=employer).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != secret
    assert rotated["previous_secret_until"] is not None  # the old secret signs alongside for a day
    patched = client.patch(f"/api/v1/webhooks/{created['id']}", headers=employer, json={"enabled": False})
    assert patched.json()["enabled"] is False and "owner" in patched.json()["disabled_reason"]
    assert client.delete(f"/api/v1/webhooks/{created['id']}", headers=employer).json()["deleted"] is True
    assert client.get(f"/api/v1/webhooks/{created['id']}", headers=employer).status_code == 404

    audit = client.app.state.services.audit
    entries = client.portal.call(lambda: audit.read(limit=20, key_id=web_env.key_ids["employer"]))
    changes = [json.loads(e.detail)["change"] for e in entries if e.action == "webhook_change"]
    assert sorted(changes) == ["created", "deleted", "secret_rotated", "updated"]
    assert all(secret not in (e.detail or "") and rotated["secret"] not in (e.detail or "") for e in entries)


def test_another_organisations_webhook_is_a_404_and_regulators_and_the_public_are_refused(
    client: Any, web_env: Any
) -> None:
    mine = client.post("/api/v1/webhooks", headers=web_env.auth("employer"), json={"url": PUBLIC_URL}).json()
    other = web_env.auth("admin")  # an admin key is its own organisation (its label), like any employer
    for method, suffix in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/rotate-secret"), ("GET", "/deliveries")):
        r = client.request(method, f"/api/v1/webhooks/{mine['id']}{suffix}", headers=other,
                           json={"enabled": False} if method == "PATCH" else None)  # fmt: skip
        assert r.status_code == 404, (method, suffix, r.text)
    assert client.get("/api/v1/webhooks", headers=other).json() == {"webhooks": []}
    assert client.get("/api/v1/webhooks", headers=web_env.auth("regulator", purpose="x")).status_code == 403
    assert client.get("/api/v1/webhooks").status_code == 401
    assert client.get(f"/api/v1/webhooks/{mine['id']}", headers=web_env.auth("employer")).json()["enabled"]


@pytest.mark.parametrize(
    ("body", "title"),
    [
        ({"url": "http://127.0.0.1:8080/hook"}, "unsafe-webhook-url"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "unsafe-webhook-url"),
        ({"url": "file:///etc/passwd"}, "unsafe-webhook-url"),
        ({"url": PUBLIC_URL, "event_types": ["everything"]}, "invalid-request"),
        ({"url": PUBLIC_URL, "secret": "mine"}, "invalid-request"),
        ({}, "invalid-request"),
    ],
)
def test_bad_registrations_are_refused_with_a_reason(client: Any, web_env: Any, body: dict, title: str) -> None:
    r = client.post("/api/v1/webhooks", headers=web_env.auth("employer"), json=body)
    assert r.status_code == 422 and r.json()["title"] == title, r.text
    assert r.json()["detail_zh"] and r.json()["detail_en"]


def test_loopback_is_accepted_through_the_allowlist_and_the_log_and_replay_work_end_to_end(
    web_env: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from aggregator.web.app import create_app
    from tests.web_support import TestClient, quiet_config, records_settings

    got: list[tuple[dict[str, str], bytes]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            got.append((dict(self.headers), self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/hook"
    for f in web_env.root.glob("certq.sqlite3*"):
        shutil.copy(f, tmp_path / f.name)
    monkeypatch.setenv("CERTQ_WEBHOOK_ALLOW", "127.0.0.1/32")
    app = create_app(records_settings(), database_url=f"sqlite+aiosqlite:///{tmp_path / 'certq.sqlite3'}",
                     redis_url="", web=quiet_config())  # fmt: skip
    employer = web_env.auth("employer")
    try:
        with TestClient(app) as client:
            created = client.post("/api/v1/webhooks", headers=employer, json={"url": url})
            assert created.status_code == 201, created.text
            hook_id, secret = created.json()["id"], created.json()["secret"]
            svc = client.app.state.services
            engine = svc.webhooks.engine
            client.portal.call(lambda: add_event(engine, datetime.now(UTC), org="test employer"))  # its label
            client.portal.call(svc.webhooks.dispatcher().tick)
            assert len(got) == 1 and Webhook(secret).verify(got[0][1], got[0][0])["type"] == "status_changed"

            log = client.get(f"/api/v1/webhooks/{hook_id}/deliveries", headers=employer).json()
            [delivery] = log["deliveries"]
            assert delivery["status"] == "delivered" and delivery["last_status_code"] == 200
            assert delivery["webhook_id"] == got[0][0]["webhook-id"]
            assert [a["status_code"] for a in delivery["log"]] == [200] and delivery["log"][0]["latency_ms"] >= 0
            assert delivery["payload"]["data"]["member_ref"] == "E001"

            assert client.post(f"/api/v1/webhooks/deliveries/{delivery['id']}/replay",
                               headers=web_env.auth("admin")).status_code == 404  # fmt: skip
            replay = client.post(f"/api/v1/webhooks/deliveries/{delivery['id']}/replay", headers=employer)
            assert replay.status_code == 202 and replay.json()["replay_of"] == delivery["id"]
            client.portal.call(svc.webhooks.dispatcher().tick)
            assert len(got) == 2 and got[1][0]["webhook-id"] == got[0][0]["webhook-id"] and got[1][1] == got[0][1]
            assert client.post("/api/v1/webhooks/deliveries/x1/replay", headers=employer).status_code == 404

            from aggregator.web.services.work import build_engine

            hooks = build_engine(svc, database_url=f"sqlite+aiosqlite:///{tmp_path / 'certq.sqlite3'}").tick_hooks
            assert any(isinstance(getattr(h, "__self__", None), WebhookDispatcher) for h in hooks)
    finally:
        server.shutdown()
        server.server_close()
