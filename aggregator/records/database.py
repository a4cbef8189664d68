"""The records database itself: where it is, the engine certq configures for it, and its migrations.

    engine = await open_engine()                    # CERTQ_DATABASE_URL, else the SQLite file; migrated
    async with write_transaction(engine) as conn:   # SQLite: BEGIN IMMEDIATE
        ...

SQLite (default) through aiosqlite, PostgreSQL through asyncpg. The transactions on SQLite are certq's own
(see `_sqlite_begin`): `certq_write=True` on a connection takes the write lock at BEGIN, `certq_single_read=True`
skips BEGIN for a lone SELECT.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from aggregator.errors import register

# The longest a request waits for a pooled connection (SQLAlchemy's default, 30 s, outlives any lookup deadline).
POOL_TIMEOUT_S = 5.0

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: PostgreSQL advisory lock namespace: (LOCK_CLASS, 0) migrations, (LOCK_CLASS, n) a department's imports.
LOCK_CLASS = 7345


# --- Where the database is -----------------------------------------------------------------------


def normalise_database_url(url: str) -> str:
    """An async SQLAlchemy URL: `postgresql://` and `postgres://` become `postgresql+asyncpg://`, `sqlite://`
    becomes `sqlite+aiosqlite://`; a bare path is a SQLite file."""
    url = url.strip()
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://", "postgresql+psycopg://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    if "://" not in url:
        return f"sqlite+aiosqlite:///{Path(url).expanduser().resolve()}"
    return url


def database_url_from_env() -> str:
    """The home's database (see `aggregator.home`): `CERTQ_DATABASE_URL` (PostgreSQL for several instances),
    else its settings.toml's, else the SQLite file at `CERTQ_DB_PATH` or in the home (./certq-data)."""
    from aggregator.home import Home

    return normalise_database_url(Home.load().database_url)


# --- The engine ----------------------------------------------------------------------------------


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Manage transactions ourselves (the driver's implicit BEGIN would defeat BEGIN IMMEDIATE and DDL).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA busy_timeout=60000",
        "PRAGMA foreign_keys=ON",
        "PRAGMA synchronous=NORMAL",
    ):
        cursor.execute(pragma)
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    options = conn.get_execution_options()
    if options.get("certq_single_read"):  # one SELECT reads one snapshot by itself: spare BEGIN's 3 thread hops
        return
    # Writers take the write lock up front: no deadlock between two deferred transactions upgrading.
    conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("certq_write") else "BEGIN")


def create_engine(url: str | None = None, *, connect_args: Mapping[str, Any] | None = None) -> AsyncEngine:
    """The async engine for a database URL (default: `database_url_from_env()`), configured for certq."""
    url = normalise_database_url(url) if url else database_url_from_env()
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError("the records store needs a SQLite file, not an in-memory database")
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url, connect_args={"timeout": 60, **(connect_args or {})}, pool_size=10, max_overflow=20,
            pool_timeout=POOL_TIMEOUT_S,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() != "asyncpg":
            raise ValueError(f"PostgreSQL is reached through asyncpg: use postgresql+asyncpg://, not {parsed.drivername}")
        return create_async_engine(
            url, connect_args=dict(connect_args or {}), pool_pre_ping=True, pool_timeout=POOL_TIMEOUT_S
        )
    raise ValueError(f"unsupported database {parsed.drivername!r}: use a SQLite file or postgresql+asyncpg://")


def dialect_insert(dialect: str, table: sa.Table) -> Any:
    """INSERT in the database's own dialect (`engine.dialect.name`), which has ON CONFLICT DO NOTHING / DO UPDATE:
    SQLite and PostgreSQL spell it the same way."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in a write transaction (SQLite: BEGIN IMMEDIATE), committed at the end of the block and
    rolled back if it raises."""
    async with engine.connect() as conn:
        await conn.execution_options(certq_write=True)
        async with conn.begin():
            yield conn


# --- Migrations ----------------------------------------------------------------------------------


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def upgrade_database(engine: AsyncEngine) -> None:
    """Run the Alembic migrations to head, holding a lock so that concurrent openers take turns."""
    async with write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:c, 0)"), {"c": LOCK_CLASS})
        await conn.run_sync(_upgrade)


class StoreUnavailable(Exception):
    """The records database cannot be reached or opened (server down, wrong URL, unwritable file)."""

    def __init__(self, where: str, detail: str) -> None:
        self.where = where
        self.detail = detail.splitlines()[0] if detail else ""
        super().__init__(f"cannot open the records database {where}: {self.detail}")


# Every pooled connection busy for POOL_TIMEOUT_S (a server far behind its load): the request is refused as a
# temporary outage (503), never a 500, and a lookup's records source says unavailable.
register(sa.exc.TimeoutError, 503, 75, "database-busy", "数据库繁忙，请稍后再试", "the database is busy; try again shortly")
register(StoreUnavailable, 503, 69, "store-unavailable", "记录数据库无法连接", "cannot open the records database {exc.where}: {exc.detail}")


async def open_engine(url: str | None = None, *, connect_args: Mapping[str, Any] | None = None) -> AsyncEngine:
    """The engine for `url` (default: `database_url_from_env()`), its schema brought to the newest migration.
    A database that cannot be reached, opened or created raises `StoreUnavailable`."""
    try:
        engine = create_engine(url, connect_args=connect_args)
    except OSError as e:  # the SQLite file's folder cannot be made
        raise StoreUnavailable(str(url or database_url_from_env()), f"{type(e).__name__}: {e}") from e
    try:
        await upgrade_database(engine)
    except (OSError, sa.exc.DBAPIError) as e:
        await engine.dispose()
        where = engine.url.render_as_string(hide_password=True)
        raise StoreUnavailable(where, f"{type(e).__name__}: {e}") from e
    except BaseException:
        await engine.dispose()
        raise
    return engine
