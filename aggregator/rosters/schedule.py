"""When each monitored member is checked next: `roster_members.due_at` (epoch seconds; None: not monitored).

    await start_monitoring(engine, roster_id, every_h=24, now=time.time())   # spread over the period
    await stop_monitoring(engine, roster_id)
    ids = await take_due(engine, now=time.time(), limit=2000)                   # and push them a period on

Monitoring a roster spreads its members evenly over the period (`due_at = now + (id * 7919) mod period`), so a
daily cycle of a million members is a steady trickle, not a burst at midnight that no source's rate limit would
take. A tick takes the members that are due, oldest first, through the `due_at` index (a range scan, never the
whole table), and moves each one period on in the same transaction, so a member is taken once per period however
many ticks overlap.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.records.database import write_transaction
from aggregator.records.schema import roster_members, rosters

SPREAD_PRIME = 7919


async def start_monitoring(engine: AsyncEngine, roster_id: str, *, every_h: int, now: float) -> int:
    """Monitor a roster: set its period and spread its members' first checks over one period."""
    period = max(int(every_h), 1) * 3600
    async with write_transaction(engine) as conn:
        await conn.execute(
            sa.update(rosters).where(rosters.c.id == roster_id).values(monitor=True, monitor_every_h=int(every_h))
        )
        result = await conn.execute(
            sa.update(roster_members)
            .where(roster_members.c.roster_id == roster_id)
            .values(due_at=int(now) + (roster_members.c.id * SPREAD_PRIME) % period)
        )
    return result.rowcount


async def stop_monitoring(engine: AsyncEngine, roster_id: str) -> None:
    async with write_transaction(engine) as conn:
        await conn.execute(sa.update(rosters).where(rosters.c.id == roster_id).values(monitor=False))
        await conn.execute(
            sa.update(roster_members).where(roster_members.c.roster_id == roster_id).values(due_at=None)
        )


def due_query(now: float, limit: int) -> sa.Select:
    return (
        sa.select(roster_members.c.id, roster_members.c.roster_id)
        .where(roster_members.c.due_at <= int(now))
        .order_by(roster_members.c.due_at)
        .limit(limit)
    )


async def take_due(engine: AsyncEngine, *, now: float, limit: int) -> dict[str, list[int]]:
    """The members due now (at most `limit`), by roster, each moved one period on."""
    async with write_transaction(engine) as conn:
        rows = (await conn.execute(due_query(now, limit))).all()
        if not rows:
            return {}
        ids = [r.id for r in rows]
        periods = sa.select(rosters.c.monitor_every_h * 3600).where(rosters.c.id == roster_members.c.roster_id)
        await conn.execute(
            sa.update(roster_members)
            .where(roster_members.c.id.in_(ids))
            .values(due_at=int(now) + periods.scalar_subquery())
        )
    by_roster: dict[str, list[int]] = {}
    for r in rows:
        by_roster.setdefault(r.roster_id, []).append(r.id)
    return by_roster
