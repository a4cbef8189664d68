"""Importing an upload into the records store: one transaction per file, its rows checked, inserted and made current.

`RecordIngest` is the import half of `RecordStore` (which it is mixed into); it needs the store's `engine` and
`department_config`. `IncomingBatch` describes the upload being imported and builds its `BatchReport`; `_Tally`
counts rows and keeps (bounded) problems as the chunks go by. See `RecordIngest.import_file` for the rules.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aggregator.config import DepartmentConfig
from aggregator.models import SUB_KEY_FIELDS, Department
from aggregator.records import importer
from aggregator.records.database import LOCK_CLASS, write_transaction
from aggregator.records.frame_key import frame_keys, key_text, keys_of
from aggregator.records.importer import RECORD_COLUMNS, Chunk, ProgressCallback, Upload
from aggregator.records.reads import LIVE
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
    require_started,
)
from aggregator.records.schema import LOOKUP_INDEXES, batches, records

CHUNK_ROWS = 5000
_DEPT_LOCK = {d: i + 1 for i, d in enumerate(Department)}  # (LOCK_CLASS, n): one department's imports at a time


@dataclass(frozen=True, slots=True)
class IncomingBatch:
    """The upload being imported: what its row in `batches` and its report say about it besides the counts."""

    department: Department
    quarter: str  # as `parse_quarter` returns it: 2026Q1
    file_name: str  # the name recorded (a web upload's own name, else the path's)
    uploaded_by: str
    partial: bool  # import the valid rows even if others are rejected
    sha256: str  # of the file's content: the same content is imported once per department
    uploaded_at: datetime  # UTC

    def row(self, status: str) -> dict[str, Any]:
        """The values of its `batches` row before the counts are known."""
        return {
            "department": self.department.value,
            "quarter": self.quarter,
            "file_name": self.file_name,
            "sha256": self.sha256,
            "uploaded_at": self.uploaded_at,
            "uploaded_by": self.uploaded_by,
            "status": status,
        }

    def report(
        self,
        batch_id: int,
        status: BatchStatus,
        *,
        rows_total: int,
        rows_rejected: int,
        problems: list[RowProblem],
        problems_total: int,
        rejected_rows: list[RejectedRow] | None = None,
        upload: Upload | None = None,
        superseded: int = 0,
        outdated: int = 0,
    ) -> BatchReport:
        """Its report as batch `batch_id`. A rejected batch imported no row; `upload` (None when the file
        could not be opened) gives the file's format, encoding and warnings."""
        return BatchReport(
            id=batch_id,
            department=self.department,
            quarter=self.quarter,
            file_name=self.file_name,
            sha256=self.sha256,
            uploaded_at=self.uploaded_at,
            uploaded_by=self.uploaded_by,
            rows_total=rows_total,
            rows_imported=0 if status == BatchStatus.REJECTED else rows_total - rows_rejected,
            rows_rejected=rows_rejected,
            status=status,
            file_format=upload.file_format if upload is not None else None,
            encoding=upload.encoding if upload is not None else None,
            partial=self.partial,
            problems=problems,
            problems_total=problems_total,
            rejected_rows=rejected_rows or [],
            warnings=upload.warnings if upload is not None else [],
            superseded=superseded,
            outdated=outdated,
        )


