"""Fixtures of the web tests: a database with the records and a key per role, copied for each test (building
it is the slow part), and apps on it."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aggregator.web.app import create_app
from aggregator.web.config import WebConfig
from tests.web_support import TestClient, WebEnv, build_env, quiet_config, records_settings

SETTINGS = records_settings()


@pytest.fixture(scope="module")
def template_env(tmp_path_factory: pytest.TempPathFactory) -> WebEnv:
    return build_env(tmp_path_factory.mktemp("web-template"))


@pytest.fixture()
def env(template_env: WebEnv, tmp_path: Path) -> WebEnv:
    """The template database, copied for this test."""
    for f in template_env.root.glob("certq.sqlite3*"):
        shutil.copy(f, tmp_path / f.name)
    return WebEnv(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'certq.sqlite3'}",
        dict(template_env.keys),
        dict(template_env.key_ids),
    )


def app_for(env: WebEnv, web: WebConfig | None = None, *, redis_url: str = "", database_url: str | None = None) -> Any:
    return create_app(
        SETTINGS, database_url=database_url or env.database_url, redis_url=redis_url, web=web or quiet_config()
    )


@pytest.fixture()
def make_client(env: WebEnv) -> Iterator[Callable[..., TestClient]]:
    """Apps on the test's database (each one an instance of its own, with its own web settings), closed at the
    end of the test."""
    opened: list[TestClient] = []

    def make(
        web: WebConfig | None = None, *, redis_url: str = "", database_url: str | None = None, **kw: Any
    ) -> TestClient:
        c = TestClient(app_for(env, web, redis_url=redis_url, database_url=database_url), **kw)
        c.__enter__()
        opened.append(c)
        return c

    yield make
    for c in reversed(opened):
        c.__exit__(None, None, None)
