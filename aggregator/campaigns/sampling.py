"""Drawing a campaign's sample: the population, its strata, the ordered sampling frame, and the sample.

    drawn = await draw(engine, population, design)
    drawn.population, drawn.strata, drawn.frame_digest, drawn.items

The frame is every current uploaded record the filters keep, in each stratum ordered by its `frame_key` (a
63-bit BLAKE2b hash of its identity computed at import, see `aggregator.records.frame_key`), ties broken by its
stable natural key (department, number, the item that tells apart the cards of one number as in
`Certificate.key()`, then the holder's ID number), compared as code points on both databases (SQLite BINARY,
PostgreSQL COLLATE "C"; no NULLs, whose place differs). A seeded PRNG (`random.Random("<seed>:<stratum>")`)
picks n_h positions of each stratum's frame without replacement: a simple random sample of the stratum.

Two scans of the population, and only a small part of it sorted. `frame_key` is uniform, so its top bits cut each
stratum's frame into buckets of about equal size that follow one another in frame order (a bucket is a range of
keys; records sharing a key share a bucket). The first pass counts each stratum's rows per bucket (one string of
buckets per stratum, counted here), which gives the strata's sizes and puts every pick in a known bucket at a known
place; the second keeps only the rows of the buckets that hold picks (no index on frame_key: a scan) and numbers
them, each bucket in the exact frame order (frame_key, then the text keys), and returns the ids at the picked
places; the picked rows are then read by id. Nothing depends on row ids, insertion order, the database's collation,
the buckets' width or `ORDER BY random()`: the same records, filters and seed draw the same sample on SQLite and
PostgreSQL, in any process.

Allocation: proportional (largest remainder: n_h = n N_h / N rounded so that they sum to n) or equal (n / H
each, what a small stratum cannot give going to the others in stratum order). A sample larger than the
population is the whole population.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aggregator.campaigns.filters import Design, Population
from aggregator.campaigns.regions import city_sql, province_sql
from aggregator.models import CERTIFICATE_FIELDS, SUB_KEY_FIELDS
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
    whens = [(c.department == d.value, sa.func.coalesce(*(c[f] for f in sub), "")) for d, sub in SUB_KEY_FIELDS.items()]
    return sa.case(*whens, else_="")


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
    shift = bucket_shift(design)
    bucket = records.c.frame_key.op(">>")(sa.literal_column(str(shift)))
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":  # the buckets' sizes and the numbering read one snapshot
            await conn.execution_options(isolation_level="REPEATABLE READ")
        # One row per stratum with the bucket of each of its rows ("17 3 17 92 ..."), counted here: grouping by
        # stratum alone is what the database does fastest (PostgreSQL in parallel); grouping by (stratum, bucket)
        # was a sort or a hash over twice the key, 0.3-0.5 s more per 1,000,000 rows.
        packed = (
            sa.select(stratum, sa.func.aggregate_strings(sa.cast(bucket, sa.Text), " "))
            .select_from(records)
            .where(*where)
            .group_by(stratum)
        )
        buckets = {
            str(s): sorted((int(b), n) for b, n in Counter(text.split()).items())
            for s, text in (await conn.execute(packed)).all()
        }
        sizes = {name: sum(n for _, n in held) for name, held in buckets.items()}
        counts = allocate(sizes, design.n, design.allocation)
        chosen = picks(design.seed, counts, sizes)
        found = await _picked_rows(conn, stratum.element, bucket, where, _in_buckets(chosen, buckets))
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


# Buckets per pick, and a guess at the number of strata of each stratifier: the buckets' width only (any width
# draws the same sample).
BUCKETS_PER_PICK = 16
_STRATA_GUESS = {"issuer": 1024, "city": 512, "province": 32, None: 1}


def bucket_shift(design: Design) -> int:
    """How far `frame_key` is shifted right to name its bucket: about 16 buckets per pick (2**7 per issuer for 10,000
    picks, 2**12 per province, 2**17 for a simple sample). Finer buckets make more distinct buckets to count here;
    coarser ones more rows for the second pass to sort (a bucket holding a pick is numbered whole). Measured on
    1,000,000 rows, 10,000 picks: 16 per pick as fast as 32 or 64, 4 slower by province."""
    strata = _STRATA_GUESS[design.stratify_by if design.method == "stratified" else None]
    per_stratum = BUCKETS_PER_PICK * design.n / strata
    return 63 - min(max(round(math.log2(max(per_stratum, 1))), 0), 24)


def _in_buckets(
    chosen: list[tuple[str, int]], buckets: dict[str, list[tuple[int, int]]]
) -> dict[tuple[str, int], tuple[int, int]]:
    """Where each pick (stratum, position in its frame) is: (its bucket, its place among the bucket's rows).

    `frame_key` orders the frame before the text keys do and a bucket is a range of it, so a stratum's frame is its
    buckets one after another in bucket order: the pick at position p is in the bucket whose rows cover p."""
    starts: dict[str, tuple[list[int], list[int]]] = {}
    for name, held in buckets.items():  # held: (bucket, rows), in bucket order
        begin, at = [], 0
        for _, n in held:
            begin.append(at)
            at += n
        starts[name] = ([b for b, _ in held], begin)
    out = {}
    for name, pos in chosen:
        ids, begin = starts[name]
        i = bisect.bisect_right(begin, pos) - 1
        out[(name, pos)] = (ids[i], pos - begin[i])
    return out


def frame_order(dialect: str) -> list[Any]:
    """A stratum's frame in order: by `frame_key`, then the natural key (department, number, item, holder's ID) for
    records sharing a frame_key, text compared as code points on both databases (SQLite BINARY; PostgreSQL COLLATE
    "C"). The strata come one after another in Python's `sorted` order (code points too)."""
    c = records.c
    texts = [c.department, c.number, sub_key(), sa.func.coalesce(c.holder_id_number, "")]
    if dialect == "postgresql":  # SQLite compares text as code points (BINARY) already
        texts = [sa.collate(t, "C") for t in texts]
    return [c.frame_key, *texts]