class RecordIngest:
    """Imports of department files, through `engine`, with the upload settings of `department_config`."""

    engine: AsyncEngine
    department_config: Callable[[Department], DepartmentConfig]  # RecordStore's method

    @property
    def _sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

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
        - The same file content (sha256) imported twice for a department and quarter (or for a quarter older
          than one it was imported for) raises `AlreadyImported`, carrying the existing batch's id, and adds
          nothing. The same file for a NEWER quarter, when it is what the department's newest upload holds (its
          records did not change), is that quarter's upload: a batch row for the quarter that re-affirms the
          earlier batch's rows (`reaffirms`), nothing re-inserted (see `_reaffirm`).
        - A newer quarter supersedes the department's older rows for the same certificate (number and, see
          `_sub_key`, operation item or category); older batches stay as history. A batch of an older quarter
          imported later stays history where a newer quarter already holds the certificate.
        - One transaction: an exception anywhere (including from `progress`) leaves nothing of the batch.
        - `progress(rows_done, bytes_done, bytes_total)` is called every few thousand rows.
        - `file_name` is the name to record (default: the path's name), e.g. the name of a web upload.
        """
        department = Department(department)
        quarter = require_started(parse_quarter(quarter))  # FutureQuarter for one that has not begun
        path = Path(path)
        sha256 = await asyncio.to_thread(_sha256, path)
        batch = IncomingBatch(
            department=department,
            quarter=quarter,
            file_name=file_name or path.name,
            uploaded_by=uploaded_by,
            partial=partial,
            sha256=sha256,
            uploaded_at=datetime.now(UTC),
        )
        async with self.engine.connect() as conn:
            existing = await _live_batch(conn, department, sha256, quarter)
        if existing is not None:
            raise AlreadyImported(existing, department, sha256)
        reaffirmed = await self._reaffirm(batch)
        if reaffirmed is not None:
            return reaffirmed
        try:
            upload = await asyncio.to_thread(importer.open_upload, path, self.department_config(department))
        except UnreadableFile as e:
            return await self._record_rejected(batch, rows_total=0, problems=e.problems, problems_total=len(e.problems))
        try:
            return await self._import(upload, batch, progress)
        finally:
            upload.close()

    async def _import(self, upload: Upload, batch: IncomingBatch, progress: ProgressCallback | None) -> BatchReport:
        department, partial, sqlite = batch.department, batch.partial, self._sqlite
        tally = _Tally(upload)
        outcome: BatchReport | None = None
        empty = False
        if not sqlite:  # asked outside the import's transaction, so that it holds no lock on records yet
            async with self.engine.connect() as conn:
                empty = (await conn.execute(sa.text("SELECT 1 FROM records LIMIT 1"))).first() is None
        async with self.engine.connect() as conn:
            await conn.execution_options(certq_write=True)
            transaction = await conn.begin()
            try:
                if not sqlite:
                    await conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:c, :d)"), {"c": LOCK_CLASS, "d": _DEPT_LOCK[department]}
                    )
                    if empty:  # the bulk load below drops indexes: its lock first, before any other on the table
                        await conn.exec_driver_sql("LOCK TABLE records IN ACCESS EXCLUSIVE MODE")
                existing = await _live_batch(conn, department, batch.sha256, batch.quarter)
                if existing is not None:  # imported by someone else while this file was being opened
                    raise AlreadyImported(existing, department, batch.sha256)
                batch_id = await _insert_batch(conn, batch, status="importing")
                # An empty table: build the lookup indexes once at the end instead of row by row. PostgreSQL: only
                # under the lock taken above (another department's import into the still empty table waits for
                # this one, instead of both dropping indexes and deadlocking), and lookups wait for this commit.
                bulk = sqlite or empty
                if bulk:
                    bulk = (await conn.execute(sa.text("SELECT 1 FROM records LIMIT 1"))).first() is None
                if sqlite:  # 32 MiB: the index builds and appends ran as fast as with 64 (bench/README.md)
                    await conn.exec_driver_sql("PRAGMA cache_size=-32768")
                if bulk:
                    for index in LOOKUP_INDEXES:
                        await conn.run_sync(lambda c, i=index: i.drop(c))
                low = int((await conn.execute(sa.select(sa.func.coalesce(sa.func.max(records.c.id), 0)))).scalar())
                try:
                    if sqlite:
                        insert = self._bulk_insert(batch_id, department)
                        async for chunk in _prefetched_chunks(upload):
                            tally.add(chunk)
                            if chunk.valid and (partial or not tally.rows_rejected):
                                await insert(conn, chunk)
                            if progress is not None:
                                progress(tally.rows_total, chunk.bytes_done, upload.source.bytes_total)
                    else:
                        await _copy_upload(
                            conn, upload, tally, batch_id, department, partial=partial, progress=progress
                        )
                except UnreadableFile as e:  # a CSV that breaks part-way: the rest cannot be trusted
                    for problem in e.problems:
                        tally.file_problem(problem.reason, problem.line)
                if bulk:
                    for index in LOOKUP_INDEXES:
                        await conn.run_sync(lambda c, i=index: i.create(c))
                high = int((await conn.execute(sa.select(sa.func.coalesce(sa.func.max(records.c.id), 0)))).scalar())
                span = {"b": batch_id, "lo": low + 1, "hi": high, "d": department.value, "q": batch.quarter}
                if tally.rows_total and not tally.file_level and (partial or not tally.rows_rejected):
                    await self._reject_duplicates(conn, department, span, tally, delete=partial)
                if not tally.rows_total:
                    tally.file_problem("文件中没有数据行 (the file has no data rows)", upload.header_line)
                imported = tally.rows_total - tally.rows_rejected
                if tally.file_level or not imported or (tally.rows_rejected and not partial):
                    await transaction.rollback()
                else:
                    superseded, outdated = 0, 0
                    if await _has_other_batches(conn, department, batch_id):
                        superseded, outdated = await self._supersede(conn, department, span)
                    status = BatchStatus.PARTIAL if tally.rows_rejected else BatchStatus.IMPORTED
                    outcome = tally.report(batch, batch_id, status, superseded=superseded, outdated=outdated)
                    await _finish_batch(conn, outcome)
                    await transaction.commit()
            except BaseException:
                if transaction.is_active:
                    await transaction.rollback()
                raise
            finally:
                if sqlite:
                    await conn.exec_driver_sql("PRAGMA cache_size=-2000")
        if outcome is not None:
            return outcome
        return await self._record_rejected(
            batch,
            rows_total=tally.rows_total,
            rows_rejected=tally.rows_total if tally.file_level else tally.rows_rejected,
            problems=tally.problems,
            problems_total=tally.problems_total,
            rejected_rows=tally.rejected_rows,
            upload=upload,
        )

    async def _reaffirm(self, batch: IncomingBatch) -> BatchReport | None:
        """The same file as the department's newest upload, for a newer quarter: record the quarter as a batch
        that re-affirms the earlier batch's rows (status and counts copied, `reaffirms` its id, nothing
        inserted) and return its report. None when the file is not the newest upload's (then it is imported as
        usual: its rows must become current again), or when the earlier batch was partial and this upload is not
        (then the usual import rejects it, as it would any file with bad rows without --partial)."""
        department = batch.department
        newest_query = (
            sa.select(batches)
            .where(batches.c.department == department.value, batches.c.status.in_(LIVE))
            .order_by(batches.c.quarter.desc(), batches.c.id.desc())
            .limit(1)
        )
        async with self.engine.connect() as conn:  # almost every upload is a new file: no write lock for it
            newest = (await conn.execute(newest_query)).first()
        if newest is None or newest.sha256 != batch.sha256:
            return None
        async with write_transaction(self.engine) as conn:
            if not self._sqlite:
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:c, :d)"), {"c": LOCK_CLASS, "d": _DEPT_LOCK[department]}
                )
            existing = await _live_batch(conn, department, batch.sha256, batch.quarter)
            if existing is not None:  # the same quarter, recorded while this file was being read
                raise AlreadyImported(existing, department, batch.sha256)
            newest = (await conn.execute(newest_query)).first()  # again, under the department's lock
            if (
                newest is None
                or newest.sha256 != batch.sha256
                or newest.quarter >= batch.quarter
                or (newest.status != BatchStatus.IMPORTED.value and not batch.partial)
            ):
                return None
            original = int(newest.reaffirms or newest.id)
            stored = newest.report if isinstance(newest.report, dict) else json.loads(newest.report or "{}")
            rows = int(newest.rows_imported)
            note = (
                f"与批次 {original} 文件相同：未重复写入记录，其 {rows} 条记录确认为 {batch.quarter} 的数据 "
                f"(the same file as batch {original}: no rows re-inserted; its {rows} records are re-affirmed as "
                f"{batch.quarter}'s)"
            )
            report = BatchReport.model_validate(
                {
                    **stored,
                    **batch.row(newest.status),
                    "id": 0,
                    "rows_total": newest.rows_total,
                    "rows_imported": rows,
                    "rows_rejected": newest.rows_rejected,
                    "partial": batch.partial,
                    "superseded": 0,
                    "outdated": 0,
                    "reaffirms": original,
                    "warnings": [note, *stored.get("warnings", [])],
                }
            )
            result = await conn.execute(
                batches.insert().returning(batches.c.id), {**batch.row("importing"), "reaffirms": original}
            )
            report = report.model_copy(update={"id": int(result.scalar_one())})
            await _finish_batch(conn, report)
        return report

    async def _record_rejected(
        self,
        batch: IncomingBatch,
        *,
        rows_total: int,
        problems: list[RowProblem],
        problems_total: int,
        rows_rejected: int | None = None,
        rejected_rows: list[RejectedRow] | None = None,
        upload: Upload | None = None,
    ) -> BatchReport:
        """Record a rejected upload (nothing of it imported), so that `get_batch` shows its report.
        `rows_rejected` defaults to every row."""
        async with write_transaction(self.engine) as conn:
            batch_id = await _insert_batch(conn, batch, status="importing")
            report = batch.report(
                batch_id,
                BatchStatus.REJECTED,
                rows_total=rows_total,
                rows_rejected=rows_total if rows_rejected is None else rows_rejected,
                problems=problems,
                problems_total=problems_total,
                rejected_rows=rejected_rows,
                upload=upload,
            )
            await _finish_batch(conn, report)
        return report

    def _bulk_insert(self, batch_id: int, department: Department) -> Any:
        """A coroutine function inserting a chunk's records into this batch (SQLite; PostgreSQL's rows go through
        one COPY, see `_copy_upload`): the driver's own `executemany` (SQLAlchemy's adds ~25 % for nothing here).
        A chunk of the columnar lane becomes parameter tuples column by column, its frame key column included."""
        sql = (
            f"INSERT INTO records (batch_id, department, is_current, {', '.join(RECORD_COLUMNS)}, frame_key) "
            f"VALUES ({int(batch_id)}, '{department.value}', 1, {', '.join('?' * len(RECORD_COLUMNS))}, ?)"
        )

        async def insert_sqlite(conn: AsyncConnection, chunk: Chunk) -> None:
            if chunk.frame is None:
                rows = chunk.records
                params = list(map(tuple.__add__, rows, zip(_frame_keys(department, rows))))
            else:
                frame = chunk.frame_rows()
                keys = keys_of(frame.select(key_text(department.value)).to_series().to_list())
                params = list(zip(*(column.to_list() for column in frame.get_columns()), keys))
            driver = (await conn.get_raw_connection()).driver_connection
            cursor = await driver.executemany(sql, params)  # type: ignore[union-attr]
            await cursor.close()

        return insert_sqlite

    async def _supersede(self, conn: AsyncConnection, department: Department, span: dict[str, Any]) -> tuple[int, int]:
        """Keep one current row per certificate: the one from the newest (quarter, batch). Returns how many
        older rows this batch superseded and how many of its own rows were already outdated.

        A batch the department re-affirmed (the same file uploaded for a newer quarter, `batches.reaffirms`)
        counts as of its newest re-affirming batch: a late file for an older quarter does not replace rows the
        department vouched for since."""
        cur, false = _current(self._sqlite), "0" if self._sqlite else "FALSE"
        n_sub, o_sub, r_sub = _sub_key(department, "n"), _sub_key(department, "o"), _sub_key(department, "records")
        vouched = (
            await conn.execute(
                sa.select(batches.c.reaffirms, batches.c.quarter, batches.c.id)
                .where(
                    batches.c.department == department.value,
                    batches.c.reaffirms.is_not(None),
                    batches.c.status.in_(LIVE),
                )
                .order_by(batches.c.quarter, batches.c.id)
            )
        ).all()
        newest = {int(row.reaffirms): (row.quarter, int(row.id)) for row in vouched}  # the last one wins
        params = dict(span)
        quarter, batch = "ob.quarter", "ob.id"
        if newest:  # (a handful of batches at most: as constants, not a subquery per row)
            cases_q, cases_i = [], []
            for k, (original, (q, i)) in enumerate(newest.items()):
                params.update({f"vo{k}": original, f"vq{k}": q, f"vi{k}": i})
                cases_q.append(f"WHEN :vo{k} THEN :vq{k}")
                cases_i.append(f"WHEN :vo{k} THEN :vi{k}")
            quarter = f"(CASE ob.id {' '.join(cases_q)} ELSE ob.quarter END)"
            batch = f"(CASE ob.id {' '.join(cases_i)} ELSE ob.id END)"
        outdated = await conn.execute(
            sa.text(
                f"UPDATE records SET is_current = {false} "
                f"WHERE id BETWEEN :lo AND :hi AND batch_id = :b AND {cur} AND EXISTS ("
                f" SELECT 1 FROM records o JOIN batches ob ON ob.id = o.batch_id"
                f" WHERE o.department = :d AND o.number = records.number AND o.{cur} AND o.batch_id <> :b"
                f" AND {o_sub} = {r_sub} AND ({quarter} > :q OR ({quarter} = :q AND {batch} > :b)))"
            ),
            params,
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
        cur, sub = _current(self._sqlite), _sub_key(department, "n")
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


# --- The import's statements ---------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _current(sqlite: bool) -> str:
    """`records.is_current` as the partial lookup indexes spell it (see `schema`), so that they are used."""
    return "is_current = 1" if sqlite else "is_current"


def _sub_key(department: Department, alias: str) -> str:
    """SQL for what, besides the number, tells a department's certificates apart (`models.SUB_KEY_FIELDS`)."""
    fields = SUB_KEY_FIELDS.get(department, ())
    return f"COALESCE({', '.join(f'{alias}.{f}' for f in fields)}, '')" if fields else "''"


