"""The records tables as SQLAlchemy Core metadata: what queries are written against.

The database itself is created and upgraded by the Alembic migrations in `migrations/` (0001 creates
exactly these tables); `tests/records/test_store.py` checks that the two agree.

`records.is_current` marks the one row per certificate that lookups see: the row from the newest quarter
of its department. The lookup indexes are partial (`WHERE is_current`), so history rows cost no index
space; their predicates are written in each dialect's own spelling, which is exactly how SQLAlchemy renders
`records.c.is_current` in a WHERE clause (SQLite only uses a partial index when the query repeats its
predicate term for term).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

BATCH_STATUSES = ("importing", "imported", "partial", "rejected")
CURRENT_SQLITE = sa.text("is_current = 1")
CURRENT_POSTGRESQL = sa.text("is_current")

# SQLite needs a plain INTEGER primary key to alias the rowid; PostgreSQL gets a bigint identity.
_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("department", sa.String(16), nullable=False),
    sa.Column("quarter", sa.String(6), nullable=False),
    sa.Column("file_name", sa.Text(), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("uploaded_by", sa.Text(), nullable=False),
    sa.Column("rows_total", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("rows_imported", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("rows_rejected", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("report", sa.JSON(), nullable=True),
    sa.CheckConstraint(
        "status IN ('importing', 'imported', 'partial', 'rejected')", name="ck_batches_status"
    ),
    sa.Index(
        "uq_batches_department_sha256",
        "department",
        "sha256",
        unique=True,
        sqlite_where=sa.text("status <> 'rejected'"),
        postgresql_where=sa.text("status <> 'rejected'"),
    ),
    sa.Index("ix_batches_department_quarter", "department", "quarter", "id"),
    sqlite_autoincrement=True,
)

records = sa.Table(
    "records",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("batch_id", _Id, sa.ForeignKey("batches.id", ondelete="CASCADE"), nullable=False),
    sa.Column("department", sa.String(16), nullable=False),
    sa.Column("number", sa.String(64), nullable=False),
    sa.Column("holder_id_number", sa.String(18), nullable=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("issuer", sa.Text(), nullable=True),
    sa.Column("holder_name", sa.Text(), nullable=True),
    sa.Column("gender", sa.String(2), nullable=True),
    sa.Column("category", sa.Text(), nullable=True),
    sa.Column("operation_item", sa.Text(), nullable=True),
    sa.Column("items", sa.Text(), nullable=True),  # SAMR 持证项目 codes as a JSON array
    sa.Column("level", sa.Text(), nullable=True),
    sa.Column("issued_on", sa.Date(), nullable=True),
    sa.Column("valid_from", sa.Date(), nullable=True),
    sa.Column("valid_until", sa.Date(), nullable=True),
    sa.Column("next_review_on", sa.Date(), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("status_text", sa.Text(), nullable=True),
    sa.Column("row_number", sa.Integer(), nullable=False),
    sa.Column("is_current", sa.Boolean(), nullable=False, server_default=sa.false()),
)

# What each live source last said about a query, one row per change (migration 0003; see `records.live`).
live_answers = sa.Table(
    "live_answers",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("query_digest", sa.String(64), nullable=False),  # sha256 of the query (it may hold a name)
    sa.Column("number", sa.String(64), nullable=False),  # the normalised number asked about
    sa.Column("outcome", sa.String(16), nullable=False),  # found | not_found
    sa.Column("content_digest", sa.String(64), nullable=False),  # what the answer said, to tell a change
    sa.Column("result", sa.Text(), nullable=False),  # the SourceResult as JSON
    sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),  # first fetched with this content
    sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),  # last confirmed
    sa.Index("ix_live_answers_source_query", "source", "query_digest", "id"),
    sa.Index("ix_live_answers_number", "number", "first_seen"),
    sqlite_autoincrement=True,
)

#: The lookup indexes, created by migration 0001 (and rebuilt after a bulk load into an empty table).
LOOKUP_INDEXES = (
    sa.Index(
        "ix_records_current_number",
        records.c.department,
        records.c.number,
        sqlite_where=CURRENT_SQLITE,
        postgresql_where=CURRENT_POSTGRESQL,
    ),
    sa.Index(
        "ix_records_current_holder",
        records.c.department,
        records.c.holder_id_number,
        sqlite_where=CURRENT_SQLITE,
        postgresql_where=CURRENT_POSTGRESQL,
    ),
)
