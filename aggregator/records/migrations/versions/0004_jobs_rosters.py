"""Jobs, employers' rosters, their runs, monitoring and events (issue 11).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),  # random hex, unguessable
        sa.Column("kind", sa.String(32), nullable=False),  # roster_verify | campaign_run | ...
        sa.Column("organisation", sa.String(200), nullable=False),  # the owning key's label
        sa.Column("created_by", sa.String(32), nullable=False),  # key id
        sa.Column("subject", sa.String(64), nullable=True),  # the roster / campaign it works on
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("done", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("counts", sa.JSON(), nullable=True),  # outcome -> count, when finished
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'finished', 'failed', 'cancelled')", name="ck_jobs_status"
        ),
        sa.Index("ix_jobs_subject", "subject", "created_at"),
        sa.Index("ix_jobs_status_lease", "status", "lease_until"),
    )
    op.create_table(
        "rosters",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("organisation", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_by", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("monitor", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("monitor_every_h", sa.Integer(), nullable=False, server_default="24"),
        sa.Column("expiry_warn_days", sa.JSON(), nullable=False),  # e.g. [90, 30, 7]
        sa.Column("inconclusive_after_days", sa.Integer(), nullable=False, server_default="3"),
        sa.Index("ix_rosters_organisation", "organisation", "created_at"),
    )
    op.create_table(
        "roster_members",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("roster_id", sa.String(32), sa.ForeignKey("rosters.id", ondelete="CASCADE"), nullable=False),
        sa.Column("ref", sa.String(64), nullable=False),  # the employer's own reference (工号), or the line
        sa.Column("number", sa.String(64), nullable=False),  # normalised
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("id_number", sa.String(18), nullable=True),
        sa.Column("team", sa.String(200), nullable=True),  # 部门/班组
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        # monitoring: when this member is due next, and what the last check said (the baseline events compare with)
        sa.Column("due_at", sa.BigInteger(), nullable=True),  # epoch seconds of the next check; None: not monitored
        sa.Column("state", sa.JSON(), nullable=True),
        sa.Column("inconclusive_since", sa.DateTime(timezone=True), nullable=True),
        sa.Index("uq_roster_members_ref", "roster_id", "ref", unique=True),
        sa.Index("ix_roster_members_due", "due_at"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "roster_results",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("member_id", _Id, primary_key=True),
        sa.Column("verdict", sa.String(32), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),  # definitive | inconclusive | error
        sa.Column("result", sa.JSON(), nullable=False),  # the row as exported (certificates, name match, reason)
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "roster_events",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("roster_id", sa.String(32), nullable=True),  # None for an organisation's own events (webhooks)
        sa.Column("organisation", sa.String(200), nullable=False),
        sa.Column("member_ref", sa.String(64), nullable=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("number", sa.String(64), nullable=True),
        sa.Column("department", sa.String(16), nullable=True),
        sa.Column("old", sa.String(32), nullable=True),
        sa.Column("new", sa.String(32), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Index("ix_roster_events_roster", "roster_id", "id"),
        sa.Index("ix_roster_events_organisation", "organisation", "id"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("roster_events")
    op.drop_table("roster_results")
    op.drop_table("roster_members")
    op.drop_table("rosters")
    op.drop_table("jobs")
