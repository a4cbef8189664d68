"""Employers' rosters in certq's own tables: the rosters, their members, the results of their runs, their events.

    store = RosterStore(engine)
    roster = await store.create(organisation="某建设集团", name="2026 二标段", created_by=key_id, members=parsed.members)
    rosters = await store.list("某建设集团")
    roster = await store.get(roster_id, organisation="某建设集团")        # None: no such roster *for them*
    page = await store.members(roster_id, page=1, per_page=100)           # Page(items, total, page, per_page)
    await store.add_member(roster_id, member) / update_member(roster_id, ref, member) / remove_member(roster_id, ref)
    page = await store.results(job_id, page=1)                            # each member's result, joined
    events, next_after = await store.events(roster_id, after=0, type="status_changed", member="E001")

The organisation is the label of the API key that made the roster (keys with one label are one organisation);
every read that a caller makes names it, so another organisation's roster is simply not found. Results are
written by the roster run (`web.services.roster_runs`), events by monitoring (`web.services.monitoring`): here
they are only read.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.records.database import write_transaction
from aggregator.records.reads import as_utc
from aggregator.records.schema import jobs, roster_events, roster_members, roster_results, rosters
from aggregator.rosters.parse import MemberIn

DEFAULT_WARN_DAYS = [90, 30, 7]
INSERT_CHUNK = 2000  # members per INSERT statement (asyncpg sends each chunk as one batch)
MAX_PER_PAGE = 1000


class RosterError(Exception):
    """Base of the roster store's typed errors."""


class MemberExists(RosterError):
    """A member with this reference is already on the roster."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"工号 {ref} 已在名单中 (reference {ref} is already on the roster)")


@dataclass(frozen=True)
class Roster:
    id: str
    organisation: str
    name: str
    created_by: str
    created_at: datetime
    monitor: bool
    monitor_every_h: int
    expiry_warn_days: list[int]
    inconclusive_after_days: int
    members: int  # how many members it has now

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "organisation": self.organisation,
            "created_at": self.created_at.isoformat(),
            "members": self.members,
            "monitor": self.monitor,
            "monitor_every_h": self.monitor_every_h,
            "expiry_warn_days": list(self.expiry_warn_days),
            "inconclusive_after_days": self.inconclusive_after_days,
        }


@dataclass(frozen=True)
class Member:
    id: int
    ref: str
    number: str
    name: str
    id_number: str | None
    team: str | None
    added_at: datetime
    monitored: bool  # a monitoring check is scheduled (due_at set)

    @classmethod
    def of(cls, m: Any) -> Member:
        return cls(m["id"], m["ref"], m["number"], m["name"], m["id_number"], m["team"], as_utc(m["added_at"]),
                   m["due_at"] is not None)

    def as_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "number": self.number, "name": self.name, "id_number": self.id_number,
                "team": self.team, "added_at": self.added_at.isoformat(), "monitored": self.monitored}


@dataclass(frozen=True)
class ResultRow:
    """One member's result in one run (the member as it is now; `result` as the run wrote it)."""

    member: Member
    verdict: str | None
    outcome: str
    result: dict[str, Any]
    checked_at: datetime


@dataclass(frozen=True)
class Event:
    id: int
    roster_id: str | None
    member_ref: str | None
    type: str
    number: str | None
    department: str | None
    old: str | None
    new: str | None
    detail: dict[str, Any]
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "roster_id": self.roster_id, "member_ref": self.member_ref, "type": self.type,
                "number": self.number, "department": self.department, "old": self.old, "new": self.new,
                "detail": self.detail, "at": self.at.isoformat()}


@dataclass(frozen=True)
class Page:
    items: list[Any]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def _counts() -> Any:
    return (
        sa.select(roster_members.c.roster_id, sa.func.count().label("n"))
        .group_by(roster_members.c.roster_id)
        .subquery()
    )


def _roster(row: Any) -> Roster:
    m = row._mapping
    return Roster(
        id=m["id"],
        organisation=m["organisation"],
        name=m["name"],
        created_by=m["created_by"],
        created_at=as_utc(m["created_at"]),
        monitor=bool(m["monitor"]),
        monitor_every_h=m["monitor_every_h"],
        expiry_warn_days=list(m["expiry_warn_days"] or []),
        inconclusive_after_days=m["inconclusive_after_days"],
        members=int(m["n"] or 0),
    )


