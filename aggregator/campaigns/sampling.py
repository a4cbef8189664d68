"""Drawing a campaign's sample: the population, its strata, the ordered sampling frame, and the sample.

    drawn = await draw(engine, population, design)
    drawn.population, drawn.strata, drawn.frame_digest, drawn.items

The frame is every current uploaded record the filters keep, in each stratum ordered by its `frame_key` (a
63-bit BLAKE2b hash of its identity computed at import, see `aggregator.records.frame_key`), ties broken by its
stable natural key (department, number, the item that tells apart the cards of one number as in
`Certificate.key()`, then the holder's ID number), compared as code points on both databases (SQLite BINARY,
PostgreSQL COLLATE "C"; no NULLs, whose place differs). The database sorts by (stratum, frame_key) only; the text
keys are used only when a pick lands on a frame_key shared with a neighbour (see `_picked_rows`). A seeded PRNG
(`random.Random("<seed>:<stratum>")`) then picks n_h positions of each stratum's frame without replacement: a
simple random sample of the stratum. The database counts the strata and numbers the frame (a window function);
only the picked rows leave it. Nothing depends on row ids, insertion order, the database's collation or
`ORDER BY random()`: the same records, filters and seed draw the
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
from sqlalchemy.dialects.postgresql import ARRAY
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
            sa.select(b.reaffirms).where(
                b.quarter == p.quarter, b.reaffirms.is_not(None), b.status.in_(["imported", "partial"])
            ),
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
        if conn.dialect.name == "postgresql":  # the strata's sizes and the numbering read one snapshot
            await conn.execution_options(isolation_level="REPEATABLE READ")
        counted = sa.select(stratum, sa.func.count()).select_from(records).where(*where).group_by(stratum)
        sizes = {str(s): int(n) for s, n in (await conn.execute(counted)).all()}
        counts = allocate(sizes, design.n, design.allocation)
        chosen = picks(design.seed, counts, sizes)
        found = await _picked_rows(conn, stratum.element, where, chosen, sizes)
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


def frame_order(stratum: Any, dialect: str, *, exact: bool) -> list[Any]:
    """The frame's order: by stratum (code points), then within it by `frame_key`; `exact` adds the natural key
    (department, number, item, holder's ID) so that records sharing a frame_key are ordered too. Text compares as
    code points on both databases (SQLite BINARY; PostgreSQL COLLATE "C"), so strata come in Python's `sorted`
    order."""
    c = records.c
    texts = [stratum]
    if exact:
        texts += [c.department, c.number, sub_key(), sa.func.coalesce(c.holder_id_number, "")]
    if dialect == "postgresql":  # SQLite compares text as code points (BINARY) already
        texts = [sa.collate(t, "C") for t in texts]
    if isinstance(stratum, sa.sql.elements.BindParameter):  # one stratum (a simple random sample): no sort on it
        return [c.frame_key, *texts[1:]]
    return [texts[0], c.frame_key, *texts[1:]]


async def _picked_rows(
    conn: AsyncConnection, stratum: Any, where: list[Any], chosen: list[tuple[str, int]], sizes: dict[str, int]
) -> dict[tuple[str, int], Any]:
    """The uploaded row at each picked (stratum, position in its frame).

    The whole population is numbered once in `frame_order` (strata one after another, in sorted order), so the
    pick at position p of stratum s is the row numbered offset(s) + p, offset(s) being the sizes of the strata
    before s: one integer to join the picks on (a temporary table, gone with the transaction), and one sort by
    (stratum, integer) in the database — the draw's cost. Text keys are not sorted on: a pick whose frame_key
    equals a neighbour's (64-bit keys: practically never) makes the draw number the frame again by the exact
    order. The neighbours (positions +-1) are read for that check, their record rows not."""
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
        if dialect == "postgresql":  # one array, not an executemany; analyzed, or it looks tiny to the planner
            await conn.execute(
                sa.text("INSERT INTO campaign_picks (pos) SELECT unnest(CAST(:p AS BIGINT[]))"),
                {"p": sorted(wanted | near)},
            )
            await conn.execute(sa.text("ANALYZE campaign_picks"))
        else:
            await conn.execute(sa.insert(temp), [{"pos": p} for p in sorted(wanted | near)])
        for exact in (False, True):
            position = (sa.func.row_number().over(order_by=frame_order(stratum, dialect, exact=exact)) - 1).label("pos")
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
        if dialect == "postgresql":  # an array: probes of the primary key (a joined temporary table was hashed)
            picked = picked.where(c.id == sa.any_(sa.bindparam("ids", [at[p] for p in wanted], ARRAY(sa.BigInteger))))
        else:
            await conn.execute(sa.insert(ids), [{"id": at[p]} for p in wanted])
            picked = picked.where(c.id.in_(sa.select(ids.c.id)))
        rows = {int(r.id): r for r in (await conn.execute(picked)).all()}
    finally:
        await conn.rollback()  # the temporary tables go with the transaction
    return {(name, pos): rows[at[offsets[name] + pos]] for name, pos in chosen}


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
