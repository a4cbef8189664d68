"""The employer page's new webhook secret, POST/redirect/GET: adding an endpoint or rotating its secret answers 303,
the page after the redirect shows the secret once (never cached, never in a URL or a log), a reload shows a note
instead and adds nothing; another organisation, a colleague's key or another browser cannot read it with the URL;
the page may come from another instance; a kept secret expires (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from aggregator.records.database import open_engine
from aggregator.web.keys import KeyStore
from aggregator.web.onetime import KEEP_S, OneTimeSecrets
from aggregator.web.pages.render import CSRF_COOKIE
from aggregator.web.tables import pending_secrets
from tests.web.test_pages import csrf, sign_in, text_of
from tests.web_support import TestClient, WebEnv, build_env, web_client

PUBLIC_URL = "https://93.184.215.14/certq-hook"  # a public address: registration needs no DNS
GONE = "签名密钥只显示一次，已经显示过"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> WebEnv:
    env = build_env(tmp_path_factory.mktemp("webhook-secret-page"), with_records=False)

    async def more_keys() -> None:
        store = await env.open_store()
        try:
            keys = KeyStore(store.engine)
            for name, label in (("colleague", "test employer"), ("other-org", "另一家公司")):
                _, env.keys[name] = await keys.create("employer", label)
        finally:
            await store.close()

    asyncio.run(more_keys())
    return env


@pytest.fixture(scope="module")
def client(env: WebEnv) -> Iterator[TestClient]:
    with web_client(env, follow_redirects=False) as c:
        sign_in(c, env, "employer", "/employer")
        yield c


def _browser(client: TestClient, env: WebEnv, who: str) -> TestClient:
    """Another browser (its own cookies) on the same app, signed in as `who`."""
    other = TestClient(client.app, follow_redirects=False)
    sign_in(other, env, who, "/employer")
    return other


def _secret(html: str) -> str | None:
    m = re.search(r'id="webhook-secret-value">([^<]+)<', html)
    return m.group(1) if m else None


def _add(client: TestClient, description: str) -> str:
    """Add an endpoint through the page's form; the redirect's Location."""
    r = client.post("/employer/webhooks", data={"csrf": csrf(client, "/employer"), "url": PUBLIC_URL,
                                                "description": description})
    assert r.status_code == 303, r.text
    assert r.headers["cache-control"] == "no-store"
    return r.headers["location"]


def _hooks(client: TestClient, env: WebEnv, description: str) -> list[dict[str, object]]:
    listed = client.get("/api/v1/webhooks", headers=env.auth("employer")).json()["webhooks"]
    return [w for w in listed if w["description"] == description]


def test_adding_an_endpoint_redirects_to_a_page_that_shows_its_secret_once(client: TestClient, env: WebEnv) -> None:
    location = _add(client, "PRG 添加")
    assert re.fullmatch(r"/employer/webhooks\?shown=[A-Za-z0-9_-]{40,}#webhooks", location)

    page = client.get(location)
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    secret = _secret(page.text)
    assert secret and secret.startswith("whsec_") and secret not in location
    assert "签名密钥（仅显示这一次" in text_of(page.text) and "93.184.215.14" in page.text

    again = client.get(location)  # the reload
    assert again.status_code == 200 and again.headers["cache-control"] == "no-store"
    assert _secret(again.text) is None and secret not in again.text and GONE in again.text
    assert len(_hooks(client, env, "PRG 添加")) == 1  # nothing was submitted twice
    assert secret not in client.get("/employer").text


def test_rotating_redirects_to_a_page_that_shows_the_new_secret_once(client: TestClient, env: WebEnv) -> None:
    first = _secret(client.get(_add(client, "PRG 更换")).text)
    [hook] = _hooks(client, env, "PRG 更换")
    r = client.post(f"/employer/webhooks/{hook['id']}/rotate", data={"csrf": csrf(client, "/employer")})
    assert r.status_code == 303 and r.headers["cache-control"] == "no-store"
    location = r.headers["location"]

    page = client.get(location)
    rotated = _secret(page.text)
    assert rotated not in (None, first) and rotated not in location and page.headers["cache-control"] == "no-store"
    again = client.get(location)
    assert _secret(again.text) is None and GONE in again.text


@pytest.mark.parametrize("who", ["other-org", "colleague"])
def test_another_key_cannot_read_the_secret_even_with_the_url_and_the_browser_cookie(
    client: TestClient, env: WebEnv, who: str
) -> None:
    location = _add(client, f"PRG {who}")
    intruder = _browser(client, env, who)
    intruder.cookies.set(CSRF_COOKIE, client.cookies[CSRF_COOKIE])  # even the owner's browser cookie is not enough
    seen = intruder.get(location)
    assert seen.status_code == 200 and _secret(seen.text) is None and GONE in seen.text

    mine = client.get(location)  # the intruder's try did not use it up
    assert (_secret(mine.text) or "").startswith("whsec_")


def test_the_same_key_in_another_browser_cannot_read_the_secret(client: TestClient, env: WebEnv) -> None:
    location = _add(client, "PRG browser")
    other = _browser(client, env, "employer")
    assert _secret(other.get(location).text) is None
    assert _secret(client.get(location).text) is not None


def test_the_page_after_the_redirect_may_come_from_another_instance(client: TestClient, env: WebEnv) -> None:
    location = _add(client, "PRG instances")
    with web_client(env, follow_redirects=False) as second:  # another `certq serve` on the same database
        second.cookies.update(client.cookies)
        page = second.get(location)
        assert (_secret(page.text) or "").startswith("whsec_")
    assert _secret(client.get(location).text) is None


def test_the_secret_is_never_written_to_a_log(
    client: TestClient, env: WebEnv, caplog: pytest.LogCaptureFixture
) -> None:
    # certq's own loggers at every level, the rest (uvicorn, httpx: the URLs asked for) at INFO, as deployed
    with caplog.at_level(logging.INFO), caplog.at_level(logging.DEBUG, logger="aggregator"):
        location = _add(client, "PRG logs")
        secret = _secret(client.get(location).text)
    assert location.split("#")[0] in caplog.text  # what is logged: the address asked for, which holds no secret
    assert secret and secret not in caplog.text
    audit = client.get("/api/v1/audit", headers=env.auth("admin"))  # the change is audited, its secret is not
    assert audit.status_code == 200 and "webhook_change" in audit.text and secret not in audit.text


def test_without_a_token_the_address_leads_to_the_employer_page(client: TestClient) -> None:
    r = client.get("/employer/webhooks")
    assert r.status_code == 303 and r.headers["location"] == "/employer#webhooks"


def test_signed_out_the_address_shows_the_sign_in_form(client: TestClient) -> None:
    location = _add(client, "PRG signed out")
    stranger = TestClient(client.app, follow_redirects=False)
    r = stranger.get(location)
    assert r.status_code == 401 and 'name="key"' in r.text and _secret(r.text) is None


# --- the kept secrets themselves, on both databases ------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def engine(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[AsyncEngine]:
    """A migrated database of this test's own: a SQLite file, or a new database on CERTQ_TEST_DATABASE_URL's
    server (dropped afterwards)."""
    if request.param == "sqlite":
        engine = await open_engine(f"sqlite+aiosqlite:///{tmp_path / 'certq.sqlite3'}")
        yield engine
        await engine.dispose()
        return
    server = request.getfixturevalue("postgres_url")
    name = f"certq_prg_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        engine = await open_engine(server.rsplit("/", 1)[0] + "/" + name)
        yield engine
        await engine.dispose()
    finally:
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def test_a_kept_secret_is_taken_once_by_its_key_and_browser_and_then_expires(engine: AsyncEngine) -> None:
    now = [datetime(2026, 12, 2, 8, 0, tzinfo=UTC)]
    pending = OneTimeSecrets(engine, clock=lambda: now[0])
    token = await pending.keep("whsec_one", subject="ep1", key_id="k1", browser="b1")
    assert "whsec_one" not in token
    assert await pending.take(token, key_id="k2", browser="b1") is None
    assert await pending.take(token, key_id="k1", browser="b2") is None
    found = await pending.take(token, key_id="k1", browser="b1")
    assert found is not None and (found.subject, found.secret) == ("ep1", "whsec_one")
    assert await pending.take(token, key_id="k1", browser="b1") is None

    late = await pending.keep("whsec_two", subject="ep1", key_id="k1", browser="b1")
    now[0] += timedelta(seconds=KEEP_S + 1)
    assert await pending.take(late, key_id="k1", browser="b1") is None
    await pending.keep("whsec_three", subject="ep2", key_id="k1", browser="b1")  # and the expired row is gone
    async with engine.connect() as conn:
        kept = (await conn.execute(sa.select(pending_secrets.c.secret))).scalars().all()
    assert kept == ["whsec_three"]


async def test_the_migrated_table_matches_the_table_the_queries_are_written_against(engine: AsyncEngine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    only = sa.MetaData()
    pending_secrets.to_metadata(only)

    def ours(name: str | None, type_: str, parents: dict[str, str | None]) -> bool:
        if type_ == "schema":
            return True
        return (name if type_ == "table" else parents.get("table_name")) == pending_secrets.name

    def differences(conn: sa.Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": ours})
        return compare_metadata(context, only)

    async with engine.connect() as conn:
        assert await conn.run_sync(differences) == []