async def _live_batch(conn: AsyncConnection, department: Department, sha256: str, quarter: str) -> int | None:
    """The id of the department's batch with this content that is imported or being imported for `quarter` or a
    newer quarter (the same quarter's first), if any: importing the content for `quarter` would add nothing."""
    query = (
        sa.select(batches.c.id)
        .where(
            batches.c.department == department.value,
            batches.c.sha256 == sha256,
            batches.c.status != "rejected",
            batches.c.quarter >= quarter,
        )
        .order_by((batches.c.quarter == quarter).desc(), batches.c.id)
        .limit(1)
    )
    return (await conn.execute(query)).scalar()


async def _has_other_batches(conn: AsyncConnection, department: Department, batch_id: int) -> bool:
    query = (
        sa.select(batches.c.id)
        .where(batches.c.department == department.value, batches.c.status.in_(LIVE), batches.c.id != batch_id)
        .limit(1)
    )
    return (await conn.execute(query)).first() is not None


async def _insert_batch(conn: AsyncConnection, batch: IncomingBatch, *, status: str) -> int:
    result = await conn.execute(batches.insert().returning(batches.c.id), batch.row(status))
    return int(result.scalar_one())


async def _finish_batch(conn: AsyncConnection, report: BatchReport) -> None:
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


# --- The chunks and their tally ------------------------------------------------------------------


