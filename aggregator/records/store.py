"""The records store: uploaded department records in SQLite (default) or PostgreSQL, behind one async API.

    async with await RecordStore.open() as store:          # CERTQ_DATABASE_URL, else the SQLite file
        report = await store.import_file("mem-2026Q1.csv", department="mem", quarter="2026Q1")
        hit = await store.find(Department.MEM, number="T110105199003071239")

SQLAlchemy 2 async Core over aiosqlite or asyncpg. `open` runs the Alembic migrations under a lock, so that
several processes may open one database at once. An import is one transaction: a failure anywhere (a bad
file, an exception, a crash) leaves nothing of the batch visible. See `import_file` for the rules.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from aggregator.config import DepartmentConfig
from aggregator.errors import register
from aggregator.models import CERTIFICATE_FIELDS, Certificate, Department
from aggregator.numbers import normalise
from aggregator.records import importer
from aggregator.records.importer import RECORD_COLUMNS, Chunk, ProgressCallback, Upload
from aggregator.records.report import (
    MAX_KEPT_PROBLEMS,
    AlreadyImported,
    BatchReport,
    BatchStatus,
    BatchSummary,
    RejectedRow,
    RowProblem,
    UnreadableFile,
    parse_quarter,
)
from aggregator.records.schema import LOOKUP_INDEXES, batches, records

DEFAULT_DB_PATH = "./certq-data/certq.sqlite3"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
CHUNK_ROWS = 5000
_LIVE = ("imported", "partial")
_LOCK_CLASS = 7345  # PostgreSQL advisory lock namespace: (7345, 0) migrations, (7345, n) department imports
_DEPT_LOCK = {d: i + 1 for i, d in enumerate(Department)}


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
    """`CERTQ_DATABASE_URL` (PostgreSQL for several instances), else the SQLite file at `CERTQ_DB_PATH`
    (default ./certq-data/certq.sqlite3)."""
    url = os.environ.get("CERTQ_DATABASE_URL", "").strip()
    if url:
        return normalise_database_url(url)
    path = Path(os.environ.get("CERTQ_DB_PATH", "").strip() or DEFAULT_DB_PATH).expanduser().resolve()
    return f"sqlite+aiosqlite:///{path}"


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
        engine = create_async_engine(url, connect_args={"timeout": 60, **(connect_args or {})})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() != "asyncpg":
            raise ValueError(f"PostgreSQL is reached through asyncpg: use postgresql+asyncpg://, not {parsed.drivername}")
        return create_async_engine(url, connect_args=dict(connect_args or {}), pool_pre_ping=True)
    raise ValueError(f"unsupported database {parsed.drivername!r}: use a SQLite file or postgresql+asyncpg://")


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def upgrade_database(engine: AsyncEngine) -> None:
    """Run the Alembic migrations to head, holding a lock so that concurrent openers take turns."""
    async with engine.connect() as conn:
        await conn.execution_options(certq_write=True)
        async with conn.begin():
            if conn.dialect.name == "postgresql":
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:c, 0)"), {"c": _LOCK_CLASS})
            await conn.run_sync(_upgrade)


class StoreUnavailable(Exception):
    """The records database cannot be reached or opened (server down, wrong URL, unwritable file)."""

    def __init__(self, where: str, detail: str) -> None:
        self.where = where
        self.detail = detail.splitlines()[0] if detail else ""
        super().__init__(f"cannot open the records database {where}: {self.detail}")


register(StoreUnavailable, 503, 69, "store-unavailable", "记录数据库无法连接", "cannot open the records database {exc.where}: {exc.detail}")


# --- Results -------------------------------------------------------------------------------------


class RecordsHit(BaseModel):
    """What the uploaded records of one department say about one lookup."""

    certificates: list[Certificate] = Field(default_factory=list)  # current rows only
    data_as_of: datetime | None = None  # upload time of the newest batch the certificates came from
    quarter: str | None = None  # that batch's quarter


def _utc(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# A certificate's fields are the records table's columns of the same names (see `models.Certificate`).
_FIND_COLUMNS = [records.c[name] for name in CERTIFICATE_FIELDS] + [batches.c.uploaded_at, batches.c.quarter]


def _lookup(condition: sa.ColumnElement[bool]) -> sa.Select[Any]:
    return (
        sa.select(*_FIND_COLUMNS)
        .select_from(records.join(batches, batches.c.id == records.c.batch_id))
        .where(records.c.department == sa.bindparam("department"), records.c.is_current, condition)
    )


_FIND_BY_NUMBER = _lookup(records.c.number == sa.bindparam("number"))
_FIND_BY_ID = _lookup(records.c.holder_id_number == sa.bindparam("id_number"))
# Two indexed lookups joined by UNION rather than one OR, so that each uses its own partial index.
_FIND_BY_EITHER = sa.union(_FIND_BY_NUMBER, _FIND_BY_ID)


def _sub_key(department: Department, alias: str) -> str:
    """SQL for what, besides the number, tells a department's certificates apart (see `Certificate.key`):
    MEM and MOHRSS issue several cards under one number (the holder's ID), one per operation item; a SAMR
    number (the ID) carries one card per 从业种类 whose 持证项目 grow over time; a MOHURD number is one card."""
    if department in (Department.MEM, Department.MOHRSS):
        return f"COALESCE({alias}.operation_item, {alias}.category, '')"
    if department == Department.SAMR:
        return f"COALESCE({alias}.category, '')"
    return "''"


# --- The store -----------------------------------------------------------------------------------


class RecordStore:
    """Uploaded department records: imports, lookups, and the history of uploads."""

    def __init__(self, engine: AsyncEngine, departments: Mapping[Department, DepartmentConfig] | None = None) -> None:
        self.engine = engine
        self._departments = dict(departments) if departments is not None else None
        self._sqlite = engine.dialect.name == "sqlite"
        self._true = "1" if self._sqlite else "TRUE"
        self._false = "0" if self._sqlite else "FALSE"
        self._current = "is_current = 1" if self._sqlite else "is_current"

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
        return cls(engine, departments)

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

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            await conn.execution_options(certq_write=True)
            async with conn.begin():
                yield conn

    # --- Lookups ---------------------------------------------------------------------------------

    async def find(
        self, department: Department | str, *, number: str | None = None, id_number: str | None = None
    ) -> RecordsHit:
        """The current certificates of one department whose number is `number` or whose holder's ID number
        is `id_number` (both normalised here). Only rows of the newest quarter that holds each certificate."""
        department = Department(department)
        number = normalise(number) if number else None
        id_number = normalise(id_number) if id_number else None
        if number and id_number:
            statement, params = _FIND_BY_EITHER, {"number": number, "id_number": id_number}
        elif number:
            statement, params = _FIND_BY_NUMBER, {"number": number}
        elif id_number:
            statement, params = _FIND_BY_ID, {"id_number": id_number}
        else:
            raise ValueError("find needs a number or an id_number")
        params["department"] = department.value
        async with self.engine.connect() as conn:
            await conn.execution_options(certq_single_read=True)  # (SQLite) the lookup is one statement
            rows = (await conn.execute(statement, params)).all()
        if not rows:
            return RecordsHit()
        rows.sort(key=lambda r: (r.number, r.category or "", r.operation_item or ""))
        newest = max(rows, key=lambda r: _utc(r.uploaded_at))
        return RecordsHit(
            certificates=[self._certificate(r) for r in rows],
            data_as_of=_utc(newest.uploaded_at),
            quarter=newest.quarter,
        )

    @staticmethod
    def _certificate(row: Any) -> Certificate:
        data = {name: getattr(row, name) for name in CERTIFICATE_FIELDS}
        data["items"] = json.loads(data["items"]) if data["items"] else []
        return Certificate.model_validate(data)

    # --- Batches ---------------------------------------------------------------------------------

    @staticmethod
    def _summary(row: Any) -> BatchSummary:
        return BatchSummary(
            id=row.id,
            department=Department(row.department),
            quarter=row.quarter,
            file_name=row.file_name,
            sha256=row.sha256,
            uploaded_at=_utc(row.uploaded_at),
            uploaded_by=row.uploaded_by,
            rows_total=row.rows_total,
            rows_imported=row.rows_imported,
            rows_rejected=row.rows_rejected,
            status=BatchStatus(row.status),
        )

    _SUMMARY_COLUMNS = [c for c in batches.c if c.name != "report"]

    async def list_batches(self, department: Department | str | None = None, limit: int = 100) -> list[BatchSummary]:
        """Uploads, newest first (rejected ones included: they carry the report a department needs)."""
        query = sa.select(*self._SUMMARY_COLUMNS).where(batches.c.status != "importing")
        if department is not None:
            query = query.where(batches.c.department == Department(department).value)
        query = query.order_by(batches.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            return [self._summary(r) for r in (await conn.execute(query)).all()]

    async def get_batch(self, batch_id: int) -> BatchReport | None:
        """One upload with its full report (problems with reasons, rejected rows, warnings), or None."""
        query = sa.select(batches).where(batches.c.id == batch_id, batches.c.status != "importing")
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        report = row.report if isinstance(row.report, dict) else json.loads(row.report or "{}")
        return BatchReport.model_validate({**self._summary(row).model_dump(), **report})

    async def latest_batches(self) -> dict[Department, BatchSummary]:
        """Per department, the imported batch of the newest quarter (the latest upload of that quarter)."""
        query = (
            sa.select(*self._SUMMARY_COLUMNS)
            .where(batches.c.status.in_(_LIVE))
            .order_by(batches.c.department, batches.c.quarter.desc(), batches.c.id.desc())
        )
        out: dict[Department, BatchSummary] = {}
        async with self.engine.connect() as conn:
            for row in (await conn.execute(query)).all():
                out.setdefault(Department(row.department), self._summary(row))
        return out

    async def generation(self, department: Department | str) -> int:
        """A number that changes whenever an import for the department succeeds (for cache invalidation):
        the id of its newest imported batch, 0 before the first."""
        query = sa.select(sa.func.max(batches.c.id)).where(
            batches.c.department == Department(department).value, batches.c.status.in_(_LIVE)
        )
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar() or 0)

    async def _live_batch(self, conn: AsyncConnection, department: Department, sha256: str) -> int | None:
        query = sa.select(batches.c.id).where(
            batches.c.department == department.value, batches.c.sha256 == sha256, batches.c.status != "rejected"
        )
        return (await conn.execute(query)).scalar()

    # --- Import ----------------------------------------------------------------------------------

    async def import_file(
        self,
        path: str | os.PathLike[str],
        *,
        department: Department | str,
        quarter: str,
        uploaded_by: str = "cli",
        partial: bool = False,
        progress: ProgressCallback | None = None,
        file_name: str | None = None,
    ) -> BatchReport:
        """Import one department's quarterly records file (CSV, XLSX or XLS) and return its report.

        - Every row is validated; by default a file with any invalid row is rejected whole and nothing is
          imported. With `partial=True` the valid rows are imported and the others kept, with their reasons,
          in the report (status `partial`). A rejected upload is recorded too (status `rejected`), so that
          `get_batch` shows its report; it can be fixed and imported again.
        - The same file content (sha256) imported twice for a department raises `AlreadyImported`, carrying
          the existing batch's id, and adds nothing.
        - A newer quarter supersedes the department's older rows for the same certificate (number and, see
          `_sub_key`, operation item or category); older batches stay as history. A batch of an older quarter
          imported later stays history where a newer quarter already holds the certificate.
        - One transaction: an exception anywhere (including from `progress`) leaves nothing of the batch.
        - `progress(rows_done, bytes_done, bytes_total)` is called every few thousand rows.
        - `file_name` is the name to record (default: the path's name), e.g. the name of a web upload.
        """
        department = Department(department)
        quarter = parse_quarter(quarter)
        path = Path(path)
        meta = {
            "department": department,
            "quarter": quarter,
            "file_name": file_name or path.name,
            "uploaded_by": uploaded_by,
            "partial": partial,
        }
        sha256 = await asyncio.to_thread(_sha256, path)
        meta["sha256"] = sha256
        meta["uploaded_at"] = datetime.now(UTC)
        async with self.engine.connect() as conn:
            existing = await self._live_batch(conn, department, sha256)
        if existing is not None:
            raise AlreadyImported(existing, department, sha256)
        try:
            upload = await asyncio.to_thread(importer.open_upload, path, self.department_config(department))
        except UnreadableFile as e:
            return await self._record_rejected(meta, rows_total=0, problems=e.problems, problems_total=len(e.problems))
        try:
            return await self._import(upload, meta, progress)
        finally:
            upload.close()

    async def _import(self, upload: Upload, meta: dict[str, Any], progress: ProgressCallback | None) -> BatchReport:
        department: Department = meta["department"]
        partial: bool = meta["partial"]
        tally = _Tally(upload)
        outcome: BatchReport | None = None
        async with self.engine.connect() as conn:
            await conn.execution_options(certq_write=True)
            transaction = await conn.begin()
            try:
                if not self._sqlite:
                    await conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:c, :d)"), {"c": _LOCK_CLASS, "d": _DEPT_LOCK[department]}
                    )
                existing = await self._live_batch(conn, department, meta["sha256"])
                if existing is not None:  # imported by someone else while this file was being opened
                    raise AlreadyImported(existing, department, meta["sha256"])
                batch_id = await self._insert_batch(conn, meta, status="importing")
                bulk = self._sqlite and (await conn.execute(sa.text("SELECT 1 FROM records LIMIT 1"))).first() is None
                if self._sqlite:
                    await conn.exec_driver_sql("PRAGMA cache_size=-65536")
                if bulk:  # an empty table: build the lookup indexes once at the end instead of row by row
                    for index in LOOKUP_INDEXES:
                        await conn.run_sync(lambda c, i=index: i.drop(c))
                low = int((await conn.execute(sa.select(sa.func.coalesce(sa.func.max(records.c.id), 0)))).scalar())
                insert = self._bulk_insert(batch_id, department)
                try:
                    async for chunk in _chunks(upload):
                        tally.add(chunk)
                        if chunk.records and (partial or not tally.rows_rejected):
                            await insert(conn, chunk.records)
                        if progress is not None:
                            progress(tally.rows_total, chunk.bytes_done, upload.source.bytes_total)
                except UnreadableFile as e:  # a CSV that breaks part-way: the rest cannot be trusted
                    for problem in e.problems:
                        tally.file_problem(problem.reason, problem.line)
                if bulk:
                    for index in LOOKUP_INDEXES:
                        await conn.run_sync(lambda c, i=index: i.create(c))
                high = int((await conn.execute(sa.select(sa.func.coalesce(sa.func.max(records.c.id), 0)))).scalar())
                span = {"b": batch_id, "lo": low + 1, "hi": high, "d": department.value, "q": meta["quarter"]}
                if tally.rows_total and not tally.file_level and (partial or not tally.rows_rejected):
                    await self._reject_duplicates(conn, department, span, tally, delete=partial)
                if not tally.rows_total:
                    tally.file_problem("文件中没有数据行 (the file has no data rows)", upload.header_line)
                imported = tally.rows_total - tally.rows_rejected
                if tally.file_level or not imported or (tally.rows_rejected and not partial):
                    await transaction.rollback()
                else:
                    superseded, outdated = 0, 0
                    if await self._has_other_batches(conn, department, batch_id):
                        superseded, outdated = await self._supersede(conn, department, span)
                    status = BatchStatus.PARTIAL if tally.rows_rejected else BatchStatus.IMPORTED
                    outcome = tally.report(batch_id, meta, status, superseded=superseded, outdated=outdated)
                    await self._finish_batch(conn, outcome)
                    await transaction.commit()
            except BaseException:
                if transaction.is_active:
                    await transaction.rollback()
                raise
            finally:
                if self._sqlite:
                    await conn.exec_driver_sql("PRAGMA cache_size=-2000")
        if outcome is not None:
            return outcome
        return await self._record_rejected(
            meta,
            rows_total=tally.rows_total,
            rows_rejected=tally.rows_total if tally.file_level else tally.rows_rejected,
            problems=tally.problems,
            problems_total=tally.problems_total,
            rejected_rows=tally.rejected_rows,
            warnings=upload.warnings,
            file_format=upload.file_format,
            encoding=upload.encoding,
        )

    async def _insert_batch(self, conn: AsyncConnection, meta: dict[str, Any], *, status: str) -> int:
        result = await conn.execute(
            batches.insert().returning(batches.c.id),
            {
                "department": meta["department"].value,
                "quarter": meta["quarter"],
                "file_name": meta["file_name"],
                "sha256": meta["sha256"],
                "uploaded_at": meta["uploaded_at"],
                "uploaded_by": meta["uploaded_by"],
                "status": status,
            },
        )
        return int(result.scalar_one())

    async def _finish_batch(self, conn: AsyncConnection, report: BatchReport) -> None:
        extra = report.model_dump(mode="json", exclude=set(BatchSummary.model_fields))
        await conn.execute(
            batches.update()
            .where(batches.c.id == report.id)
            .values(
                rows_total=report.rows_total,
                rows_imported=report.rows_imported,
                rows_rejected=report.rows_rejected,
                status=report.status.value,
                report=extra,
            )
        )

    async def _record_rejected(
        self,
        meta: dict[str, Any],
        *,
        rows_total: int,
        problems: list[RowProblem],
        problems_total: int,
        rows_rejected: int | None = None,
        rejected_rows: list[RejectedRow] | None = None,
        warnings: list[str] | None = None,
        file_format: str | None = None,
        encoding: str | None = None,
    ) -> BatchReport:
        async with self._write() as conn:
            batch_id = await self._insert_batch(conn, meta, status="importing")
            report = BatchReport(
                id=batch_id,
                department=meta["department"],
                quarter=meta["quarter"],
                file_name=meta["file_name"],
                sha256=meta["sha256"],
                uploaded_at=meta["uploaded_at"],
                uploaded_by=meta["uploaded_by"],
                rows_total=rows_total,
                rows_imported=0,
                rows_rejected=rows_total if rows_rejected is None else rows_rejected,
                status=BatchStatus.REJECTED,
                file_format=file_format,
                encoding=encoding,
                partial=meta["partial"],
                problems=problems,
                problems_total=problems_total,
                rejected_rows=rejected_rows or [],
                warnings=warnings or [],
            )
            await self._finish_batch(conn, report)
        return report

    def _bulk_insert(self, batch_id: int, department: Department) -> Any:
        """A coroutine function inserting record tuples (see `importer.RECORD_COLUMNS`) into this batch."""
        if self._sqlite:
            sql = (
                f"INSERT INTO records (batch_id, department, is_current, {', '.join(RECORD_COLUMNS)}) "
                f"VALUES ({int(batch_id)}, '{department.value}', 1, {', '.join('?' * len(RECORD_COLUMNS))})"
            )

            async def insert_sqlite(conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
                await conn.exec_driver_sql(sql, rows)

            return insert_sqlite

        columns = ["batch_id", "department", "is_current", *RECORD_COLUMNS]
        dates = [i for i, name in enumerate(RECORD_COLUMNS) if name in importer.DATE_COLUMNS]
        head = (batch_id, department.value, True)

        def typed(row: tuple[Any, ...]) -> tuple[Any, ...]:
            values = list(row)
            for i in dates:
                if values[i] is not None:
                    values[i] = date.fromisoformat(values[i])
            return head + tuple(values)

        async def insert_postgresql(conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
            raw = await conn.get_raw_connection()
            await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
                "records", records=[typed(r) for r in rows], columns=columns
            )

        return insert_postgresql

    async def _has_other_batches(self, conn: AsyncConnection, department: Department, batch_id: int) -> bool:
        query = (
            sa.select(batches.c.id)
            .where(batches.c.department == department.value, batches.c.status.in_(_LIVE), batches.c.id != batch_id)
            .limit(1)
        )
        return (await conn.execute(query)).first() is not None

    async def _supersede(self, conn: AsyncConnection, department: Department, span: dict[str, Any]) -> tuple[int, int]:
        """Keep one current row per certificate: the one from the newest (quarter, batch). Returns how many
        older rows this batch superseded and how many of its own rows were already outdated."""
        cur, false = self._current, self._false
        n_sub, o_sub, r_sub = _sub_key(department, "n"), _sub_key(department, "o"), _sub_key(department, "records")
        outdated = await conn.execute(
            sa.text(
                f"UPDATE records SET is_current = {false} "
                f"WHERE id BETWEEN :lo AND :hi AND batch_id = :b AND {cur} AND EXISTS ("
                f" SELECT 1 FROM records o JOIN batches ob ON ob.id = o.batch_id"
                f" WHERE o.department = :d AND o.number = records.number AND o.{cur} AND o.batch_id <> :b"
                f" AND {o_sub} = {r_sub} AND (ob.quarter > :q OR (ob.quarter = :q AND ob.id > :b)))"
            ),
            span,
        )
        superseded = await conn.execute(
            sa.text(
                f"UPDATE records SET is_current = {false} WHERE id IN ("
                f" SELECT o.id FROM records n JOIN records o ON o.department = n.department AND o.number = n.number"
                f" WHERE n.id BETWEEN :lo AND :hi AND n.batch_id = :b AND n.{cur}"
                f" AND o.department = :d AND o.{cur} AND o.batch_id <> :b AND {o_sub} = {n_sub})"
            ),
            span,
        )
        return superseded.rowcount or 0, outdated.rowcount or 0

    async def _reject_duplicates(
        self, conn: AsyncConnection, department: Department, span: dict[str, Any], tally: _Tally, *, delete: bool
    ) -> None:
        """Rows of this batch that repeat an earlier row's certificate (same number and sub-key) are problems;
        with `delete` (partial imports) the repeats are removed and the first occurrence kept."""
        cur, sub = self._current, _sub_key(department, "n")
        groups = (
            f"SELECT n.number AS number, {sub} AS sub FROM records n"
            f" WHERE n.department = :d AND n.{cur} AND n.batch_id = :b AND n.number IN ("
            f"  SELECT number FROM records WHERE department = :d AND {cur} GROUP BY number HAVING count(*) > 1)"
            # by position: MOHURD's sub-key is the constant '', which PostgreSQL refuses in a GROUP BY
            f" GROUP BY 1, 2 HAVING count(*) > 1"
        )
        # The groups first: almost always there are none, and then the join below, which visits every row of
        # the batch (a million on a large file) to compare it with the groups, is not needed at all.
        if (await conn.execute(sa.text(f"{groups} LIMIT 1"), span)).first() is None:
            return
        query = sa.text(
            f"SELECT n.id, n.row_number, n.number, n.holder_name, n.category, n.operation_item, {sub} AS sub"
            f" FROM records n JOIN ({groups}) g ON g.number = n.number AND g.sub = {sub}"
            f" WHERE n.department = :d AND n.{cur} AND n.batch_id = :b ORDER BY n.number, sub, n.row_number"
        )
        first: dict[tuple[str, str], int] = {}
        doomed: list[int] = []
        result = await conn.stream(query, span)
        async for row in result:
            key = (row.number, row.sub)
            if key not in first:
                first = {key: row.row_number}  # rows arrive grouped: only the current group is remembered
                continue
            tally.duplicate(row, first[key], upload_labels=tally.upload.header.labels)
            doomed.append(row.id)
        if delete and doomed:
            for start in range(0, len(doomed), 500):
                await conn.execute(records.delete().where(records.c.id.in_(doomed[start : start + 500])))


async def _chunks(upload: Upload) -> AsyncIterator[Chunk]:
    """The upload's validated chunks, each read and validated in a worker thread so that the event loop
    keeps serving (lookups, progress) while a large file is imported."""
    iterator: Iterator[Chunk] = upload.chunks(CHUNK_ROWS)
    done = object()
    while True:
        chunk = await asyncio.to_thread(next, iterator, done)
        if chunk is done:
            return
        yield chunk  # type: ignore[misc]


class _Tally:
    """Counts and (bounded) problems of one import as its chunks go by."""

    def __init__(self, upload: Upload) -> None:
        self.upload = upload
        self.rows_total = 0
        self.rows_rejected = 0
        self.problems: list[RowProblem] = []
        self.problems_total = 0
        self.rejected_rows: list[RejectedRow] = []
        self.file_level = False

    def add(self, chunk: Chunk) -> None:
        self.rows_total += chunk.rows
        self.rows_rejected += len(chunk.rejected)
        self.problems_total += len(chunk.problems)
        room = MAX_KEPT_PROBLEMS - len(self.problems)
        for line, column, value, reason in chunk.problems[: max(room, 0)]:
            self.problems.append(RowProblem(line=line, column=column, value=value, reason=reason))
        room = MAX_KEPT_PROBLEMS - len(self.rejected_rows)
        for line, cells in chunk.rejected[: max(room, 0)]:
            self.rejected_rows.append(RejectedRow(line=line, cells=self.upload.rejected_cells(cells)))

    def file_problem(self, reason: str, line: int) -> None:
        self.file_level = True
        self.problems_total += 1
        self.problems.insert(0, RowProblem(line=line, reason=reason))

    def duplicate(self, row: Any, first_line: int, *, upload_labels: Mapping[str, str]) -> None:
        self.rows_rejected += 1
        self.problems_total += 1
        label = upload_labels.get("number")
        if len(self.problems) < MAX_KEPT_PROBLEMS:
            self.problems.append(
                RowProblem(
                    line=row.row_number,
                    column=label,
                    value=row.number,
                    reason=f"与第 {first_line} 行是同一证书，重复 (the same certificate as line {first_line}: duplicate row)",
                )
            )
        if len(self.rejected_rows) < MAX_KEPT_PROBLEMS:
            cells = {
                upload_labels.get(name, name): value
                for name, value in (
                    ("number", row.number),
                    ("name", row.holder_name),
                    ("category", row.category),
                    ("operation_item", row.operation_item),
                )
                if value
            }
            self.rejected_rows.append(RejectedRow(line=row.row_number, cells=cells))

    def report(
        self, batch_id: int, meta: dict[str, Any], status: BatchStatus, *, superseded: int, outdated: int
    ) -> BatchReport:
        self.problems.sort(key=lambda p: p.line)
        self.rejected_rows.sort(key=lambda r: r.line)
        return BatchReport(
            id=batch_id,
            department=meta["department"],
            quarter=meta["quarter"],
            file_name=meta["file_name"],
            sha256=meta["sha256"],
            uploaded_at=meta["uploaded_at"],
            uploaded_by=meta["uploaded_by"],
            rows_total=self.rows_total,
            rows_imported=self.rows_total - self.rows_rejected,
            rows_rejected=self.rows_rejected,
            status=status,
            file_format=self.upload.file_format,
            encoding=self.upload.encoding,
            partial=meta["partial"],
            problems=self.problems,
            problems_total=self.problems_total,
            rejected_rows=self.rejected_rows,
            warnings=self.upload.warnings,
            superseded=superseded,
            outdated=outdated,
        )
