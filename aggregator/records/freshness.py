"""Upload freshness: per department, the newest quarter uploaded and when, and whether the last complete quarter
is overdue (it has not arrived `upload_overdue_days` after it ended; `config/health.toml`).

    fresh = await upload_freshness(engine, overdue_days=30)          # {Department: UploadFreshness}
    fresh[Department.MEM].overdue, fresh[Department.MEM].due_on
    memo = FreshnessMemo(engine, overdue_days=30)                     # the gateway's, for every records answer
    await memo.as_of(Department.MEM)                                  # UploadAsOf | None

A batch that re-affirms an earlier one (the same file uploaded for a newer quarter, see `ingest`) is that
quarter's upload: it counts here like any other. Quarters begin and end in China time, as uploads do.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.models import Department, UploadAsOf
from aggregator.records.reads import LIVE, as_utc
from aggregator.records.report import CHINA_TIME, quarter_bounds
from aggregator.records.schema import batches

MEMO_S = 5.0  # how long the gateway trusts a department's newest upload before reading it again


def china_today() -> date:
    return datetime.now(CHINA_TIME).date()


def quarter_of(day: date) -> str:
    return f"{day.year}Q{(day.month - 1) // 3 + 1}"


def last_complete_quarter(today: date) -> str:
    """The newest quarter that has ended by `today` (on 2026-12-02: 2026Q3)."""
    first, _ = quarter_bounds(quarter_of(today))
    return quarter_of(first - timedelta(days=1))


def next_quarter(quarter: str) -> str:
    _, last = quarter_bounds(quarter)
    return quarter_of(last + timedelta(days=1))


def due_on(quarter: str, overdue_days: int) -> date:
    """The last day on which `quarter`'s upload is on time: `overdue_days` after the quarter's last day."""
    _, last = quarter_bounds(quarter)
    return last + timedelta(days=overdue_days)


def overdue_from(newest: str, overdue_days: int) -> date:
    """From which day a department whose newest upload is `newest` is overdue: the day after the next quarter's
    upload was due."""
    return due_on(next_quarter(newest), overdue_days) + timedelta(days=1)


class UploadFreshness(BaseModel):
    """One department's uploads as the status page shows them."""

    department: Department
    quarter: str | None = None  # the newest quarter uploaded (None: nothing yet)
    uploaded_at: datetime | None = None  # when that quarter's newest batch arrived
    batch_id: int | None = None
    reaffirms: int | None = None  # that batch is the same file as this earlier batch, re-affirmed
    expected_quarter: str  # the last complete quarter
    due_on: date  # its upload was due by this day
    overdue: bool = False
    overdue_days: int = 0  # days past `due_on` (0 when not overdue)

    def as_of(self, overdue_days: int) -> UploadAsOf | None:
        if self.quarter is None or self.uploaded_at is None:
            return None
        return UploadAsOf(
            quarter=self.quarter, uploaded_at=self.uploaded_at, overdue_from=overdue_from(self.quarter, overdue_days)
        )


def freshness_of(
    department: Department,
    newest: tuple[str, datetime, int, int | None] | None,
    *,
    today: date,
    overdue_days: int,
) -> UploadFreshness:
    """`department`'s freshness given its newest upload (quarter, uploaded_at, batch id, reaffirms) on `today`."""
    expected = last_complete_quarter(today)
    due = due_on(expected, overdue_days)
    quarter, uploaded_at, batch_id, reaffirms = newest if newest is not None else (None, None, None, None)
    late = quarter is not None and quarter < expected and today > due
    return UploadFreshness(
        department=department,
        quarter=quarter,
        uploaded_at=uploaded_at,
        batch_id=batch_id,
        reaffirms=reaffirms,
        expected_quarter=expected,
        due_on=due,
        overdue=late,
        overdue_days=(today - due).days if late else 0,
    )


async def newest_uploads(
    engine: AsyncEngine, department: Department | None = None
) -> dict[Department, tuple[str, datetime, int, int | None]]:
    """Per department: (quarter, uploaded_at, batch id, reaffirms) of its imported batch of the newest quarter
    (the latest of that quarter's batches)."""
    query = sa.select(
        batches.c.department, batches.c.quarter, batches.c.uploaded_at, batches.c.id, batches.c.reaffirms
    ).where(batches.c.status.in_(LIVE))
    if department is not None:
        query = query.where(batches.c.department == department.value)
    query = query.order_by(batches.c.department, batches.c.quarter.desc(), batches.c.id.desc())
    out: dict[Department, tuple[str, datetime, int, int | None]] = {}
    async with engine.connect() as conn:
        for row in (await conn.execute(query)).all():
            dept = Department(row.department)
            if dept not in out:
                out[dept] = (row.quarter, as_utc(row.uploaded_at), int(row.id), row.reaffirms)
    return out


async def upload_freshness(
    engine: AsyncEngine, *, overdue_days: int, today: date | None = None
) -> dict[Department, UploadFreshness]:
    """Every department's freshness on `today` (default: today in China time)."""
    today = today or china_today()
    newest = await newest_uploads(engine)
    return {d: freshness_of(d, newest.get(d), today=today, overdue_days=overdue_days) for d in Department}


class FreshnessMemo:
    """The gateway's view of each department's newest upload, read at most every `memo_s` seconds per
    department (one indexed query), for the `upload` of every records answer."""

    def __init__(
        self, engine: AsyncEngine, *, overdue_days: int, memo_s: float = MEMO_S, clock=time.monotonic
    ) -> None:
        self.engine = engine
        self.overdue_days = overdue_days
        self.memo_s = memo_s
        self._clock = clock
        self._memo: dict[Department, tuple[float, UploadAsOf | None]] = {}

    async def as_of(self, department: Department) -> UploadAsOf | None:
        now = self._clock()
        memo = self._memo.get(department)
        if memo is not None and now - memo[0] < self.memo_s:
            return memo[1]
        newest = (await newest_uploads(self.engine, department)).get(department)
        value = None
        if newest is not None:
            quarter, uploaded_at, _, _ = newest
            value = UploadAsOf(
                quarter=quarter, uploaded_at=uploaded_at, overdue_from=overdue_from(quarter, self.overdue_days)
            )
        self._memo[department] = (now, value)
        return value

    def forget(self, department: Department | None = None) -> None:
        if department is None:
            self._memo.clear()
        else:
            self._memo.pop(department, None)
