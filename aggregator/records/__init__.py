"""Uploaded department records: the store (SQLite or PostgreSQL), the importer (CSV/XLSX/XLS) and reports.

    from aggregator.records import RecordStore

    async with await RecordStore.open() as store:
        report = await store.import_file(path, department="mem", quarter="2026Q1")
        hit = await store.find("mem", number="T110105199003071239")
"""

from __future__ import annotations

from aggregator.records.database import database_url_from_env, normalise_database_url
from aggregator.records.reads import RecordsHit
from aggregator.records.report import (
    AlreadyImported,
    BatchReport,
    BatchStatus,
    BatchSummary,
    InvalidQuarter,
    RecordsImportError,
    RejectedRow,
    RowProblem,
    parse_quarter,
)
from aggregator.records.store import RecordStore

__all__ = [
    "AlreadyImported",
    "BatchReport",
    "BatchStatus",
    "BatchSummary",
    "InvalidQuarter",
    "RecordStore",
    "RecordsHit",
    "RecordsImportError",
    "RejectedRow",
    "RowProblem",
    "database_url_from_env",
    "normalise_database_url",
    "parse_quarter",
]
