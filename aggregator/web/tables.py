"""The web layer's tables: API keys and the audit log (SQLAlchemy Core, created by migration 0002).

They live in the records database (SQLite by default, PostgreSQL with CERTQ_DATABASE_URL) so that every
gateway instance sees the same keys and writes to one log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Index, Integer, MetaData, String, Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

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

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("role", String(16), nullable=False),
    Column("purpose", String(500), nullable=True),
    Column("action", String(32), nullable=False),  # lookup | verification
    Column("number", String(64), nullable=False),  # the number as normalised (or as typed when invalid)
    Column("name_given", Boolean, nullable=False),
    Column("id_number_given", Boolean, nullable=False),
    Column("verdict", String(32), nullable=True),  # None when the lookup failed before a verdict
    Column("client_ip", String(64), nullable=True),
    Index("ix_audit_log_at", "at"),
    Index("ix_audit_log_key_id_at", "key_id", "at"),
)


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that writes: on SQLite it takes the write lock up front (BEGIN IMMEDIATE, see
    `records.store`), so two writers never deadlock upgrading a read lock."""
    async with engine.connect() as conn:
        await conn.execution_options(certq_write=True)
        async with conn.begin():
            yield conn
