"""The web layer's tables: API keys, name checks, deployment secrets, secrets waiting to be shown once (SQLAlchemy
Core, migrations 0002/0003/0011).
The audit log is `aggregator.records.schema.audit_log` (written by `aggregator.audit`).

They live in the records database (SQLite by default, PostgreSQL with CERTQ_DATABASE_URL) so that every
gateway instance sees the same keys and writes to one log.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, Text
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.records.database import write_transaction

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),  # the public part of the key, shown in lists and logs
    Column("secret_sha256", String(64), nullable=False),  # sha256 of the whole key, hex
    Column("role", String(16), nullable=False),
    Column("department", String(16), nullable=True),  # department keys only
    Column("label", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# Distinct names tried per caller, certificate and day (salted digests only): the name-check budget.
name_checks = Table(
    "name_checks",
    metadata,
    Column("caller", String(80), primary_key=True),  # "key:<key_id>" or "ip:<address>"
    Column("number", String(64), primary_key=True),
    Column("day", String(10), primary_key=True),  # UTC date, YYYY-MM-DD
    Column("name_digest", String(64), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_name_checks_day", "day"),
)

# Random keys shared by every instance, made once by whichever asks first (see `deployment_secret`).
deployment_secrets = Table(
    "deployment_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(128), nullable=False),  # hex
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# A secret made by a page's form (a webhook's signing secret), kept a few minutes for the one page after the
# redirect that shows it (see `aggregator.web.onetime`): found by the digest of a random token, for one key in
# one browser; deleted when shown.
pending_secrets = Table(
    "pending_secrets",
    metadata,
    Column("token_sha256", String(64), primary_key=True),  # sha256 of the token in the redirect's URL, hex
    Column("key_id", String(32), nullable=False),  # the key that made it: only it may read it
    Column("browser_sha256", String(64), nullable=False),  # sha256 of that browser's CSRF cookie, hex
    Column("subject", String(64), nullable=False),  # what the secret is for (a webhook endpoint's id)
    Column("secret", Text(), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_pending_secrets_expires", "expires_at"),
)


async def deployment_secret(engine: AsyncEngine, name: str, *, nbytes: int = 32) -> bytes:
    """The deployment's random secret called `name`: made by the first instance that asks (an insert that
    skips an existing row, so concurrent first askers agree on one), read by every later one."""
    from secrets import token_hex

    from sqlalchemy import select

    from aggregator.records.database import dialect_insert

    row = {"name": name, "value": token_hex(nbytes), "created_at": datetime.now(UTC)}
    async with write_transaction(engine) as conn:
        await conn.execute(dialect_insert(engine.dialect.name, deployment_secrets).on_conflict_do_nothing(), [row])
        value = (await conn.execute(select(deployment_secrets.c.value).where(deployment_secrets.c.name == name))).scalar_one()
    return bytes.fromhex(value)
