"""The sample: reproducible from its seed on SQLite and on PostgreSQL, different for another filter or seed,
allocated as designed; and the Wilson interval's values."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.campaigns import CampaignInvalid, Design, Population, parse_design, parse_population
from aggregator.campaigns.regions import region_of
from aggregator.campaigns.sampling import allocate, draw
from aggregator.campaigns.stats import rate_text, wilson
from aggregator.records import RecordStore
from tests.campaigns.conftest import DATASET, import_dataset
from tests.records_support import open_store

STRATIFIED = Design(n=40, method="stratified", stratify_by="province", allocation="proportional", seed=20261125)


def keys(drawn) -> list[tuple[str, str, str, str]]:
    return [(i.stratum, i.department, i.number, i.upload.get("operation_item") or "") for i in drawn.items]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def loaded(request: pytest.FixtureRequest, tmp_path: Path):
    async with open_store(request.param, tmp_path, request) as store:
        await import_dataset(store, DATASET, tmp_path)
        yield store


async def test_the_same_seed_draws_the_same_sample_on_sqlite_and_postgresql(
    tmp_path: Path, request: pytest.FixtureRequest, postgres_url: str
) -> None:
    samples = {}
    for kind in ("sqlite", "postgres"):
        (tmp_path / kind).mkdir()
        async with open_store(kind, tmp_path / kind, request) as store:
            await import_dataset(store, DATASET, tmp_path / kind)
            samples[kind] = await draw(store.engine, Population(), STRATIFIED)
            again = await draw(store.engine, Population(), STRATIFIED)
            assert keys(again) == keys(samples[kind])
    sqlite, postgres = samples["sqlite"], samples["postgres"]
    assert keys(sqlite) == keys(postgres) and len(sqlite.items) == 40
    assert sqlite.strata == postgres.strata and sqlite.frame_digest == postgres.frame_digest


async def test_records_sharing_a_frame_key_are_still_drawn_the_same_on_sqlite_and_postgresql(
    tmp_path: Path, request: pytest.FixtureRequest, postgres_url: str
) -> None:
    import sqlalchemy as sa

    samples = {}
    for kind in ("sqlite", "postgres"):
        (tmp_path / kind).mkdir()
        async with open_store(kind, tmp_path / kind, request) as store:
            await import_dataset(store, DATASET, tmp_path / kind)
            async with store.engine.begin() as conn:  # three keys for all: ties everywhere, ordered by text keys
                await conn.execute(sa.text("UPDATE records SET frame_key = frame_key % 3"))
            samples[kind] = await draw(store.engine, Population(), STRATIFIED)
    sqlite, postgres = samples["sqlite"], samples["postgres"]
    assert keys(sqlite) == keys(postgres) and len(set(keys(sqlite))) == 40
    assert sqlite.frame_digest == postgres.frame_digest


async def test_another_filter_or_seed_draws_another_sample(loaded: RecordStore) -> None:
    base = await draw(loaded.engine, Population(), STRATIFIED)
    other_seed = await draw(loaded.engine, Population(), STRATIFIED.model_copy(update={"seed": 7}))
    mem_only = await draw(loaded.engine, Population(departments=["mem"]), STRATIFIED)
    assert keys(other_seed) != keys(base)
    assert keys(mem_only) != keys(base) and {i.department for i in mem_only.items} == {"mem"}
    assert mem_only.population < base.population


async def test_strata_and_filters_hold_for_every_sampled_record(loaded: RecordStore) -> None:
    drawn = await draw(loaded.engine, Population(), STRATIFIED)
    assert sum(s.sample for s in drawn.strata) == 40
    assert drawn.population == sum(len(v) for v in DATASET.uploaded.values())
    for i in drawn.items:  # the SQL that stratified agrees with the Python reading of the number
        assert region_of(i.number, i.holder_id_number).province == i.stratum
    jl = await draw(loaded.engine, Population(province="吉林", valid_on="2026-11-25"), Design(n=1000, seed=1))
    assert jl.items and all(region_of(i.number, i.holder_id_number).province == "22" for i in jl.items)
    assert all(i.upload["status"] == "valid" and i.upload["valid_until"] >= "2026-11-25" for i in jl.items
               if i.upload["valid_until"])
    equal = await draw(loaded.engine, Population(), Design(n=12, method="stratified", stratify_by="issuer",
                                                            allocation="equal", seed=2))
    assert sum(s.sample for s in equal.strata) == 12
    assert max(s.sample for s in equal.strata) - min(s.sample for s in equal.strata if s.sample) <= 1
    nobody = await draw(loaded.engine, Population(issuer="没有这个机关"), Design(n=5, seed=1))
    assert nobody.population == 0 and nobody.items == []
    quarter = await draw(loaded.engine, Population(quarter=DATASET.upload_quarter), Design(n=1, seed=1))
    assert quarter.population == drawn.population
    assert (await draw(loaded.engine, Population(quarter="2020Q1"), Design(n=1, seed=1))).population == 0
    items = await draw(loaded.engine, Population(departments=["mem"], operation_item="低压电工作业"), Design(n=500, seed=1))
    assert items.items and {i.upload["operation_item"] for i in items.items} == {"低压电工作业"}


def test_allocation_proportional_and_equal() -> None:
    sizes = {"a": 600, "b": 300, "c": 100}
    assert allocate(sizes, 10, "proportional") == {"a": 6, "b": 3, "c": 1}
    assert sum(allocate(sizes, 7, "proportional").values()) == 7
    assert allocate({"a": 600, "b": 300, "c": 2}, 30, "equal") == {"a": 14, "b": 14, "c": 2}
    assert allocate(sizes, 5000, "equal") == sizes  # more than the population: everyone


def test_wilson_interval_values() -> None:
    lo, hi = wilson(5, 100)
    assert round(lo, 4) == 0.0215 and round(hi, 4) == 0.1118  # the textbook values (Newcombe 1998)
    assert wilson(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson(10, 10)[1] == 1.0 and wilson(0, 0) == (0.0, 1.0)
    assert rate_text(38, 1200) == "3.2 %, 95 % CI 2.3-4.3 %, n = 1,200"
    with pytest.raises(ValueError):
        wilson(11, 10)


def test_bad_filters_and_designs_are_refused_naming_the_field() -> None:
    with pytest.raises(CampaignInvalid, match="省份"):
        parse_population({"province": "火星"})
    with pytest.raises(CampaignInvalid, match="上报季度"):
        parse_population({"quarter": "2026-3"})
    with pytest.raises(CampaignInvalid, match="departments"):
        parse_population({"departments": ["moon"]})
    with pytest.raises(CampaignInvalid, match="stratify_by"):
        parse_design({"n": 10, "method": "stratified"})
    with pytest.raises(CampaignInvalid, match="样本量"):
        parse_design({"n": 0})
    with pytest.raises(CampaignInvalid):
        parse_population({"colour": "red"})
    assert parse_population({"province": "广东省"}).province == "44"
