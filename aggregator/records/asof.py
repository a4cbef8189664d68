"""What the records database knew at a past moment: the uploads in force then, and each live source's last answer.

    upload = await upload_in_force(engine, "mem", before, number="T1101...", id_number=None)   # None: no upload yet
    kept = await live_answer_then(engine, "mem_api", query, before)                          # None: nothing kept
    oldest = await oldest_data(engine)                                                       # None: no data at all

`before` is exclusive (the first moment after the day asked about). Reads only: the live lookup path (the
current rows, `records.is_current`, and `LiveHistory.last`) is not touched.

- An upload is in force for a department from its upload time on; per certificate (`Certificate.key`: number
  and, where one number covers several cards, the operation item or category) the row that counts is the one
  of the newest quarter among the batches uploaded by then (of one quarter, the latest upload), as
  `records.is_current` decides it today. A row is as of its batch's quarter, or of the quarter of the upload
  by then that re-affirmed its batch (the same file for a newer quarter), by the rule today's lookups follow
  (`reads.reaffirmed_columns`).
- A live source's answer then: the newest row of `live_answers` first seen by then, for the very same query,
  or failing that the newest one that found the number (as `LiveHistory.last` chooses today).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.models import CERTIFICATE_FIELDS, Certificate, Department, Outcome, Query, SourceResult
from aggregator.numbers import normalise
from aggregator.records.live import query_digest
from aggregator.records.reads import LIVE, _certificate, as_utc, reaffirmed_columns, row_as_of
from aggregator.records.report import quarter_as_of
from aggregator.records.schema import batches, live_answers, records


@dataclass(frozen=True)
class UploadThen:
    """A department's uploads as they stood at a past moment, for one lookup."""

    batch_id: int  # the batch in force then: the newest quarter uploaded by then (its latest upload)
    quarter: str
    uploaded_at: datetime
    data_as_of: datetime  # `quarter_as_of` of the newest batch the certificates came from (of that batch if none)
    certificates: list[Certificate] = field(default_factory=list)


@dataclass(frozen=True)
class LiveThen:
    """A live source's last answer kept from on or before a past moment."""

    result: SourceResult
    first_seen: datetime  # it first gave this answer
    last_seen: datetime  # it last confirmed it (possibly after the moment asked about)


_COLUMNS = [records.c[name] for name in CERTIFICATE_FIELDS] + [
    records.c.batch_id,
    batches.c.uploaded_at,
    batches.c.quarter,
]


async def upload_in_force(
    engine: AsyncEngine,
    department: Department | str,
    before: datetime,
    *,
    number: str,
    id_number: str | None = None,
) -> UploadThen | None:
    """The department's certificates for `number` (and, for an ID number, the holder's others) as its uploads
    stood just before `before`; None when it had uploaded nothing by then."""
    department = Department(department)
    uploaded = sa.and_(
        batches.c.department == department.value,
        batches.c.status.in_(LIVE),
        batches.c.uploaded_at < before,
    )
    in_force = (
        sa.select(batches.c.id, batches.c.quarter, batches.c.uploaded_at)
        .where(uploaded)
        .order_by(batches.c.quarter.desc(), batches.c.id.desc())
        .limit(1)
    )
    wanted = records.c.number == normalise(number)
    if id_number:
        wanted = sa.or_(wanted, records.c.holder_id_number == normalise(id_number))
    rows_query = (
        sa.select(*_COLUMNS, *reaffirmed_columns(batches, lambda b: b.c.uploaded_at < before))
        .select_from(records.join(batches, batches.c.id == records.c.batch_id))
        .where(records.c.department == department.value, uploaded, wanted)
    )
    async with engine.connect() as conn:
        head = (await conn.execute(in_force)).first()
        if head is None:
            return None
        rows = (await conn.execute(rows_query)).all()
    newest: dict[tuple[str, str, str], Any] = {}
    for row in rows:  # per certificate, the row of the newest quarter (of one quarter, the latest upload)
        cert = _certificate(row)
        rank = (row.quarter, row.batch_id)
        known = newest.get(cert.key())
        if known is None or rank > known[0]:
            newest[cert.key()] = (rank, cert, row)
    chosen = sorted(newest.values(), key=lambda v: (v[1].number, v[1].category or "", v[1].operation_item or ""))
    as_of = [row_as_of(row)[1] for _, _, row in chosen]  # a re-affirmed batch's rows: as of the re-affirming upload
    return UploadThen(
        batch_id=head.id,
        quarter=head.quarter,
        uploaded_at=as_utc(head.uploaded_at),
        data_as_of=max(as_of) if as_of else quarter_as_of(head.quarter, as_utc(head.uploaded_at)),
        certificates=[cert for _, cert, _ in chosen],
    )


async def live_answer_then(engine: AsyncEngine, source_id: str, query: Query, before: datetime) -> LiveThen | None:
    """The last definitive answer `source_id` gave to `query` first seen before `before` (else the newest one
    then that found the number, whatever name it was asked with); None when nothing was kept from then."""
    columns = (live_answers.c.result, live_answers.c.first_seen, live_answers.c.last_seen)
    same_query = (
        sa.select(*columns)
        .where(
            live_answers.c.source == source_id,
            live_answers.c.query_digest == query_digest(source_id, query),
            live_answers.c.first_seen < before,
        )
        .order_by(live_answers.c.first_seen.desc(), live_answers.c.id.desc())
        .limit(1)
    )
    found_number = (
        sa.select(*columns)
        .where(
            live_answers.c.number == query.number,
            live_answers.c.source == source_id,
            live_answers.c.outcome == Outcome.FOUND.value,
            live_answers.c.first_seen < before,
        )
        .order_by(live_answers.c.first_seen.desc(), live_answers.c.id.desc())
        .limit(1)
    )
    async with engine.connect() as conn:
        row = (await conn.execute(same_query)).first()
        if row is None:
            row = (await conn.execute(found_number)).first()
    if row is None:
        return None
    return LiveThen(
        result=SourceResult.model_validate_json(row.result),
        first_seen=as_utc(row.first_seen),
        last_seen=as_utc(row.last_seen),
    )


async def oldest_data(engine: AsyncEngine) -> datetime | None:
    """The moment certq's oldest data arrived: its first imported upload or first kept live answer."""
    async with engine.connect() as conn:
        first_upload = (
            await conn.execute(sa.select(sa.func.min(batches.c.uploaded_at)).where(batches.c.status.in_(LIVE)))
        ).scalar()
        first_answer = (await conn.execute(sa.select(sa.func.min(live_answers.c.first_seen)))).scalar()
    known = [as_utc(t) for t in (first_upload, first_answer) if t is not None]
    return min(known) if known else None
