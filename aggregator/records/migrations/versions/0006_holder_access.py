"""As-of reads and the holder's view: attempt limits (issue 12).

- `holder_attempts`: attempts to open the holder's view per scope (client IP, certificate) and fixed window.
- `holder_lockouts`: scopes locked out after going over their limit, until when.
- `public_lookup_days`: anonymous public lookups per number and UTC day (what a holder sees of the public).
As-of reads need no table of their own: they read `batches`, `records` and `live_answers`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "holder_attempts",
        sa.Column("scope", sa.String(120), nullable=False),
        sa.Column("window", sa.String(20), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "window", name="pk_holder_attempts"),
    )
    op.create_index("ix_holder_attempts_expires_at", "holder_attempts", ["expires_at"])
    op.create_table(
        "holder_lockouts",
        sa.Column("scope", sa.String(120), primary_key=True),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "public_lookup_days",
        sa.Column("number", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("number", "day", name="pk_public_lookup_days"),
    )


def downgrade() -> None:
    op.drop_table("public_lookup_days")
    op.drop_table("holder_lockouts")
    op.drop_index("ix_holder_attempts_expires_at", table_name="holder_attempts")
    op.drop_table("holder_attempts")
