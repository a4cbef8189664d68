"""The last live answers (history of what each live source said) and the names tried per certificate.

- `live_answers`: one row each time a live source's definitive answer to a query changes (not every fetch);
  the newest row per (source, query) is the stale answer used when the source is unavailable, and the rows
  together are the history a lookup "as of a past date" reads (see aggregator/records/live.py).
- `name_checks`: which distinct names (as salted digests, never the name itself) a caller tried against a
  certificate on a day, so the daily budget holds across every instance (see aggregator/web/namebudget.py).
- `audit_log.name_check`: what happened to the name of a lookup (match, mismatch, not_checked ...).
- `deployment_secrets`: random keys every instance shares, made by whichever asks first (the key of the
  name digests above).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "live_answers",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("query_digest", sa.String(64), nullable=False),
        sa.Column("number", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("content_digest", sa.String(64), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_live_answers_source_query", "live_answers", ["source", "query_digest", "id"])
    op.create_index("ix_live_answers_number", "live_answers", ["number", "first_seen"])
    op.create_table(
        "name_checks",
        sa.Column("caller", sa.String(80), nullable=False),
        sa.Column("number", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("name_digest", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("caller", "number", "day", "name_digest", name="pk_name_checks"),
    )
    op.create_index("ix_name_checks_day", "name_checks", ["day"])
    op.create_table(
        "deployment_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("name_check", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("name_check")
    op.drop_table("deployment_secrets")
    op.drop_index("ix_name_checks_day", table_name="name_checks")
    op.drop_table("name_checks")
    op.drop_index("ix_live_answers_number", table_name="live_answers")
    op.drop_index("ix_live_answers_source_query", table_name="live_answers")
    op.drop_table("live_answers")