async def _copy_upload(
    conn: AsyncConnection,
    upload: Upload,
    tally: _Tally,
    batch_id: int,
    department: Department,
    *,
    partial: bool,
    progress: ProgressCallback | None,
) -> None:
    """PostgreSQL: the upload's records into this batch through ONE `COPY ... (FORMAT csv)`, fed chunk by chunk
    while the next chunk is read and validated in a worker thread (`_prefetched_chunks`), so that the server
    stores one chunk while this process validates the next. Each chunk's records become CSV in polars
    (`_csv_of`): the columnar lane's rows never become Python objects. Counts go to `tally` as `_import`'s
    SQLite loop does; once a row is rejected (and not `partial`) no more rows are sent, the file still read to
    the end for the report.

    A file that breaks part-way (`UnreadableFile`) ends the COPY cleanly (an aborted COPY would abort the
    transaction, and the report's queries after it) and is raised after it; `_import` then rolls back."""
    broken: list[UnreadableFile] = []

    async def blocks() -> AsyncIterator[bytes]:
        try:
            async for chunk in _prefetched_chunks(upload):
                tally.add(chunk)
                if chunk.valid and (partial or not tally.rows_rejected):
                    yield await asyncio.to_thread(_csv_of, chunk, batch_id, department)
                if progress is not None:
                    progress(tally.rows_total, chunk.bytes_done, upload.source.bytes_total)
        except UnreadableFile as e:
            broken.append(e)

    raw = await conn.get_raw_connection()
    await raw.driver_connection.copy_to_table(  # type: ignore[union-attr]
        "records", source=blocks(), columns=[*_COPY_COLUMNS], format="csv"
    )
    if broken:
        raise broken[0]


