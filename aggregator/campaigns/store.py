"""Campaigns in the records database: created (drawn) once, their sample, and each item's check result.

    store = CampaignStore(engine)
    campaign = await store.create("2026Q4 吉林建筑电工抽查", population, design,
                                  organisation="吉林省住建厅 监管处", created_by=key_id, created_role="regulator")
    await store.pending(campaign.id, limit=50)                # items not checked yet, in sample order
    await store.save(campaign.id, [(seq, check_result), ...])  # each item once: a second result is ignored
    items = await store.items(campaign.id)

A result is written only where the item has none (`checked_at IS NULL`): a run taken over after a crash, or two
workers racing on one campaign, never count an item twice.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.campaigns.checks import CheckResult
from aggregator.campaigns.filters import Design, Population
from aggregator.campaigns.sampling import Stratum, draw
from aggregator.records.database import write_transaction
from aggregator.records.reads import as_utc
from aggregator.records.schema import campaign_items, campaigns

CHUNK = 1000


@dataclass(frozen=True)
class Campaign:
    id: str
    name: str
    organisation: str
    created_by: str
    created_role: str
    created_at: datetime
    population: Population
    design: Design
    population_count: int
    strata: list[Stratum]
    frame_digest: str
    job_id: str | None

    @property
    def seed(self) -> int:
        return self.design.seed

    @property
    def sample_size(self) -> int:
        return sum(s.sample for s in self.strata)

    @classmethod
    def of(cls, row: Any) -> Campaign:
        m = row._mapping
        return cls(
            id=m["id"],
            name=m["name"],
            organisation=m["organisation"],
            created_by=m["created_by"],
            created_role=m["created_role"],
            created_at=as_utc(m["created_at"]),
            population=Population.model_validate(m["filters"]),
            design=Design.model_validate(m["design"]),
            population_count=m["population"],
            strata=[Stratum(s["stratum"], s["population"], s["sample"]) for s in m["strata"]],
            frame_digest=m["frame_digest"],
            job_id=m["job_id"],
        )

    def summary(self) -> dict[str, Any]:
        """What the API and the audit log say about it (filters, design and seed included)."""
        return {
            "id": self.id,
            "name": self.name,
            "organisation": self.organisation or "命令行 cli",  # the key's label (never its id)
            "created_role": self.created_role,
            "created_at": self.created_at.isoformat(),
            "filters": self.population.model_dump(mode="json"),
            "filters_text": self.population.describe(),
            "design": self.design.model_dump(mode="json"),
            "seed": self.seed,
            "population": self.population_count,
            "sample": self.sample_size,
            "strata": [s.as_dict() for s in self.strata],
            "frame_digest": self.frame_digest,
            "job_id": self.job_id,
        }


@dataclass(frozen=True)
class Item:
    seq: int
    stratum: str
    department: str
    number: str
    holder_id_number: str | None
    upload: dict[str, Any]
    outcome: str | None
    result: dict[str, Any] | None
    checked_at: datetime | None

    @classmethod
    def of(cls, row: Any) -> Item:
        m = row._mapping
        return cls(
            seq=m["seq"],
            stratum=m["stratum"],
            department=m["department"],
            number=m["number"],
            holder_id_number=m["holder_id_number"],
            upload=dict(m["upload"]),
            outcome=m["outcome"],
            result=m["result"],
            checked_at=as_utc(m["checked_at"]) if m["checked_at"] else None,
        )


class CampaignStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self,
        name: str,
        population: Population,
        design: Design,
        *,
        organisation: str,
        created_by: str,
        created_role: str,
    ) -> Campaign:
        """Draw the sample and keep it with the campaign (one transaction: all of it or nothing)."""
        drawn = await draw(self.engine, population, design)
        campaign_id = secrets.token_hex(12)
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                sa.insert(campaigns).values(
                    id=campaign_id,
                    name=name,
                    organisation=organisation,
                    created_by=created_by,
                    created_role=created_role,
                    created_at=datetime.now(UTC),
                    filters=population.model_dump(mode="json"),
                    design=design.model_dump(mode="json"),
                    seed=design.seed,
                    population=drawn.population,
                    strata=[s.as_dict() for s in drawn.strata],
                    frame_digest=drawn.frame_digest,
                )
            )
            rows = [
                {
                    "campaign_id": campaign_id,
                    "seq": i.seq,
                    "stratum": i.stratum,
                    "record_id": i.record_id,
                    "department": i.department,
                    "number": i.number,
                    "holder_id_number": i.holder_id_number,
                    "upload": i.upload,
                }
                for i in drawn.items
            ]
            for start in range(0, len(rows), CHUNK):
                await conn.execute(sa.insert(campaign_items), rows[start : start + CHUNK])
        campaign = await self.get(campaign_id)
        assert campaign is not None
        return campaign

    async def get(self, campaign_id: str) -> Campaign | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(campaigns).where(campaigns.c.id == campaign_id))).first()
        return Campaign.of(row) if row is not None else None

    async def list(self, *, limit: int = 100) -> list[Campaign]:
        q = sa.select(campaigns).order_by(campaigns.c.created_at.desc(), campaigns.c.id).limit(limit)
        async with self.engine.connect() as conn:
            return [Campaign.of(r) for r in (await conn.execute(q)).all()]

    async def set_job(self, campaign_id: str, job_id: str) -> None:
        async with write_transaction(self.engine) as conn:
            await conn.execute(sa.update(campaigns).where(campaigns.c.id == campaign_id).values(job_id=job_id))

    async def progress(self, campaign_id: str) -> tuple[int, int]:
        """(items, items checked)."""
        q = sa.select(sa.func.count(), sa.func.count(campaign_items.c.checked_at)).where(
            campaign_items.c.campaign_id == campaign_id
        )
        async with self.engine.connect() as conn:
            total, done = (await conn.execute(q)).one()
        return int(total), int(done)

    async def pending(self, campaign_id: str, *, limit: int) -> list[Item]:
        q = (
            sa.select(campaign_items)
            .where(campaign_items.c.campaign_id == campaign_id, campaign_items.c.checked_at.is_(None))
            .order_by(campaign_items.c.seq)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [Item.of(r) for r in (await conn.execute(q)).all()]

    async def save(self, campaign_id: str, results: list[tuple[int, CheckResult]]) -> int:
        """Store each item's result unless it has one already; returns how many were stored."""
        now = datetime.now(UTC)
        stored = 0
        async with write_transaction(self.engine) as conn:
            for seq, result in results:
                done = await conn.execute(
                    sa.update(campaign_items)
                    .where(
                        campaign_items.c.campaign_id == campaign_id,
                        campaign_items.c.seq == seq,
                        campaign_items.c.checked_at.is_(None),
                    )
                    .values(outcome=result.outcome, result=result.as_dict(), checked_at=now)
                )
                stored += done.rowcount
        return stored

    async def items(self, campaign_id: str) -> list[Item]:
        q = sa.select(campaign_items).where(campaign_items.c.campaign_id == campaign_id).order_by(campaign_items.c.seq)
        async with self.engine.connect() as conn:
            return [Item.of(r) for r in (await conn.execute(q)).all()]

    async def reset(self, campaign_id: str) -> None:
        """Forget every result, to check the same sample again (the sample itself never changes)."""
        async with write_transaction(self.engine) as conn:
            await conn.execute(
                sa.update(campaign_items)
                .where(campaign_items.c.campaign_id == campaign_id)
                .values(outcome=None, result=None, checked_at=None)
            )