def _member_values(member: MemberIn) -> dict[str, Any]:
    return {"ref": member.ref, "number": member.number, "name": member.name, "id_number": member.id_number,
            "team": member.team}


def _page(page: int, per_page: int) -> tuple[int, int]:
    page = max(1, page)
    per_page = min(max(1, per_page), MAX_PER_PAGE)
    return page, per_page


class RosterStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # --- rosters ---------------------------------------------------------------------------------------------

    async def create(
        self,
        *,
        organisation: str,
        name: str,
        created_by: str,
        members: Sequence[MemberIn],
        monitor: bool = False,
        expiry_warn_days: Sequence[int] = DEFAULT_WARN_DAYS,
    ) -> Roster:
        """A roster and all its members, in one transaction (all or nothing)."""
        roster_id = secrets.token_hex(12)
        now = datetime.now(UTC)
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                sa.insert(rosters).values(
                    id=roster_id,
                    organisation=organisation,
                    name=name,
                    created_by=created_by,
                    created_at=now,
                    monitor=monitor,
                    expiry_warn_days=list(expiry_warn_days),
                )
            )
            due = int(now.timestamp()) if monitor else None
            for start in range(0, len(members), INSERT_CHUNK):
                chunk = members[start:start + INSERT_CHUNK]
                await conn.execute(
                    sa.insert(roster_members),
                    [{**_member_values(m), "roster_id": roster_id, "added_at": now, "due_at": due} for m in chunk],
                )
        roster = await self.get(roster_id)
        assert roster is not None
        return roster

    async def list(self, organisation: str, *, limit: int = 200) -> list[Roster]:
        counts = _counts()
        q = (
            sa.select(rosters, counts.c.n)
            .outerjoin(counts, counts.c.roster_id == rosters.c.id)
            .where(rosters.c.organisation == organisation)
            .order_by(rosters.c.created_at.desc(), rosters.c.id)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [_roster(r) for r in (await conn.execute(q)).all()]

    async def get(self, roster_id: str, *, organisation: str | None = None) -> Roster | None:
        """The roster, or None when there is none with this id (for `organisation`, when given)."""
        n = (
            sa.select(sa.func.count())
            .select_from(roster_members)
            .where(roster_members.c.roster_id == roster_id)
            .scalar_subquery()
            .label("n")
        )
        q = sa.select(rosters, n).where(rosters.c.id == roster_id)
        if organisation is not None:
            q = q.where(rosters.c.organisation == organisation)
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        return _roster(row) if row is not None else None

    # --- members ---------------------------------------------------------------------------------------------

    async def members(self, roster_id: str, *, page: int = 1, per_page: int = 100) -> Page:
        page, per_page = _page(page, per_page)
        where = roster_members.c.roster_id == roster_id
        async with self.engine.connect() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(roster_members).where(where))).scalar()
            rows = (
                await conn.execute(
                    sa.select(roster_members).where(where).order_by(roster_members.c.id)
                    .offset((page - 1) * per_page).limit(per_page)
                )
            ).all()
        return Page([Member.of(r._mapping) for r in rows], int(total or 0), page, per_page)

    async def member(self, roster_id: str, ref: str) -> Member | None:
        q = sa.select(roster_members).where(roster_members.c.roster_id == roster_id, roster_members.c.ref == ref)
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        return Member.of(row._mapping) if row is not None else None

    async def add_member(self, roster_id: str, member: MemberIn) -> Member:
        """Add one member; `MemberExists` when the reference is taken."""
        now = datetime.now(UTC)
        async with write_transaction(self.engine) as conn:
            monitor = (await conn.execute(sa.select(rosters.c.monitor).where(rosters.c.id == roster_id))).scalar()
            taken = (
                await conn.execute(
                    sa.select(roster_members.c.id).where(
                        roster_members.c.roster_id == roster_id, roster_members.c.ref == member.ref
                    )
                )
            ).first()
            if taken is not None:
                raise MemberExists(member.ref)
            await conn.execute(
                sa.insert(roster_members).values(
                    **_member_values(member), roster_id=roster_id, added_at=now,
                    due_at=int(now.timestamp()) if monitor else None,
                )
            )
        found = await self.member(roster_id, member.ref)
        assert found is not None
        return found

    async def update_member(self, roster_id: str, ref: str, member: MemberIn) -> Member | None:
        """Replace a member's number, name, ID number and team (its reference stays); None when there is no such
        member. A changed number or name is a new baseline for monitoring (its last state is forgotten)."""
        where = (roster_members.c.roster_id == roster_id, roster_members.c.ref == ref)
        async with write_transaction(self.engine) as conn:
            row = (await conn.execute(sa.select(roster_members).where(*where))).first()
            if row is None:
                return None
            values: dict[str, Any] = {"number": member.number, "name": member.name, "id_number": member.id_number,
                                      "team": member.team}
            if (row.number, row.name) != (member.number, member.name):
                values.update(state=None, inconclusive_since=None)
            await conn.execute(sa.update(roster_members).where(*where).values(**values))
        return await self.member(roster_id, ref)

    async def remove_member(self, roster_id: str, ref: str) -> bool:
        async with write_transaction(self.engine) as conn:
            result = await conn.execute(
                sa.delete(roster_members).where(roster_members.c.roster_id == roster_id, roster_members.c.ref == ref)
            )
        return bool(result.rowcount)

    # --- runs and their results -----------------------------------------------------------------------------

    async def latest_run(self, roster_id: str) -> str | None:
        """The id of the roster's newest verification job (any status), or None."""
        q = (
            sa.select(jobs.c.id)
            .where(jobs.c.subject == roster_id, jobs.c.kind == "roster_verify")
            .order_by(jobs.c.created_at.desc(), jobs.c.id)
            .limit(1)
        )
        async with self.engine.connect() as conn:
            return (await conn.execute(q)).scalar()

    async def results(self, job_id: str, *, page: int = 1, per_page: int = 100) -> Page:
        """One run's results, in the roster's order, each with its member (members removed since are left out)."""
        page, per_page = _page(page, per_page)
        joined = roster_results.join(roster_members, roster_members.c.id == roster_results.c.member_id)
        where = roster_results.c.job_id == job_id
        q = (
            sa.select(
                roster_members,
                roster_results.c.verdict,
                roster_results.c.outcome,
                roster_results.c.result,
                roster_results.c.checked_at,
            )
            .select_from(joined)
            .where(where)
            .order_by(roster_members.c.id)
            .offset((page - 1) * per_page)
            .limit(per_page)
        )
        async with self.engine.connect() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(joined).where(where))).scalar()
            rows = (await conn.execute(q)).all()
        items = [
            ResultRow(Member.of(r._mapping), r.verdict, r.outcome, dict(r.result or {}), as_utc(r.checked_at))
            for r in rows
        ]
        return Page(items, int(total or 0), page, per_page)

    # --- events (written by monitoring; read here) ------------------------------------------------------------

    async def events(
        self,
        roster_id: str,
        *,
        after: int = 0,
        type: str | None = None,
        member: str | None = None,
        limit: int = 100,
    ) -> tuple[list[Event], int | None]:
        """Events after the cursor `after` (an event id), oldest first, and the cursor of the next page (None when
        this page is the last)."""
        limit = min(max(1, limit), MAX_PER_PAGE)
        q = sa.select(roster_events).where(roster_events.c.roster_id == roster_id, roster_events.c.id > after)
        if type is not None:
            q = q.where(roster_events.c.type == type)
        if member is not None:
            q = q.where(roster_events.c.member_ref == member)
        q = q.order_by(roster_events.c.id).limit(limit + 1)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        events = [
            Event(r.id, r.roster_id, r.member_ref, r.type, r.number, r.department, r.old, r.new, dict(r.detail or {}),
                  as_utc(r.at))
            for r in rows[:limit]
        ]
        more = len(rows) > limit
        return events, (events[-1].id if more and events else None)


def _register_errors() -> None:
    from aggregator.errors import register

    register(MemberExists, 409, 65, "member-exists", "工号 {exc.ref} 已在名单中", "reference {exc.ref} is already on the roster")


_register_errors()
