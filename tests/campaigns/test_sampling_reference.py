"""The draw that numbers only the buckets holding picks draws exactly what numbering the whole frame drew: the same
records in the same order, for several designs and filters, on SQLite and PostgreSQL, also when many records share
a frame_key. `reference_draw` below is the previous implementation (the whole population numbered by `row_number()
OVER (ORDER BY stratum, frame_key)`, again with the text keys when a pick shares its frame_key with a neighbour),
kept here as the reference."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aggregator.campaigns import Design, Population
from aggregator.campaigns.sampling import (
    Drawn,
    Stratum,
    _sampled,
    allocate,
    draw,
    picks,
    population_filter,
    stratum_of,
    sub_key,
)
from aggregator.models import CERTIFICATE_FIELDS
from aggregator.records.schema import batches, records
from aggregator.sandbox import generate
from tests.campaigns.conftest import import_dataset
from tests.records_support import open_store

LARGER = generate(seed=11, holders=2500, today=date(2026, 11, 25))  # 3,302 uploads

DESIGNS = [  # (population, design): from 2**12 buckets (about one record each) to the whole stratum in one bucket
    (Population(), Design(n=300, seed=1)),
    (Population(), Design(n=5, seed=2)),
    (Population(), Design(n=400, method="stratified", stratify_by="issuer", seed=3)),
    (Population(), Design(n=200, method="stratified", stratify_by="province", allocation="equal", seed=4)),
    (Population(valid_on="2026-11-25"), Design(n=150, method="stratified", stratify_by="city", seed=5)),
    (
        Population(departments=["mem", "samr"]),
        Design(n=50, method="stratified", stratify_by="issuer", allocation="equal", seed=6),
    ),
    (Population(), Design(n=5000, method="stratified", stratify_by="province", seed=7)),  # everyone
]


def every(drawn: Drawn) -> tuple[Any, ...]:
    items = [(i.seq, i.stratum, i.record_id, i.department, i.number, i.upload) for i in drawn.items]
    return drawn.population, drawn.strata, drawn.frame_digest, items


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
@pytest.mark.parametrize("keys", ["as imported", "32 values shared by about 100 records each"])
async def test_the_bucketed_draw_is_the_whole_frame_draw(
    kind: str, keys: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with open_store(kind, tmp_path, request) as store:
        await import_dataset(store, LARGER, tmp_path)
        if keys != "as imported":  # ties across several buckets, ordered by the text keys
            async with store.engine.begin() as conn:
                await conn.execute(sa.text("UPDATE records SET frame_key = (frame_key >> 58) << 58"))
        for population, design in DESIGNS:
            drawn = await draw(store.engine, population, design)
            assert drawn.items, (population, design)
            assert every(drawn) == every(await reference_draw(store.engine, population, design)), (population, design)


# The previous implementation, verbatim but for names.


async def reference_draw(engine: AsyncEngine, population: Population, design: Design) -> Drawn:
    stratum = stratum_of(design).label("stratum")
    where = population_filter(population, engine.dialect.name)
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execution_options(isolation_level="REPEATABLE READ")
        counted = sa.select(stratum, sa.func.count()).select_from(records).where(*where).group_by(stratum)
        sizes = {str(s): int(n) for s, n in (await conn.execute(counted)).all()}
        counts = allocate(sizes, design.n, design.allocation)
        chosen = picks(design.seed, counts, sizes)
        found = await _reference_rows(conn, stratum.element, where, chosen, sizes)
    items = [_sampled(seq, name, found[(name, pos)]) for seq, (name, pos) in enumerate(chosen)]
    digest = hashlib.sha256(
        json.dumps(
            {
                "sizes": sorted(sizes.items()),
                "sample": [(i.department, i.number, i.upload.get("operation_item") or "") for i in items],
            },
            ensure_ascii=False,
        ).encode()
    ).hexdigest()
    return Drawn(
        population=sum(sizes.values()),
        strata=[Stratum(name, sizes[name], counts[name]) for name in sorted(sizes)],
        frame_digest=digest,
        items=items,
    )


def _reference_order(stratum: Any, dialect: str, *, exact: bool) -> list[Any]:
    c = records.c
    texts = [stratum]
    if exact:
        texts += [c.department, c.number, sub_key(), sa.func.coalesce(c.holder_id_number, "")]
    if dialect == "postgresql":
        texts = [sa.collate(t, "C") for t in texts]
    if isinstance(stratum, sa.sql.elements.BindParameter):
        return [c.frame_key, *texts[1:]]
    return [texts[0], c.frame_key, *texts[1:]]


async def _reference_rows(
    conn: AsyncConnection, stratum: Any, where: list[Any], chosen: list[tuple[str, int]], sizes: dict[str, int]
) -> dict[tuple[str, int], Any]:
    if not chosen:
        return {}
    c = records.c
    dialect = conn.dialect.name
    offsets: dict[str, int] = {}
    total = 0
    for name in sorted(sizes):
        offsets[name], total = total, total + sizes[name]
    wanted = {offsets[name] + pos for name, pos in chosen}
    near = {q for p in wanted for q in (p - 1, p + 1) if 0 <= q < total} - wanted
    temp = sa.Table(
        "campaign_picks",
        sa.MetaData(),
        sa.Column("pos", sa.BigInteger(), primary_key=True, autoincrement=False),
        prefixes=["TEMPORARY"],
    )
    ids = sa.Table(
        "campaign_picked_ids",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=False),
        prefixes=["TEMPORARY"],
    )
    await conn.run_sync(lambda sync: (temp.create(sync, checkfirst=False), ids.create(sync, checkfirst=False)))
    try:
        if dialect == "postgresql":
            await conn.execute(
                sa.text("INSERT INTO campaign_picks (pos) SELECT unnest(CAST(:p AS BIGINT[]))"),
                {"p": sorted(wanted | near)},
            )
            await conn.execute(sa.text("ANALYZE campaign_picks"))
        else:
            await conn.execute(sa.insert(temp), [{"pos": p} for p in sorted(wanted | near)])
        for exact in (False, True):
            order = _reference_order(stratum, dialect, exact=exact)
            position = (sa.func.row_number().over(order_by=order) - 1).label("pos")
            numbered = sa.select(c.id, c.frame_key, position).select_from(records).where(*where).subquery("frame")
            hits = sa.select(numbered.c.pos, numbered.c.id, numbered.c.frame_key).join(
                temp, temp.c.pos == numbered.c.pos
            )
            keys, at = {}, {}
            for pos, id_, key in (await conn.execute(hits)).all():
                keys[int(pos)], at[int(pos)] = int(key), int(id_)
            if exact or not any(keys.get(p - 1) == keys[p] or keys.get(p + 1) == keys[p] for p in wanted):
                break
        picked = sa.select(c.id, *(c[name] for name in CERTIFICATE_FIELDS), batches.c.quarter).join(
            batches, batches.c.id == records.c.batch_id
        )
        if dialect == "postgresql":
            picked = picked.where(c.id == sa.any_(sa.bindparam("ids", [at[p] for p in wanted], ARRAY(sa.BigInteger))))
        else:
            await conn.execute(sa.insert(ids), [{"id": at[p]} for p in wanted])
            picked = picked.where(c.id.in_(sa.select(ids.c.id)))
        rows = {int(r.id): r for r in (await conn.execute(picked)).all()}
    finally:
        await conn.rollback()
    return {(name, pos): rows[at[offsets[name] + pos]] for name, pos in chosen}
