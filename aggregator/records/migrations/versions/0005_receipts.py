"""Signed receipts and signing keys (issue 12).

- `signing_keys`: every public key that ever signed a receipt, served at /.well-known/jwks.json (the private
  keys live outside the database: see aggregator/receipts/keys.py).
- `receipts`: each receipt issued (the signed document, who asked, when it lapses, whether superseded since).
- `receipt_certificates`: the certificates each receipt shows and the status it showed, indexed by number, so
  that a later lookup finding one suspended or revoked supersedes those receipts in one statement.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("public_jwk", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "receipts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("token", sa.Text(), nullable=False),
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("number", sa.String(64), nullable=False),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("superseded_by", sa.String(200), nullable=True),
    )
    op.create_index("ix_receipts_number", "receipts", ["number", "issued_at"])
    op.create_table(
        "receipt_certificates",
        sa.Column("receipt_id", sa.String(32), sa.ForeignKey("receipts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.String(64), nullable=False),
        sa.Column("cert_key", sa.String(300), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("receipt_id", "cert_key", name="pk_receipt_certificates"),
    )
    op.create_index("ix_receipt_certificates_number", "receipt_certificates", ["number", "receipt_id"])


def downgrade() -> None:
    op.drop_index("ix_receipt_certificates_number", table_name="receipt_certificates")
    op.drop_table("receipt_certificates")
    op.drop_index("ix_receipts_number", table_name="receipts")
    op.drop_table("receipts")
    op.drop_table("signing_keys")
