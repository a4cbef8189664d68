"""Drawing a campaign's sample: the population, its strata, the ordered sampling frame, and the sample.

    drawn = await draw(engine, population, design)
    drawn.population, drawn.strata, drawn.frame_digest, drawn.items

The frame is every current uploaded record the filters keep, in each stratum ordered by its `frame_key` (a
63-bit BLAKE2b hash of its identity computed at import, see `aggregator.records.frame_key`), ties broken by its
stable natural key (department, number, the item that tells apart the cards of one number as in
`Certificate.key()`, then the holder's ID number), compared as code points on both databases (SQLite BINARY,
PostgreSQL COLLATE "C"; no NULLs, whose place differs). Sorting by an integer first is what keeps the draw fast:
the text keys are compared only for equal keys. A seeded PRNG (`random.Random("<seed>:<stratum>")`) then picks
n_h positions of each stratum's frame without replacement: a simple random sample of the stratum. The database counts the
strata and numbers the frame (a window function); only the picked rows leave it. Nothing depends on row ids,
insertion order, the database's collation or `ORDER BY random()`: the same records, filters and seed draw the
same sample on SQLite and PostgreSQL, in any process.

Allocation: proportional (largest remainder: n_h = n N_h / N rounded so that they sum to n) or equal (n / H
each, what a small stratum cannot give going to the others in stratum order). A sample larger than the
population is the whole population.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aggregator.campaigns.filters import Design, Population
from aggregator.campaigns.regions import city_sql, province_sql
from aggregator.models import CERTIFICATE_FIELDS
from aggregator.records.schema import batches, records

NO_VALUE = "未填"  # the stratum of records without the stratifying value
EVERYONE = "全部"  # the one stratum of a simple random sample


@dataclass(frozen=True)
class Stratum:
    stratum: str
    population: int
    sample: int

    def as_dict(self) -> dict[str, Any]:
        return {"stratum": self.stratum, "population": self.population, "sample": self.sample}


@dataclass(frozen=True)
class Sampled:
    """One sampled record: its place in the sample, its stratum, and its row as uploaded."""

    seq: int
    stratum: str
    record_id: int
    department: str
    number: str
    holder_id_number: str | None
    upload: dict[str, Any]  # models.Certificate fields (JSON) + "quarter"


@dataclass
class Drawn:
    population: int
    strata: list[Stratum]
    frame_digest: str
    items: list[Sampled] = field(default_factory=list)


def sub_key() -> Any:
    """What tells apart the cards of one number, as SQL (as `Certificate.key()`; never NULL)."""
    c = records.c
    return sa.case(
        (c.department.in_(["mem", "mohrss"]), sa.func.coalesce(c.operation_item, c.category, "")),
        (c.department == "samr", sa.func.coalesce(c.category, "")),
        else_="",
    )


def stratum_of(design: Design) -> Any:
    c = records.c
    if design.stratify_by == "issuer":
        return sa.func.coalesce(c.issuer, NO_VALUE)
    if design.stratify_by == "province":
        return sa.func.coalesce(province_sql(c.number, c.holder_id_number), NO_VALUE)
    if design.stratify_by == "city":
        return sa.func.coalesce(city_sql(c.number, c.holder_id_number), NO_VALUE)
    return sa.literal(EVERYONE)


def population_filter(population: Population, dialect: str = "postgresql") -> list[Any]:
    """The WHERE terms of the population over the records table.

    On SQLite `+is_current` keeps the planner off the partial lookup indexes: a draw reads most of the table, and
    one sequential scan is several times faster than an index walk with a table lookup per row."""
    c, p = records.c, population
    terms: list[Any] = [sa.text("+records.is_current = 1") if dialect == "sqlite" else c.is_current]
    if p.departments:
        terms.append(c.department.in_([d.value for d in p.departments]))
    if p.kinds:
        terms.append(c.kind.in_([k.value for k in p.kinds]))
    if p.operation_item:
        terms.append(sa.or_(c.operation_item == p.operation_item, c.category == p.operation_item))
    if p.issuer:
        terms.append(c.issuer == p.issuer)
    if p.province:
        terms.append(province_sql(c.number, c.holder_id_number) == p.province)
    if p.city:
        terms.append(city_sql(c.number, c.holder_id_number) == p.city)
    if p.quarter:  # rows of that quarter's batch, or re-affirmed by it (the same file uploaded for a newer quarter)
        b = batches.c
        of_quarter = sa.union(
            sa.select(b.id).where(b.quarter == p.quarter, b.status.in_(["imported", "partial"])),
            sa.select(b.reaffirms).where(b.quarter == p.quarter, b.reaffirms.is_not(None)),
        )
        terms.append(records.c.batch_id.in_(of_quarter))
    if p.valid_on:
        d = p.valid_on
        terms += [
            c.status == "valid",
            sa.or_(c.valid_until.is_(None), c.valid_until >= d),
            sa.or_(c.valid_from.is_(None), c.valid_from <= d),
        ]
    return terms


def allocate(sizes: dict[str, int], n: int, allocation: str) -> dict[str, int]:
    """How many to draw from each stratum (the sum is min(n, population))."""
    names = sorted(sizes)
    total = sum(sizes.values())
    if n >= total:
        return dict(sizes)
    out = dict.fromkeys(names, 0)
    if allocation == "proportional":
        quotas = {s: n * sizes[s] / total for s in names}
        for s in names:
            out[s] = int(quotas[s])
        left = n - sum(out.values())
        for s in sorted(names, key=lambda s: (-(quotas[s] - out[s]), s))[:left]:
            out[s] += 1
        return out
    left = n  # equal: round robin over the strata that still have members, in stratum order
    open_ = [s for s in names if sizes[s] > 0]
    while left and open_:
        share, extra = divmod(left, len(open_))
        still: list[str] = []
        for i, s in enumerate(open_):
            give = min(share + (1 if i < extra else 0), sizes[s] - out[s])
            out[s] += give
            left -= give
            if out[s] < sizes[s]:
                still.append(s)
        open_ = still
    return out


def picks(seed: int, counts: dict[str, int], sizes: dict[str, int]) -> list[tuple[str, int]]:
    """(stratum, position in its frame) of every sampled record, in sample order."""
    out: list[tuple[str, int]] = []
    for name in sorted(counts):
        rng = random.Random(f"{seed}:{name}")
        out += [(name, pos) for pos in rng.sample(range(sizes[name]), counts[name])]
    return out


async def draw(engine: AsyncEngine, population: Population, design: Design) -> Drawn:
    """The sample of `design` from the records `population` keeps (see the module docstring)."""
    stratum = stratum_of(design).label("stratum")
    where = population_filter(population, engine.dialect.name)
    async with engine.connect() as conn:
        counted = sa.select(stratum, sa.func.count()).select_from(records).where(*where).group_by(stratum)
        sizes = {str(s): int(n) for s, n in (await conn.execute(counted)).all()}
        counts = allocate(sizes, design.n, design.allocation)
        chosen = picks(design.seed, counts, sizes)
        found = await _picked_rows(conn, stratum, where, chosen)
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


def frame_order(dialect: str) -> list[Any]:
    """The frame's order within a stratum: the record's `frame_key` (an integer hash of its identity, stored at
    import), ties broken by the natural key compared as code points on both databases (a total order)."""
    c = records.c
    order = [c.department, c.number, sub_key(), sa.func.coalesce(c.holder_id_number, "")]
    if dialect == "postgresql":  # SQLite compares text as code points (BINARY) already
        order = [sa.collate(o, "C") for o in order]
    return [c.frame_key, *order]


async def _picked_rows(
    conn: AsyncConnection, stratum: Any, where: list[Any], chosen: list[tuple[str, int]]
) -> dict[tuple[str, int], Any]:
    """The uploaded row at each picked (stratum, position): the frame numbered in the database, joined with the
    picks in a temporary table (rolled back with the connection's transaction), and the picked records' rows read
    in the same statement (one round trip, not one per 500 ids).

    The frame's numbering is the draw's cost: one sort of the population by (stratum, frame_key, natural key). On
    PostgreSQL the stratum is partitioned COLLATE "C": only its groups matter, not their order, and under the
    database's default collation (C.UTF-8 is not "C" to PostgreSQL) every comparison of two strata went through
    strcoll() and the sort could not use abbreviated keys; the selected stratum is that same expression, so a
    region's CASE is evaluated once per row, not twice."""
    if not chosen:
        return {}
    c = records.c
    dialect = conn.dialect.name
    simple = isinstance(stratum.element, sa.sql.elements.BindParameter)  # one stratum: no partition
    if dialect == "postgresql" and not simple:  # the same expression as column and partition: computed once
        stratum = sa.collate(stratum.element, "C").label("stratum")
    partition = None if simple else stratum
    position = (sa.func.row_number().over(partition_by=partition, order_by=frame_order(dialect)) - 1).label("pos")
    numbered = sa.select(c.id, stratum, position).select_from(records).where(*where).subquery("frame")
    temp = sa.Table(
        "campaign_picks",
        sa.MetaData(),
        sa.Column("stratum", sa.Text(), nullable=False),
        sa.Column("pos", sa.BigInteger(), nullable=False),
        prefixes=["TEMPORARY"],
    )
    columns = [c.id, *(c[name] for name in CERTIFICATE_FIELDS), batches.c.quarter]
    await conn.run_sync(lambda sync: temp.create(sync, checkfirst=False))
    try:
        await conn.execute(sa.insert(temp), [{"stratum": s, "pos": p} for s, p in chosen])
        if dialect == "postgresql":  # unanalyzed, it looks tiny: the plan sorted the whole frame for a merge join
            await conn.execute(sa.text("ANALYZE campaign_picks"))
        joined = (
            sa.select(numbered.c.stratum.label("frame_stratum"), numbered.c.pos.label("frame_pos"), *columns)
            .select_from(numbered)
            .join(temp, sa.and_(temp.c.stratum == numbered.c.stratum, temp.c.pos == numbered.c.pos))
            .join(records, records.c.id == numbered.c.id)
            .join(batches, batches.c.id == records.c.batch_id)
        )
        found = {(str(r.frame_stratum), int(r.frame_pos)): r for r in (await conn.execute(joined)).all()}
    finally:
        await conn.rollback()  # the temporary table goes with the transaction
    return found


def _sampled(seq: int, name: str, r: Any) -> Sampled:
    """One sampled record from its row as read by `_picked_rows`."""
    upload: dict[str, Any] = {f: getattr(r, f) for f in CERTIFICATE_FIELDS}
    upload["items"] = json.loads(upload["items"]) if upload["items"] else []
    upload = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in upload.items()}
    upload["quarter"] = r.quarter
    return Sampled(
        seq=seq,
        stratum=name,
        record_id=int(r.id),
        department=r.department,
        number=r.number,
        holder_id_number=r.holder_id_number,
        upload=upload,
    )