_COPY_COLUMNS = ("batch_id", "department", "is_current", *RECORD_COLUMNS, "frame_key")


def _csv_of(chunk: Chunk, batch_id: int, department: Department) -> bytes:
    """A chunk's records as CSV rows of `_COPY_COLUMNS` for COPY (an empty field is NULL: records hold no
    empty texts, `validate` stores those as NULL)."""
    import polars as pl

    frame = chunk.frame_rows()
    keys = keys_of(frame.select(key_text(department.value)).to_series().to_list())
    out = frame.select(
        pl.lit(batch_id, pl.Int64).alias("batch_id"),
        pl.lit(department.value).alias("department"),
        pl.lit("t").alias("is_current"),
        *RECORD_COLUMNS,
        pl.Series("frame_key", keys, dtype=pl.Int64),
    )
    buffer = io.BytesIO()
    out.write_csv(buffer, include_header=False)
    return buffer.getvalue()


#: Where a record tuple holds what `frame_key.frame_keys` reads (number, category, operation item, holder's ID).
_KEY_COLUMNS = tuple(RECORD_COLUMNS.index(c) for c in ("number", "category", "operation_item", "holder_id_number"))


def _frame_keys(department: Department, rows: list[tuple[Any, ...]]) -> list[int]:
    """`records.frame_key` of each record tuple (see `aggregator.records.frame_key`)."""
    return frame_keys(department.value, *(map(itemgetter(i), rows) for i in _KEY_COLUMNS))


