"""The audit chain, audit search indexes, sources' health history, upload freshness (issue 14).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    _audit()
    _health()  # source health history and upload freshness: the other half of issue 14


def downgrade() -> None:
    _health_down()
    _audit_down()


# --- the audit log (aggregator/audit) ---------------------------------------------------------------------------
# Rows written before this migration keep seq/prev_hash/hash NULL: they predate the chain, which starts at the
# first entry written after it (`certq audit verify` counts them apart; see aggregator/audit/chain.py).

_AUDIT_COLUMNS = (
    ("holder_id_number", sa.String(18)),
    ("job_id", sa.Text()),
    ("detail", sa.Text()),
    ("seq", sa.BigInteger()),
    ("prev_hash", sa.String(64)),
    ("hash", sa.String(64)),
)
_AUDIT_INDEXES = (
    ("uq_audit_log_seq", ["seq"], True),
    ("ix_audit_log_number_id", ["number", "id"], False),
    ("ix_audit_log_holder_id", ["holder_id_number", "id"], False),
    ("ix_audit_log_job_id", ["job_id", "id"], False),
    ("ix_audit_log_action_id", ["action", "id"], False),
)


def _audit() -> None:
    with op.batch_alter_table("audit_log") as batch:
        for name, type_ in _AUDIT_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    for name, columns, unique in _AUDIT_INDEXES:
        op.create_index(name, "audit_log", columns, unique=unique)


def _audit_down() -> None:
    for name, _columns, _unique in _AUDIT_INDEXES:
        op.drop_index(name, table_name="audit_log")
    with op.batch_alter_table("audit_log") as batch:
        for name, _type in reversed(_AUDIT_COLUMNS):
            batch.drop_column(name)


# --- the sources' health history and the same file for a newer quarter (aggregator/records/source_health.py,
# aggregator/records/ingest.py) -----------------------------------------------------------------------------------
# `source_health`: one row per source per 5-minute bucket, summed into by every instance, and `source_health_daily`
# the same per day (China time) for the 30- and 90-day bars. `batches.reaffirms`: a
# batch with no rows of its own that re-affirms another batch's rows for its quarter; the same file may therefore
# appear once per quarter (the unique index gains the quarter).

_HEALTH_LATENCY = tuple(f"lat_{i:02d}" for i in range(15))
_HEALTH_OUTCOMES = (
    "found", "not_found", "timeout", "blocked", "captcha", "rate_limited", "upstream_error", "parse_error",
    "circuit_open",
)  # fmt: skip
_NOT_REJECTED = sa.text("status <> 'rejected'")


def _health() -> None:
    def counter(name: str) -> sa.Column[int]:
        return sa.Column(name, sa.Integer(), nullable=False, server_default="0")

    for table, key in (("source_health", "bucket"), ("source_health_daily", "day")):
        op.create_table(
            table,
            sa.Column("source", sa.String(64), nullable=False),
            sa.Column(key, sa.BigInteger(), nullable=False),
            counter("calls"),
            *(counter(name) for name in _HEALTH_OUTCOMES),
            counter("openings"),
            counter("timed"),
            sa.Column("latency_ms_sum", sa.Float(), nullable=False, server_default="0"),
            *(counter(name) for name in _HEALTH_LATENCY),
            sa.PrimaryKeyConstraint("source", key, name=f"pk_{table}"),
        )
    op.add_column("batches", sa.Column("reaffirms", _Id, nullable=True))
    op.drop_index("uq_batches_department_sha256", table_name="batches")
    op.create_index(
        "uq_batches_department_quarter_sha256",
        "batches",
        ["department", "quarter", "sha256"],
        unique=True,
        sqlite_where=_NOT_REJECTED,
        postgresql_where=_NOT_REJECTED,
    )


def _health_down() -> None:
    # Batches that only re-affirm another's rows cannot exist under the older rule (one file once per department).
    op.execute("DELETE FROM batches WHERE reaffirms IS NOT NULL")
    op.drop_index("uq_batches_department_quarter_sha256", table_name="batches")
    op.create_index(
        "uq_batches_department_sha256",
        "batches",
        ["department", "sha256"],
        unique=True,
        sqlite_where=_NOT_REJECTED,
        postgresql_where=_NOT_REJECTED,
    )
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("reaffirms")
    op.drop_table("source_health_daily")
    op.drop_table("source_health")
