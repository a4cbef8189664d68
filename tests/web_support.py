"""Shared builders for the web tests: a small imported data set, keys for every role, and an app on them.

    env = build_env(tmp_path)                  # SQLite file with records of three departments + one key per role
    with web_client(env, WebConfig(ip_per_minute=3)) as client:
        client.get("/api/v1/certificates/" + MEM_NUMBER, headers=env.auth("employer"))

Records sources only (no live sites), so every answer is decided by the uploaded rows below.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggregator.config import Settings
from aggregator.models import Mode
from aggregator.records import RecordStore
from aggregator.web.app import create_app
from aggregator.web.config import WebConfig
from aggregator.web.keys import KeyStore
from tests.helpers import make_id

with warnings.catch_warnings():  # starlette 1.x suggests httpx2; httpx is what the test extra installs
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ID_ZHANG = make_id("110105", "19900307", "123")  # 张小三: MEM electrician + SAMR welder (number = ID)
ID_OUYANG = make_id("310101", "19851212", "456")  # 欧阳小明: MEM welder, expired
ID_LI = make_id("440104", "19781120", "789")  # 李四: MOHURD 建筑电工
MEM_NUMBER = "T" + ID_ZHANG
MEM_EXPIRED = "T" + ID_OUYANG
MOHURD_NUMBER = "京A012024000123"
SAMR_NUMBER = ID_ZHANG

HEADER = "证书编号,姓名,身份证号,性别,作业类别,操作项目,发证机关,初领日期,有效期起,有效期至,复审日期,证书状态\n"
MEM_CSV = HEADER + (
    f"{MEM_NUMBER},张小三,{ID_ZHANG},男,电工作业,低压电工作业,北京市应急管理局,2020-01-02,2023-01-02,2099-01-01,"
    "2026-01-02,有效\n"
    f"{MEM_EXPIRED},欧阳小明,{ID_OUYANG},男,焊接与热切割作业,熔化焊接与热切割作业,上海市应急管理局,2015-03-01,"
    "2015-03-01,2021-03-01,,有效\n"
)
MOHURD_CSV = HEADER + (
    f"{MOHURD_NUMBER},李四,{ID_LI},男,建筑电工,建筑电工,北京市住房和城乡建设委员会,2024-05-06,2024-05-06,"
    "2099-05-06,,有效\n"
)
SAMR_CSV = HEADER + (
    f"{SAMR_NUMBER},张小三,{ID_ZHANG},男,特种设备作业,GTAW-FeII-6G-3/60-FefS-02/10/12,北京市市场监督管理局,"
    "2022-01-01,2022-01-01,2099-01-01,,有效\n"
)

ROLES = ("employer", "regulator", "department-mem", "department-samr", "admin")


@dataclass
class WebEnv:
    """A database with records and keys, ready for an app."""

    root: Path
    database_url: str
    keys: dict[str, str] = field(default_factory=dict)  # name -> secret ("revoked" too)
    key_ids: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str | None, purpose: str | None = None) -> dict[str, str]:
        """Headers for `who` (a name in `keys`, "garbage" for a malformed key, None for the public)."""
        headers: dict[str, str] = {}
        if who == "garbage":
            headers["Authorization"] = "Bearer not-a-certq-key"
        elif who is not None:
            headers["Authorization"] = f"Bearer {self.keys[who]}"
        if purpose:
            headers["X-Purpose"] = purpose
        return headers

    def run(self, coro: Any) -> Any:
        return asyncio.run(coro)

    async def open_store(self) -> RecordStore:
        return await RecordStore.open(self.database_url)


def records_settings() -> Settings:
    settings = Settings.load()
    return settings.with_sources([s for s in settings.sources if s.mode == Mode.RECORDS])


def build_env(tmp_path: Path, *, with_records: bool = True, database_url: str | None = None) -> WebEnv:
    """The data set and keys in a SQLite file under `tmp_path`, or in the (empty) database `database_url`."""
    env = WebEnv(tmp_path, database_url or f"sqlite+aiosqlite:///{tmp_path / 'certq.sqlite3'}")

    async def prepare() -> None:
        store = await RecordStore.open(env.database_url)
        try:
            if with_records:
                for dept, text in (("mem", MEM_CSV), ("mohurd", MOHURD_CSV), ("samr", SAMR_CSV)):
                    path = tmp_path / f"{dept}-2026Q1.csv"
                    path.write_text(text, encoding="utf-8")
                    report = await store.import_file(path, department=dept, quarter="2026Q1", uploaded_by="test")
                    assert report.status == "imported", report.problems
            keys = KeyStore(store.engine)
            for name in ROLES:
                role, _, dept = name.partition("-")
                record, secret = await keys.create(role, f"test {name}", department=dept or None)
                env.keys[name], env.key_ids[name] = secret, record.key_id
            record, secret = await keys.create("admin", "revoked admin")
            await keys.revoke(record.key_id)
            env.keys["revoked"], env.key_ids["revoked"] = secret, record.key_id
        finally:
            await store.close()

    asyncio.run(prepare())
    return env


def quiet_config(**overrides: Any) -> WebConfig:
    """Limits off unless a test sets them, so that only the rate-limit tests meet a 429."""
    values: dict[str, Any] = {"ip_per_minute": 0, "key_per_minute": 0, "key_cache_s": 0}
    values.update(overrides)
    return WebConfig(**values)


@contextmanager
def web_client(env: WebEnv, web: WebConfig | None = None, **kw: Any) -> Iterator[TestClient]:
    app = create_app(records_settings(), database_url=env.database_url, redis_url="", web=web or quiet_config())
    with TestClient(app, **kw) as client:
        yield client