async def _prefetched_chunks(upload: Upload) -> AsyncIterator[Chunk]:
    """The upload's validated chunks, each read and validated in a worker thread (the event loop keeps serving
    lookups and progress meanwhile), the next one already while the caller stores the current one. The worker is
    always awaited before this ends (the file is closed after it). On SQLite too since the columnar lane: polars
    works outside the GIL while the inserts run (1,000,000 rows: 17.6 -> 14.3-16.1 s; row by row 24.6 -> 23.8 s)."""
    iterator: Iterator[Chunk] = upload.chunks(CHUNK_ROWS)
    done = object()
    pending: asyncio.Future[Any] = asyncio.ensure_future(asyncio.to_thread(next, iterator, done))
    try:
        while True:
            chunk = await pending
            if chunk is done:
                return
            pending = asyncio.ensure_future(asyncio.to_thread(next, iterator, done))
            yield chunk
    finally:
        if not pending.done():
            await asyncio.wait([pending])
        if not pending.cancelled():
            pending.exception()  # retrieved: an error of a chunk nobody will read is not "never retrieved"


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
        self, batch: IncomingBatch, batch_id: int, status: BatchStatus, *, superseded: int, outdated: int
    ) -> BatchReport:
        """The report of the imported batch: problems and rejected rows in line order."""
        self.problems.sort(key=lambda p: p.line)
        self.rejected_rows.sort(key=lambda r: r.line)
        return batch.report(
            batch_id,
            status,
            rows_total=self.rows_total,
            rows_rejected=self.rows_rejected,
            problems=self.problems,
            problems_total=self.problems_total,
            rejected_rows=self.rejected_rows,
            upload=self.upload,
            superseded=superseded,
            outdated=outdated,
        )
