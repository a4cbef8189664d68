"""A campaign's world: the sandbox's uploads imported into a fresh store, the sandbox's live sites, a gateway.

    async def test_x(world):            # world.gateway, world.sandbox, world.dataset, world.store (CampaignStore)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from aggregator.campaigns import CampaignStore
from aggregator.config import RateLimit
from aggregator.gateway import Gateway
from aggregator.models import Department
from aggregator.records import RecordStore
from aggregator.sandbox import Dataset, Sandbox, generate
from aggregator.sandbox.dataset import write_upload_csv
from tests.core.test_gateway import fast_settings

TODAY = date(2026, 11, 25)
DATASET = generate(seed=6, holders=90, today=TODAY)  # has a MOHRSS revocation: not listed live, no discrepancy
FAST = {"rate_limit": RateLimit(per_second=2000, burst=2000), "timeout_s": 5.0}


async def import_dataset(store: RecordStore, dataset: Dataset, directory: Path) -> None:
    for dept in Department:
        path = write_upload_csv(dataset, dept, directory / f"{dept.value}-{dataset.upload_quarter}.csv")
        report = await store.import_file(path, department=dept, quarter=dataset.upload_quarter, uploaded_by="test")
        assert report.status == "imported", report.problems


@dataclass
class World:
    dataset: Dataset
    sandbox: Sandbox
    gateway: Gateway
    store: CampaignStore


@pytest.fixture
async def db_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'certq.sqlite3'}"
    store = await RecordStore.open(url)
    try:
        await import_dataset(store, DATASET, tmp_path)
    finally:
        await store.close()
    return url


@pytest.fixture
async def world(settings, db_url: str) -> AsyncIterator[World]:
    async with Sandbox(DATASET) as sb:
        live = fast_settings(settings, sb, **{s: FAST for s in ("mem_api", "samr_api", "mohrss_html", "mohurd_api")})
        async with await Gateway.open(live, database_url=db_url, redis_url="", today=lambda: TODAY) as gw:
            yield World(DATASET, sb, gw, CampaignStore(gw.store.engine))
