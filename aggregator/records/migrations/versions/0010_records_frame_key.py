"""records.frame_key: each record's place in a campaign's sampling frame (issue 14).

Adds the column (0 by default, so adding it is instant on both databases) and computes it for the rows already
there, in batches of 20,000 by id, with `aggregator.records.frame_key` (the importer writes it for new rows).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aggregator.records.frame_key import frame_key, sub_key

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 20_000


def upgrade() -> None:
    op.add_column("records", sa.Column("frame_key", sa.BigInteger(), nullable=False, server_default="0"))
    bind = op.get_bind()
    read = sa.text(
        "SELECT id, department, number, category, operation_item, holder_id_number FROM records "
        "WHERE id > :after ORDER BY id LIMIT :n"
    )
    write = sa.text("UPDATE records SET frame_key = :k WHERE id = :i")
    after = 0
    while rows := bind.execute(read, {"after": after, "n": BATCH}).all():
        keys = [
            {"i": r.id, "k": frame_key(r.department, r.number, sub_key(r.department, r.category, r.operation_item),
                                       r.holder_id_number)}  # fmt: skip
            for r in rows
        ]
        bind.execute(write, keys)
        after = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.drop_column("frame_key")
