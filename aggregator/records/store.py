"""The records store: uploaded department records in SQLite (default) or PostgreSQL, behind one async API.

    async with await RecordStore.open() as store:          # CERTQ_DATABASE_URL, else the SQLite file
        report = await store.import_file("mem-2026Q1.csv", department="mem", quarter="2026Q1")
        hit = await store.find(Department.MEM, number="T110105199003071239")

SQLAlchemy 2 async Core over aiosqlite or asyncpg. `open` runs the Alembic migrations under a lock, so that
several processes may open one database at once. An import is one transaction: a failure anywhere (a bad
file, an exception, a crash) leaves nothing of the batch visible. See `import_file` for the rules.

`RecordStore` is put together from its pieces:

    database.py   where the database is, the engine certq configures for it, migrations, StoreUnavailable
    reads.py      RecordReads: find, list_batches, get_batch, latest_batches, generation; RecordsHit
    ingest.py     RecordIngest: import_file and its transaction; IncomingBatch, the upload being imported
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.config import DepartmentConfig
from aggregator.models import Department
from aggregator.records import importer
from aggregator.records.database import StoreUnavailable, database_url_from_env, normalise_database_url, open_engine
from aggregator.records.ingest import RecordIngest
from aggregator.records.reads import RecordReads, RecordsHit
from aggregator.records.report import AlreadyImported

__all__ = [  # besides RecordStore, what other modules import from here (migrations/env.py, demo.py, bench/)
    "AlreadyImported",
    "RecordStore",
    "RecordsHit",
    "StoreUnavailable",
    "database_url_from_env",
    "normalise_database_url",
]


class RecordStore(RecordReads, RecordIngest):
    """Uploaded department records: imports, lookups, and the history of uploads."""

    def __init__(self, engine: AsyncEngine, departments: Mapping[Department, DepartmentConfig] | None = None) -> None:
        self.engine = engine
        self._departments = dict(departments) if departments is not None else None

    @classmethod
    async def open(
        cls,
        url: str | None = None,
        *,
        departments: Mapping[Department, DepartmentConfig] | None = None,
        connect_args: Mapping[str, Any] | None = None,
    ) -> RecordStore:
        """Connect (default: `database_url_from_env()`) and bring the schema to the newest migration.

        `departments` are the upload settings (default: config/departments.toml, read at the first import);
        `connect_args` go to the driver (e.g. asyncpg `server_settings={"search_path": ...}`)."""
        return cls(await open_engine(url, connect_args=connect_args), departments)

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> RecordStore:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def department_config(self, department: Department) -> DepartmentConfig:
        if self._departments is None:
            self._departments = importer.load_departments()
        config = self._departments.get(department)
        return config if config is not None else importer.default_department(department)
