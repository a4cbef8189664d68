"""What a holder may see: whether number + name + ID number prove they hold a certificate, and who looked up
their certificates (PIPL art. 44-45).

    numbers = await holder_numbers(engine, number, name, id_number)      # None: the three do not match
    rows = await keyed_lookups(engine, numbers)                          # by organisations with a key
    days = await public_days(engine, numbers)                            # anonymous public lookups per day

- All three must match one certificate: an uploaded row (current or history) or a certificate in a live answer
  kept in the history, with that number, that ID number and that name (compared as `merge.normalise_name`).
  The holder's certificates are then every certificate recorded with their ID number, and the ID number itself
  (and the MEM T+ID), which is how lookups by ID number are logged. Nothing about any other holder is read.
- The audit query lives here (not in `web/audit.py`, which others extend): it reads the audit log and the
  keys' labels through plain table clauses, so it does not care which module declares those tables.
- Public lookups are not in the audit log (they are anonymous), so they are counted per number and UTC day by
  `PublicLookupCounts`: a dictionary increment on the lookup path, written in the background about once a
  second, added to what other instances wrote (`public_lookup_days`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.merge import normalise_name
from aggregator.numbers import normalise
from aggregator.records.database import dialect_insert
from aggregator.records.schema import live_answers, public_lookup_days, records
from aggregator.web.tables import write_transaction

log = logging.getLogger(__name__)

MAX_ROWS = 5000  # keyed lookups shown (newest first); the CSV carries the same
FLUSH_AFTER_S = 1.0
_CHUNK = 200

# The audit log and the keys, as far as this module reads them.
_audit = sa.table(
    "audit_log",
    sa.column("id"),
    sa.column("at", sa.DateTime(timezone=True)),
    sa.column("key_id"),
    sa.column("role"),
    sa.column("purpose"),
    sa.column("action"),
    sa.column("number"),
    sa.column("verdict"),
    sa.column("holder_id_number"),
    sa.column("id_number_given"),
)
_keys = sa.table("api_keys", sa.column("key_id"), sa.column("label"))
ANONYMOUS_KEY_ID = "-"
OTHER_NUMBER = "（未显示：查询时填写了您的身份证号 not shown: your ID number was given）"


def _as_utc(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _same_name(a: str | None, b: str | None) -> bool:
    return bool(a and b) and normalise_name(a) == normalise_name(b)  # type: ignore[arg-type]


async def holder_numbers(engine: AsyncEngine, number: str, name: str, id_number: str) -> set[str] | None:
    """The numbers under which the holder's certificates are looked up, when `number`, `name` and `id_number`
    all match one certificate; else None (the same for every kind of mismatch)."""
    number, id_number = normalise(number), normalise(id_number)
    if not number or not id_number or not name.strip():
        return None
    matched = False
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(records.c.holder_name).where(records.c.number == number, records.c.holder_id_number == id_number)
        )
        matched = any(_same_name(r.holder_name, name) for r in rows)
        numbers = {id_number, "T" + id_number, number}
        if matched:
            own = await conn.execute(sa.select(records.c.number).where(records.c.holder_id_number == id_number).distinct())
            numbers |= {r.number for r in own}
        kept = await conn.execute(
            sa.select(live_answers.c.result).where(
                live_answers.c.number.in_(sorted({number, id_number, "T" + id_number})),
                live_answers.c.outcome == "found",
            )
        )
        for (result,) in kept:
            for cert in json.loads(result).get("certificates") or []:
                if cert.get("holder_id_number") != id_number:
                    continue
                if cert.get("number") == number and _same_name(cert.get("holder_name"), name):
                    matched = True
                numbers.add(cert.get("number") or number)
    return numbers if matched else None


async def keyed_lookups(
    engine: AsyncEngine, numbers: set[str], *, id_number: str | None = None, limit: int = MAX_ROWS
) -> list[dict[str, Any]]:
    """Lookups by organisations with a key, newest first: when, organisation (the key's label), role, purpose,
    action, number, verdict. A lookup counts when it was of one of `numbers`, or when the audit log says it was
    about the holder (`holder_id_number` == `id_number`: the ID number given, or the holder's of the certificate
    found). A lookup of another number that was about the holder only because that caller *gave* the holder's
    ID number may be of someone else's certificate: its number and verdict are not shown (`OTHER_NUMBER`)."""
    about = _audit.c.number.in_(sorted(numbers))
    if id_number:
        about = sa.or_(about, _audit.c.holder_id_number == id_number)
    stmt = (
        sa.select(
            _audit.c.at, _keys.c.label, _audit.c.role, _audit.c.purpose, _audit.c.action, _audit.c.number,
            _audit.c.verdict, _audit.c.id_number_given,
        )
        .select_from(_audit.outerjoin(_keys, _keys.c.key_id == _audit.c.key_id))
        .where(about, _audit.c.key_id != ANONYMOUS_KEY_ID)
        .order_by(_audit.c.id.desc())
        .limit(limit)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    out = []
    for r in rows:
        foreign = r.number not in numbers and bool(r.id_number_given)
        out.append(
            {
                "at": _as_utc(r.at),
                "organisation": r.label or "（已删除的密钥 deleted key）",
                "role": r.role,
                "purpose": r.purpose,
                "action": r.action,
                "number": OTHER_NUMBER if foreign else r.number,
                "verdict": None if foreign else r.verdict,
            }
        )
    return out


async def public_days(engine: AsyncEngine, numbers: set[str]) -> list[dict[str, Any]]:
    """Anonymous public lookups of `numbers` per UTC day, newest day first."""
    stmt = (
        sa.select(public_lookup_days.c.day, sa.func.sum(public_lookup_days.c.count))
        .where(public_lookup_days.c.number.in_(sorted(numbers)))
        .group_by(public_lookup_days.c.day)
        .order_by(public_lookup_days.c.day.desc())
    )
    async with engine.connect() as conn:
        return [{"day": str(day), "count": int(n)} for day, n in (await conn.execute(stmt)).all()]


class PublicLookupCounts:
    """Anonymous public lookups per number and UTC day, counted in memory and added to the database in the
    background (one transaction about every `FLUSH_AFTER_S`), so the lookup never waits for it."""

    def __init__(self, engine: AsyncEngine, *, flush_after_s: float = FLUSH_AFTER_S) -> None:
        self._engine = engine
        self._pending: Counter[tuple[str, str]] = Counter()
        self._writer: asyncio.Task[None] | None = None
        self._flush_after_s = flush_after_s
        self.dropped = 0

    def count(self, number: str) -> None:
        self._pending[(number[:64], datetime.now(UTC).date().isoformat())] += 1
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_later(), name="certq-public-counts")

    async def flush(self) -> None:
        """Write what is counted now (tests; shutdown)."""
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass
        await self._write()

    async def _write_later(self) -> None:
        await asyncio.sleep(self._flush_after_s)
        await self._write()

    async def _write(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, Counter()
        rows = [{"number": n, "day": d, "count": c} for (n, d), c in sorted(batch.items())]
        stmt = dialect_insert(self._engine.dialect.name, public_lookup_days)
        stmt = stmt.on_conflict_do_update(
            index_elements=["number", "day"], set_={"count": public_lookup_days.c.count + stmt.excluded.count}
        )
        try:
            async with write_transaction(self._engine) as conn:
                for i in range(0, len(rows), _CHUNK):
                    await conn.execute(stmt, rows[i : i + _CHUNK])
        except Exception as e:  # noqa: BLE001 - the lookups were answered; only their count is missing
            self.dropped += sum(batch.values())
            log.warning("could not count %d public lookup(s): %s", sum(batch.values()), e)
