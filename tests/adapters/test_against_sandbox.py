"""The adapters against the sandbox sites, through the real runner: every holder's live certificates come back
as the data set has them, whatever the wire shape (JSON, two steps with a cookie, HTML tables)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.registry import build_adapter
from adapters.samr import SamrAdapter
from aggregator.config import RateLimit, SourceConfig
from aggregator.models import Certificate, CertStatus, Department, Outcome, Query
from aggregator.runner import Runner
from aggregator.sandbox import Dataset, Sandbox, generate
from tests.adapters.test_fixtures import load_source
from tests.conftest import TODAY

SOURCES = {
    Department.MEM: "mem_api",
    Department.SAMR: "samr_api",
    Department.MOHRSS: "mohrss_html",
    Department.MOHURD: "mohurd_api",
}


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return generate(seed=2026, holders=400, today=TODAY)


@pytest.fixture
async def sandbox(dataset: Dataset) -> AsyncIterator[Sandbox]:
    async with Sandbox(dataset) as sb:
        yield sb



def source_at(source_id: str, url: str) -> SourceConfig:
    # The test asks hundreds of numbers at once: lift certq's own rate limit for it.
    return load_source(source_id).model_copy(
        update={"endpoint": url, "rate_limit": RateLimit(per_second=10_000, burst=10_000), "timeout_s": 10.0}
    )


def expected_live(cert: Certificate, department: Department) -> dict[str, Any] | None:
    """What the source's answer should parse to, from the data set's live certificate (None: not shown)."""
    data = cert.model_dump(mode="json")
    if department == Department.MOHRSS and cert.status == CertStatus.REVOKED:
        return None  # the public register lists only certificates in force
    if department == Department.SAMR:
        # validFlag says only valid / not valid: an ended term reads as expired, anything else as unknown.
        effective = cert.effective_status(TODAY)
        data["status"] = (
            "valid" if effective == CertStatus.VALID else "expired" if effective == CertStatus.EXPIRED else "unknown"
        )
    if department in (Department.SAMR, Department.MOHURD, Department.MOHRSS):
        data.pop("status_text")  # SAMR/MOHURD send codes, whose words differ from the upload's; MOHRSS none
    if department == Department.MOHRSS:
        data["status"] = "valid"
    return data


def comparable(cert: Certificate, department: Department) -> dict[str, Any]:
    data = cert.model_dump(mode="json")
    if department in (Department.SAMR, Department.MOHURD, Department.MOHRSS):
        data.pop("status_text")
    return data


def _key(d: dict[str, Any]) -> tuple[str, str, str]:
    return (d["number"], d.get("operation_item") or d.get("category") or "", d.get("valid_until") or "")


@pytest.mark.parametrize("department", list(SOURCES), ids=[d.value for d in SOURCES])
async def test_every_holder_parses_as_the_data_set_has_them(
    department: Department, dataset: Dataset, sandbox: Sandbox, runner: Runner
) -> None:
    source_id = SOURCES[department]
    source = source_at(source_id, sandbox.urls[source_id])
    adapter = SamrAdapter(source, today=lambda: TODAY) if department == Department.SAMR else build_adapter(source)
    wanted: dict[str, list[dict[str, Any]]] = {}
    for cert in dataset.live[department]:
        exp = expected_live(cert, department)
        if exp is not None and cert.holder_id_number:
            wanted.setdefault(cert.holder_id_number, []).append(exp)
    assert len(wanted) >= 20, "the data set should give this department a fair number of holders"

    async def ask(id_number: str) -> tuple[str, Any]:
        deadline = time.monotonic() + 10
        return id_number, await runner.run(source, adapter, Query(number=id_number), deadline=deadline)

    results = dict(await asyncio.gather(*(ask(i) for i in sorted(wanted))))
    for id_number, expected in wanted.items():
        result = results[id_number]
        assert result.outcome == Outcome.FOUND, (id_number, result.error_kind, result.message)
        got = sorted((comparable(c, department) for c in result.certificates), key=_key)
        assert got == sorted(expected, key=_key), id_number


async def test_mem_history_stays_out_of_current_answers(dataset: Dataset, sandbox: Sandbox, runner: Runner) -> None:
    source = source_at("mem_api", sandbox.urls["mem_api"])
    adapter = build_adapter(source)
    holders = sorted({c.holder_id_number for c in dataset.live_history[Department.MEM] if c.holder_id_number})
    assert holders, "the data set should have MEM history"
    for id_number in holders[:10]:
        result = await runner.run(source, adapter, Query(number="T" + id_number), deadline=time.monotonic() + 10)
        assert result.outcome == Outcome.FOUND
        assert not any((c.status_text or "").startswith("历史数据") for c in result.certificates)
        current = [c for c in dataset.live[Department.MEM] if c.holder_id_number == id_number]
        assert len(result.certificates) == len(current)


async def test_samr_cookie_is_needed_and_kept_within_one_query(sandbox: Sandbox, runner: Runner) -> None:
    source = source_at("samr_api", sandbox.urls["samr_api"])
    result = await runner.run(
        source, build_adapter(source), Query(number="220104198507153216"), deadline=time.monotonic() + 10
    )
    assert result.outcome == Outcome.FOUND
    assert sandbox.stats("samr")["endpoints"] == {
        "/info-pub/pub/remotePubQuery.json": 1,
        "/info-pub/pub/getPerInfoBySfzh.json": 1,
    }
