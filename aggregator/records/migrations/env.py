"""Alembic environment for certq: works on SQLite (aiosqlite) and PostgreSQL (asyncpg).

`RecordStore.open` passes an open synchronous connection (from `AsyncConnection.run_sync`) in
`config.attributes["connection"]`, already inside a transaction that holds the migration lock; the
Alembic command line gets none, and this file then opens the database named by the environment
(CERTQ_DATABASE_URL, else the SQLite file at CERTQ_DB_PATH).
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from aggregator.records.schema import metadata

config = context.config
target_metadata = metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER on SQLite needs table copies
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_environment() -> None:
    from aggregator.records.database import database_url_from_env

    engine = create_async_engine(config.get_main_option("sqlalchemy.url") or database_url_from_env())
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    from aggregator.records.database import database_url_from_env

    context.configure(
        url=config.get_main_option("sqlalchemy.url") or database_url_from_env(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
elif (given := config.attributes.get("connection")) is not None:
    run_migrations(given)
else:
    asyncio.run(_run_from_environment())
