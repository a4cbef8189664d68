"""Secrets waiting to be shown once: the employer page's webhook secret after POST/redirect/GET.

A form that makes a secret (adding a webhook, rotating its secret) keeps it here for a few minutes under the
digest of a random token, for the key and the browser that made it, and redirects to a page that shows it and
deletes the row (see aggregator/web/onetime.py). In the database, so that the page after the redirect may be
served by any instance.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pending_secrets",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("browser_sha256", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Index("ix_pending_secrets_expires", "expires_at"),
    )


def downgrade() -> None:
    op.drop_table("pending_secrets")
