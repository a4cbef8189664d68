"""Shared fixtures: real services when the machine has them, a clear skip (or, in CI, a failure) when not."""

from __future__ import annotations

import os
import tempfile
from datetime import date
from pathlib import Path

import pytest

# Fixtures shared by several test modules: the records store on SQLite and on PostgreSQL.
pytest_plugins = ("tests.records_support",)

REQUIRE_SERVICES = os.environ.get("CERTQ_REQUIRE_SERVICES") == "1"
FIXTURES = Path(__file__).parent / "fixtures"
# A fixed "today" so that expiry-dependent tests do not drift with the calendar.
TODAY = date(2026, 11, 25)

# A fresh install leaves the live sources unconfigured (skipped); the tests point them at the simulated sites'
# default ports (`certq sandbox`), and at a home of their own, never the developer's ./certq-data.
for _site, _port in {"mem": 18701, "samr": 18702, "mohrss": 18703, "mohurd": 18704}.items():
    os.environ.setdefault(f"CERTQ_{_site.upper()}_URL", f"http://127.0.0.1:{_port}")
os.environ.setdefault("CERTQ_HOME", tempfile.mkdtemp(prefix="certq-test-home-"))
# Receipts are signed (aggregator/receipts/keys.py): the tests make a key of their own, as the demo does.
if not os.environ.get("CERTQ_SIGNING_KEY_FILE"):
    from aggregator.receipts.keys import new_key, write_private_key

    _key_file = Path(tempfile.mkdtemp(prefix="certq-test-signing-")) / "signing-key.jwk"
    write_private_key(new_key(), _key_file)
    os.environ["CERTQ_SIGNING_KEY_FILE"] = str(_key_file)


def _service_url(var: str, what: str) -> str:
    url = os.environ.get(var)
    if url:
        return url
    if REQUIRE_SERVICES:
        pytest.fail(f"{var} is not set but CERTQ_REQUIRE_SERVICES=1: {what} is required here")
    pytest.skip(f"{what} not configured: set {var} to run this test")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a real Redis for tests (CERTQ_TEST_REDIS_URL). Tests must use their own key prefix or DB."""
    url = _service_url("CERTQ_TEST_REDIS_URL", "Redis")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as e:  # noqa: BLE001 - report any connection problem the same way
        msg = f"Redis at {url} is not reachable: {e}"
        if REQUIRE_SERVICES:
            pytest.fail(msg)
        pytest.skip(msg)
    return url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SQLAlchemy URL of a real PostgreSQL for tests (CERTQ_TEST_DATABASE_URL)."""
    url = _service_url("CERTQ_TEST_DATABASE_URL", "PostgreSQL")
    if url.startswith("postgresql://"):
        url = "postgresql+asyncpg://" + url[len("postgresql://") :]
    return url


@pytest.fixture(scope="session")
def settings():
    from aggregator.config import Settings

    return Settings.load()
