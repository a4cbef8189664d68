"""The employer page's monitoring form and webhooks panel, signed in with the page's cookie: turn monitoring on
and off, refuse bad settings with a message, add an endpoint (its secret shown once), refuse an internal URL,
rotate, disable with the reason shown, and read an endpoint's delivery log and replay a delivery."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from tests.rosters.test_webhooks import add_event
from tests.web.test_pages import csrf, sign_in, text_of
from tests.web_support import MEM_NUMBER, TestClient, WebEnv, build_env, web_client

CSV = f"证书编号,姓名,工号\n{MEM_NUMBER},张小三,E001\n"
PUBLIC_URL = "https://93.184.215.14/certq-hook"  # a public address: registration needs no DNS


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> WebEnv:
    return build_env(tmp_path_factory.mktemp("rosters-pages"), with_records=False)


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[str, list[dict[str, str]]]]:
    got: list[dict[str, str]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["content-length"]))
            got.append(dict(self.headers))
            self.send_response(200 if len(got) > 1 else 503)  # the first attempt fails, the next succeeds
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", got
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def client(env: WebEnv) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CERTQ_WEBHOOK_ALLOW", "127.0.0.1/32")  # the test's receiver is on loopback
        with web_client(env, follow_redirects=False) as c:
            sign_in(c, env, "employer", "/employer")
            yield c


def _roster(client: TestClient, env: WebEnv) -> str:
    r = client.post("/api/v1/rosters", headers=env.auth("employer"), files={"file": ("r.csv", CSV.encode())},
                    data={"name": "页面"})
    assert r.status_code == 201, r.text
    return r.json()["roster"]["id"]


def test_the_monitoring_form_turns_monitoring_on_and_off(client: TestClient, env: WebEnv) -> None:
    rid = _roster(client, env)
    page = client.get(f"/employer?roster={rid}")
    assert "未开启 off" in text_of(page.text) and 'id="m-every"' in page.text
    token = csrf(client, f"/employer?roster={rid}")
    action = f"/employer/rosters/{rid}/monitoring?roster={rid}"
    r = client.post(action, data={"csrf": token, "enabled": "true", "every_h": "12", "warn_days": "30, 7"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/employer?roster={rid}#monitoring"
    roster = client.get(f"/api/v1/rosters/{rid}", headers=env.auth("employer")).json()
    assert (roster["monitor"], roster["monitor_every_h"], roster["expiry_warn_days"]) == (True, 12, [30, 7])
    assert "已开启 on · 每 12 小时" in text_of(client.get(f"/employer?roster={rid}").text)

    bad = client.post(action, data={"csrf": token, "enabled": "true", "every_h": "12", "warn_days": "soon"})
    assert bad.status_code == 422 and "到期提醒天数请填写整数" in bad.text and 'id="m-every"' in bad.text
    bad = client.post(action, data={"csrf": token, "enabled": "true", "every_h": "1000"})
    assert bad.status_code == 422 and "监控设置有误" in bad.text
    assert client.post(action, data={"csrf": "forged", "enabled": "true"}).status_code == 403

    r = client.post(action, data={"csrf": token, "every_h": "12", "warn_days": "30,7"}, follow_redirects=False)
    assert r.status_code == 303  # the box unticked: stop
    assert client.get(f"/api/v1/rosters/{rid}", headers=env.auth("employer")).json()["monitor"] is False


def _secret(html: str) -> str | None:
    m = re.search(r'id="webhook-secret-value">([^<]+)<', html)
    return m.group(1) if m else None


def test_add_an_endpoint_see_its_secret_once_rotate_and_disable(client: TestClient, env: WebEnv) -> None:
    token = csrf(client, "/employer")
    r = client.post("/employer/webhooks", data={"csrf": token, "url": PUBLIC_URL, "description": "HR 系统",
                                                "event_types": ["status_changed", "expiry_approaching"]})
    assert r.status_code == 303 and r.headers["location"].startswith("/employer/webhooks?shown=")
    shown = client.get(r.headers["location"])  # POST/redirect/GET: a reload does not add a second endpoint
    assert shown.status_code == 200 and shown.headers["cache-control"] == "no-store"
    secret = _secret(shown.text)
    assert secret and secret.startswith("whsec_")
    [hook] = [w for w in client.get("/api/v1/webhooks", headers=env.auth("employer")).json()["webhooks"]
              if w["description"] == "HR 系统"]
    assert hook["event_types"] == ["status_changed", "expiry_approaching"]

    page = client.get("/employer")
    text = text_of(page.text)
    assert secret not in page.text and "93.184.215.14" in text and "启用 enabled" in text
    assert "状态变化 status changed；即将到期 expiry approaching" in text

    rotated = client.post(f"/employer/webhooks/{hook['id']}/rotate", data={"csrf": token})
    assert rotated.status_code == 303
    assert _secret(client.get(rotated.headers["location"]).text) not in (None, secret)
    assert "旧密钥有效至" in text_of(client.get("/employer").text)

    r = client.post(f"/employer/webhooks/{hook['id']}/enabled", data={"csrf": token, "enabled": "false"},
                    follow_redirects=False)
    assert r.status_code == 303
    row = re.search(rf'<tr id="wh-{hook["id"]}">(.*?)</tr>', client.get("/employer").text, re.S)
    assert row and "已停用 disabled" in row.group(1) and "owner" in row.group(1)  # and why


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "ftp://example.com/x", ""])
def test_an_unsafe_or_missing_url_is_refused_on_the_page(client: TestClient, url: str) -> None:
    token = csrf(client, "/employer")
    r = client.post("/employer/webhooks", data={"csrf": token, "url": url, "event_types": ["status_changed"]})
    assert r.status_code == 422 and 'id="wh-error"' in r.text and _secret(r.text) is None
    assert 'value="status_changed" checked' in r.text  # the form keeps what was chosen


def test_the_delivery_log_shows_attempts_and_a_delivery_can_be_replayed(
    client: TestClient, env: WebEnv, receiver: tuple[str, list[dict[str, str]]]
) -> None:
    url, got = receiver
    rid = _roster(client, env)
    token = csrf(client, "/employer")
    assert client.post("/employer/webhooks", data={"csrf": token, "url": url}).status_code == 303
    [hook] = [w for w in client.get("/api/v1/webhooks", headers=env.auth("employer")).json()["webhooks"]
              if w["url"] == url]
    svc = client.app.state.services
    client.portal.call(lambda: add_event(svc.webhooks.engine, datetime.now(UTC), org="test employer", roster_id=rid))
    client.portal.call(svc.webhooks.dispatcher().tick)  # answered 503: a retry is scheduled
    assert len(got) == 1

    page = client.get(f"/employer?webhook={hook['id']}")
    log = page.text[page.text.index('id="deliveries"'):]
    assert "503" in log and " ms" in log and "待发送 pending" in log and "状态变化 status changed" in text_of(log)
    [delivery] = client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=env.auth("employer")).json()["deliveries"]
    assert delivery["webhook_id"] in log

    r = client.post(f"/employer/webhooks/deliveries/{delivery['id']}/replay", data={"csrf": token},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/employer?webhook={hook['id']}#webhooks"
    client.portal.call(svc.webhooks.dispatcher().tick)  # the replay goes now (the original waits for its backoff)
    assert len(got) == 2 and got[1]["webhook-id"] == got[0]["webhook-id"]
    log = client.get(f"/employer?webhook={hook['id']}").text
    assert f"重发自 replay of #{delivery['id']}" in log and "已送达 delivered" in log and "200" in log
    assert client.post("/employer/webhooks/deliveries/99999/replay", data={"csrf": token}).status_code == 404
