"""What the records store answers: a department's current certificates for a lookup, and the history of uploads.

`RecordReads` is the read half of `RecordStore` (which it is mixed into); it needs only the store's `engine`.

A row is as of its batch's quarter, unless the department uploaded the same file again for a newer quarter
(a batch that re-affirms it, `batches.reaffirms`): then as of that upload. `reaffirmed_columns` says which upload
that is, for today's lookups here and for the as-of answers (`records.asof`) alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.models import CERTIFICATE_FIELDS, Certificate, Department
from aggregator.numbers import normalise
from aggregator.records.report import BatchReport, BatchStatus, BatchSummary, quarter_as_of
from aggregator.records.schema import batches, records

#: The statuses of the batches whose rows count (`BatchStatus.IMPORTED`, `BatchStatus.PARTIAL`).
LIVE = ("imported", "partial")


class RecordsHit(BaseModel):
    """What the uploaded records of one department say about one lookup."""

    certificates: list[Certificate] = Field(default_factory=list)  # current rows only
    # what the newest batch the certificates came from is as of: the earlier of its quarter's end and its upload
    # (of a batch re-affirmed by the same file for a newer quarter: that upload's, see `reaffirmed_columns`)
    data_as_of: datetime | None = None
    quarter: str | None = None  # that batch's quarter (or the re-affirming upload's)


def as_utc(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --- Re-affirmed batches ------------------------------------------------------------------------

Narrowing = Callable[[sa.FromClause], sa.ColumnElement[bool]]
# The live statuses written into the SQL of the lookups (no IN list to expand at every execution).
_LIVE_SQL = [sa.literal_column(f"'{status}'") for status in LIVE]


def _reaffirming(batch: sa.FromClause, column: str, narrow: Narrowing | None) -> sa.ScalarSelect[Any]:
    """`column` of the upload that vouches for the rows of `batch` (see `reaffirmed_columns`), NULL if none."""
    by, later = batches.alias("reaffirming"), batches.alias("later_upload")

    def extra(b: sa.FromClause) -> list[sa.ColumnElement[bool]]:
        return [] if narrow is None else [narrow(b)]

    superseded = sa.exists().where(
        later.c.department == by.c.department,
        later.c.quarter == by.c.quarter,
        later.c.id > by.c.id,
        later.c.status.in_(_LIVE_SQL),
        *extra(later),
    )
    return (
        sa.select(by.c[column])
        .where(
            by.c.department == batch.c.department,
            by.c.quarter > batch.c.quarter,  # `ingest._reaffirm`: only ever for a newer quarter
            by.c.reaffirms == batch.c.id,
            by.c.status.in_(_LIVE_SQL),
            *extra(by),
            ~superseded,
        )
        .order_by(by.c.quarter.desc(), by.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def reaffirmed_columns(batch: sa.FromClause = batches, narrow: Narrowing | None = None) -> list[sa.Label[Any]]:
    """The quarter and upload time (`reaffirmed_quarter`, `reaffirmed_at`; NULL when none) of the upload that
    vouches for the rows of `batch` (a `batches` table of the enclosing query) for a newer quarter: of the live
    batches that re-affirm it (the same file uploaded for a newer quarter, `batches.reaffirms`), the one of the
    newest quarter, unless a later live upload of that quarter superseded it (of one quarter, the latest upload
    counts). `narrow(b)` limits the batches considered, e.g. to those uploaded before a past moment.

    Two correlated subqueries, each an index range (`ix_batches_department_quarter`: the department's batches of
    quarters after `batch`'s, almost always none) on SQLite and PostgreSQL alike; one of them in an outer join
    instead, PostgreSQL hashes the join over a scan of all of `batches`."""
    return [
        _reaffirming(batch, "quarter", narrow).label("reaffirmed_quarter"),
        _reaffirming(batch, "uploaded_at", narrow).label("reaffirmed_at"),
    ]


def row_as_of(row: Any) -> tuple[str, datetime]:
    """A row's quarter and what its data is as of (`quarter_as_of`): its batch's, or, when the same file was
    uploaded again for a newer quarter, that upload's (the row carries `reaffirmed_columns`)."""
    if row.reaffirmed_quarter is not None:
        return row.reaffirmed_quarter, quarter_as_of(row.reaffirmed_quarter, as_utc(row.reaffirmed_at))
    return row.quarter, quarter_as_of(row.quarter, as_utc(row.uploaded_at))


# --- Lookups -------------------------------------------------------------------------------------

# A certificate's fields are the records table's columns of the same names (see `models.Certificate`).
_FIND_COLUMNS = [records.c[name] for name in CERTIFICATE_FIELDS] + [batches.c.uploaded_at, batches.c.quarter]


def _lookup(condition: sa.ColumnElement[bool]) -> sa.Select[Any]:
    return (
        sa.select(*_FIND_COLUMNS, *reaffirmed_columns())
        .select_from(records.join(batches, batches.c.id == records.c.batch_id))
        .where(records.c.department == sa.bindparam("department"), records.c.is_current, condition)
    )


_FIND_BY_NUMBER = _lookup(records.c.number == sa.bindparam("number"))
_FIND_BY_ID = _lookup(records.c.holder_id_number == sa.bindparam("id_number"))
# Two indexed lookups joined by UNION rather than one OR, so that each uses its own partial index.
_FIND_BY_EITHER = sa.union(_FIND_BY_NUMBER, _FIND_BY_ID)


def _certificate(row: Any) -> Certificate:
    data = {name: getattr(row, name) for name in CERTIFICATE_FIELDS}
    data["items"] = json.loads(data["items"]) if data["items"] else []
    return Certificate.model_validate(data)


# --- Batches -------------------------------------------------------------------------------------

_SUMMARY_COLUMNS = [c for c in batches.c if c.name != "report"]


def _summary(row: Any) -> BatchSummary:
    return BatchSummary(
        id=row.id,
        department=Department(row.department),
        quarter=row.quarter,
        file_name=row.file_name,
        sha256=row.sha256,
        uploaded_at=as_utc(row.uploaded_at),
        uploaded_by=row.uploaded_by,
        rows_total=row.rows_total,
        rows_imported=row.rows_imported,
        rows_rejected=row.rows_rejected,
        status=BatchStatus(row.status),
    )


class RecordReads:
    """Lookups and the history of uploads, read through `engine`."""

    engine: AsyncEngine

    async def find(
        self, department: Department | str, *, number: str | None = None, id_number: str | None = None
    ) -> RecordsHit:
        """The current certificates of one department whose number is `number` or whose holder's ID number
        is `id_number` (both normalised here). Only rows of the newest quarter that holds each certificate.
        The hit is as of the newest of its rows (`row_as_of`: a re-affirmed batch's rows, as of the re-affirming
        upload), in the same single statement."""
        department = Department(department)
        number = normalise(number) if number else None
        id_number = normalise(id_number) if id_number else None
        if number and id_number:
            statement, params = _FIND_BY_EITHER, {"number": number, "id_number": id_number}
        elif number:
            statement, params = _FIND_BY_NUMBER, {"number": number}
        elif id_number:
            statement, params = _FIND_BY_ID, {"id_number": id_number}
        else:
            raise ValueError("find needs a number or an id_number")
        params["department"] = department.value
        async with self.engine.connect() as conn:
            await conn.execution_options(certq_single_read=True)  # (SQLite) the lookup is one statement
            rows = (await conn.execute(statement, params)).all()
        if not rows:
            return RecordsHit()
        rows.sort(key=lambda r: (r.number, r.category or "", r.operation_item or ""))
        quarter, as_of = max((row_as_of(r) for r in rows), key=lambda q: q[1])
        return RecordsHit(certificates=[_certificate(r) for r in rows], data_as_of=as_of, quarter=quarter)

    async def list_batches(self, department: Department | str | None = None, limit: int = 100) -> list[BatchSummary]:
        """Uploads, newest first (rejected ones included: they carry the report a department needs)."""
        query = sa.select(*_SUMMARY_COLUMNS).where(batches.c.status != "importing")
        if department is not None:
            query = query.where(batches.c.department == Department(department).value)
        query = query.order_by(batches.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            return [_summary(r) for r in (await conn.execute(query)).all()]

    async def get_batch(self, batch_id: int) -> BatchReport | None:
        """One upload with its full report (problems with reasons, rejected rows, warnings), or None."""
        query = sa.select(batches).where(batches.c.id == batch_id, batches.c.status != "importing")
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        report = row.report if isinstance(row.report, dict) else json.loads(row.report or "{}")
        return BatchReport.model_validate({**_summary(row).model_dump(), **report})

    async def latest_batches(self) -> dict[Department, BatchSummary]:
        """Per department, the imported batch of the newest quarter (the latest upload of that quarter)."""
        query = (
            sa.select(*_SUMMARY_COLUMNS)
            .where(batches.c.status.in_(LIVE))
            .order_by(batches.c.department, batches.c.quarter.desc(), batches.c.id.desc())
        )
        out: dict[Department, BatchSummary] = {}
        async with self.engine.connect() as conn:
            for row in (await conn.execute(query)).all():
                out.setdefault(Department(row.department), _summary(row))
        return out

    async def current_rows_by_quarter(self, department: Department | str) -> dict[str, int]:
        """How many current rows (the ones lookups see) the department has, per quarter, oldest first: what a
        newer quarter's upload would supersede (read-only; for the department page's preview)."""
        query = (
            sa.select(batches.c.quarter, sa.func.count())
            .select_from(records.join(batches, records.c.batch_id == batches.c.id))
            .where(records.c.department == Department(department).value, records.c.is_current)
            .group_by(batches.c.quarter)
            .order_by(batches.c.quarter)
        )
        async with self.engine.connect() as conn:
            return {str(q): int(n) for q, n in (await conn.execute(query)).all()}

    async def generation(self, department: Department | str) -> int:
        """A number that changes whenever an import for the department succeeds (for cache invalidation):
        the id of its newest imported batch, 0 before the first."""
        query = sa.select(sa.func.max(batches.c.id)).where(
            batches.c.department == Department(department).value, batches.c.status.in_(LIVE)
        )
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar() or 0)
