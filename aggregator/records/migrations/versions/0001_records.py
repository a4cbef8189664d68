"""Uploaded department records: batches and records.

Revision ID: 0001
Revises:
Create Date: 2026-01-20
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "batches",
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
        sa.CheckConstraint("status IN ('importing', 'imported', 'partial', 'rejected')", name="ck_batches_status"),
        sqlite_autoincrement=True,
    )
    # The re-import rule: one live batch per department and file content (a rejected one may be retried).
    op.create_index(
        "uq_batches_department_sha256",
        "batches",
        ["department", "sha256"],
        unique=True,
        sqlite_where=sa.text("status <> 'rejected'"),
        postgresql_where=sa.text("status <> 'rejected'"),
    )
    op.create_index("ix_batches_department_quarter", "batches", ["department", "quarter", "id"])

    op.create_table(
        "records",
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
        sa.Column("items", sa.Text(), nullable=True),
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
    # Lookups see current rows only; the predicates are spelled as SQLAlchemy renders `records.c.is_current`.
    for name, column in (("ix_records_current_number", "number"), ("ix_records_current_holder", "holder_id_number")):
        op.create_index(
            name,
            "records",
            ["department", column],
            sqlite_where=sa.text("is_current = 1"),
            postgresql_where=sa.text("is_current"),
        )


def downgrade() -> None:
    op.drop_index("ix_records_current_holder", table_name="records")
    op.drop_index("ix_records_current_number", table_name="records")
    op.drop_table("records")
    op.drop_index("ix_batches_department_quarter", table_name="batches")
    op.drop_index("uq_batches_department_sha256", table_name="batches")
    op.drop_table("batches")
