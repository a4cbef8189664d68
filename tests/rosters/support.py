"""Builders shared by the roster tests: members, a finished run's results as the roster run writes them, events
as monitoring writes them (written straight into the tables: those writers are tested with the job engine)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from aggregator.jobs.store import JobStore
from aggregator.records.database import write_transaction
from aggregator.records.schema import roster_events, roster_members, roster_results
from aggregator.rosters.parse import MemberIn
from tests.records_support import ID_LI, ID_ZHANG

MEM = "T" + ID_ZHANG
MOHURD = "京A012024000123"


def members() -> list[MemberIn]:
    return [
        MemberIn(2, "E001", MEM, "张小三", ID_ZHANG, "电工一班"),
        MemberIn(3, "E002", MOHURD, "李四", ID_LI, "钢筋班"),
        MemberIn(4, "E003", "京A012024000124", "王五", None, "=cmd|' /C calc'!A0"),  # a team that is a formula
    ]


def two_cert_result() -> dict[str, Any]:
    return {
        "verdict": "valid",
        "verdict_reason": "有效证书 (a valid certificate)",
        "name_check": "match",
        "name_matches": True,
        "complete": True,
        "days_to_expiry": 812,
        "certificates": [
            {"department": "mem", "number": MEM, "status": "valid", "valid_until": "2029-01-02", "kind": None},
            {"department": "samr", "number": ID_ZHANG, "status": "expired", "valid_until": "2024-05-06", "kind": None},
        ],
        "error": None,
    }


async def finished_run(engine: Any, roster_id: str, organisation: str, results: dict[str, dict[str, Any]]) -> str:
    """A roster_verify job with one result per member ref given (as the lead's run writes them)."""
    job = await JobStore(engine).create("roster_verify", organisation=organisation, created_by="k1", subject=roster_id,
                                        total=len(results))
    now = datetime.now(UTC)
    async with write_transaction(engine) as conn:
        ids = dict((await conn.execute(
            sa.select(roster_members.c.ref, roster_members.c.id).where(roster_members.c.roster_id == roster_id))).all())
        for ref, result in results.items():
            await conn.execute(sa.insert(roster_results).values(
                job_id=job.id, member_id=ids[ref], verdict=result.get("verdict"),
                outcome="error" if result.get("error") else "definitive", result=result, checked_at=now))
    return job.id


async def add_event(engine: Any, roster_id: str, organisation: str, ref: str, type: str, **kw: Any) -> None:
    async with write_transaction(engine) as conn:
        await conn.execute(sa.insert(roster_events).values(
            roster_id=roster_id, organisation=organisation, member_ref=ref, type=type, number=kw.get("number"),
            department=kw.get("department"), old=kw.get("old"), new=kw.get("new"), detail=kw.get("detail", {}),
            at=datetime.now(UTC)))
