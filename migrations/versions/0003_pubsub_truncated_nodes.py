"""pubsub nodes: truncated flag and upstream max_items

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 00:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN, on SQLite too (DEFAULT 0 NOT NULL is allowed there).
    # In batch mode the SQL-expression default made Alembic rebuild pubsub_nodes on
    # SQLite (copy, drop, rename), which is slower and, with foreign keys on, deleted
    # every pubsub item through ON DELETE CASCADE. The schema is the same either way.
    op.add_column(
        "pubsub_nodes",
        sa.Column("truncated", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("pubsub_nodes", sa.Column("upstream_max_items", sa.Integer(), nullable=True))


def downgrade() -> None:
    # Dropping columns rebuilds the table on SQLite; migrate.py runs it with foreign
    # keys off, so the rebuild cannot cascade into pubsub_items.
    with op.batch_alter_table("pubsub_nodes", schema=None) as batch_op:
        batch_op.drop_column("upstream_max_items")
        batch_op.drop_column("truncated")
