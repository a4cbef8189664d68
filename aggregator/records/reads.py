"""What the records store answers: a department's current certificates for a lookup, and the history of uploads.

`RecordReads` is the read half of `RecordStore` (which it is mixed into); it needs only the store's `engine`.
"""

from __future__ import annotations

import json
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
    data_as_of: datetime | None = None
    quarter: str | None = None  # that batch's quarter


def as_utc(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --- Lookups -------------------------------------------------------------------------------------

# A certificate's fields are the records table's columns of the same names (see `models.Certificate`).
_FIND_COLUMNS = [records.c[name] for name in CERTIFICATE_FIELDS] + [batches.c.uploaded_at, batches.c.quarter]


def _lookup(condition: sa.ColumnElement[bool]) -> sa.Select[Any]:
    return (
        sa.select(*_FIND_COLUMNS)
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
        is `id_number` (both normalised here). Only rows of the newest quarter that holds each certificate."""
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
        newest = max(rows, key=lambda r: quarter_as_of(r.quarter, as_utc(r.uploaded_at)))
        return RecordsHit(
            certificates=[_certificate(r) for r in rows],
            data_as_of=quarter_as_of(newest.quarter, as_utc(newest.uploaded_at)),
            quarter=newest.quarter,
        )

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