async def _picked_rows(
    conn: AsyncConnection,
    stratum: Any,
    bucket: Any,
    where: list[Any],
    places: dict[tuple[str, int], tuple[int, int]],
) -> dict[tuple[str, int], Any]:
    """The uploaded row at each pick, given its (bucket, place in the bucket) from `_in_buckets`.

    Only the rows of the buckets that hold picks are numbered, each bucket on its own in the frame's exact order
    (`frame_key`, then the text keys, which only records sharing a frame_key need), and joined to the picks (a
    temporary table, gone with the transaction); a small fraction of the population is sorted. Then the picked
    rows are read by id."""
    if not places:
        return {}
    c = records.c
    dialect = conn.dialect.name
    one = isinstance(stratum, sa.sql.elements.BindParameter)  # a simple random sample: no stratum to match
    temp = sa.Table(
        "campaign_picks",
        sa.MetaData(),
        sa.Column("stratum", sa.Text(), primary_key=True),
        sa.Column("bucket", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("place", sa.BigInteger(), primary_key=True, autoincrement=False),
        prefixes=["TEMPORARY"],
    )
    await conn.run_sync(lambda sync: temp.create(sync, checkfirst=False))
    try:
        wanted = sorted({(name, b, place) for (name, _), (b, place) in places.items()})
        if dialect == "postgresql":  # arrays, not an executemany; analyzed, or it looks tiny to the planner
            await conn.execute(
                sa.text(
                    "INSERT INTO campaign_picks (stratum, bucket, place) "
                    "SELECT * FROM unnest(CAST(:s AS TEXT[]), CAST(:b AS BIGINT[]), CAST(:p AS BIGINT[]))"
                ),
                {"s": [w[0] for w in wanted], "b": [w[1] for w in wanted], "p": [w[2] for w in wanted]},
            )
            await conn.execute(sa.text("ANALYZE campaign_picks"))
        else:  # one JSON text, not an executemany (10,000 statements' parameters cost 0.1 s)
            await conn.execute(
                sa.text(
                    "INSERT INTO campaign_picks (stratum, bucket, place) SELECT json_extract(value, '$[0]'), "
                    "json_extract(value, '$[1]'), json_extract(value, '$[2]') FROM json_each(:p)"
                ),
                {"p": json.dumps(wanted, ensure_ascii=False)},
            )
        held = sa.select(temp.c.bucket).distinct() if one else sa.select(temp.c.stratum, temp.c.bucket).distinct()
        in_held = bucket.in_(held) if one else sa.tuple_(stratum, bucket).in_(held)
        group = [bucket] if one else [sa.collate(stratum, "C") if dialect == "postgresql" else stratum, bucket]
        place = sa.func.row_number().over(partition_by=group, order_by=frame_order(dialect))
        numbered = (
            sa.select(c.id, stratum.label("stratum"), bucket.label("bucket"), (place - 1).label("place"))
            .select_from(records)
            .where(*where, in_held)
            .subquery("frame")
        )
        on = [numbered.c.bucket == temp.c.bucket, numbered.c.place == temp.c.place]
        if not one:
            on.append(numbered.c.stratum == temp.c.stratum)
        hits = sa.select(temp.c.stratum, temp.c.bucket, temp.c.place, numbered.c.id).join(temp, sa.and_(*on))
        at = {(s, int(b), int(p)): int(id_) for s, b, p, id_ in (await conn.execute(hits)).all()}
        picked = sa.select(c.id, *(c[name] for name in CERTIFICATE_FIELDS), batches.c.quarter).join(
            batches, batches.c.id == records.c.batch_id
        )
        if dialect == "postgresql":  # an array: probes of the primary key (a joined temporary table was hashed)
            picked = picked.where(c.id == sa.any_(sa.bindparam("ids", sorted(set(at.values())), ARRAY(sa.BigInteger))))
        else:
            each = sa.func.json_each(sa.bindparam("ids", json.dumps(sorted(set(at.values()))))).table_valued("value")
            picked = picked.where(c.id.in_(sa.select(each.c.value)))
        rows = {int(r.id): r for r in (await conn.execute(picked)).all()}
    finally:
        await conn.rollback()  # the temporary table goes with the transaction
    return {(name, pos): rows[at[(name, b, place)]] for (name, pos), (b, place) in places.items()}


_DATES = [f for f in CERTIFICATE_FIELDS if isinstance(records.c[f].type, sa.Date)]


def _sampled(seq: int, name: str, r: Any) -> Sampled:
    """One sampled record from its row as read by `_picked_rows`: (id, *CERTIFICATE_FIELDS, quarter)."""
    upload: dict[str, Any] = dict(zip(CERTIFICATE_FIELDS, r[1:-1]))
    upload["items"] = json.loads(upload["items"]) if upload["items"] else []
    for f in _DATES:
        if upload[f] is not None:
            upload[f] = upload[f].isoformat()
    upload["quarter"] = r[-1]
    return Sampled(
        seq=seq,
        stratum=name,
        record_id=int(r[0]),
        department=upload["department"],
        number=upload["number"],
        holder_id_number=upload["holder_id_number"],
        upload=upload,
    )
