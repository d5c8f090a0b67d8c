"""pubsub cache administration: request log, last sync and last error of nodes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # AUTOINCREMENT on SQLite: a running Herald reads the requests after the last id it
    # saw, so an id must never be handed out twice, even once older rows are pruned.
    op.create_table(
        "pubsub_admin_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("service", sa.String(length=1023), nullable=True),
        sa.Column("node", sa.String(length=1023), nullable=True),
        sa.Column("node_id", sa.Integer(), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pubsub_admin_requests")),
        sqlite_autoincrement=True,
    )
    # Plain ADD COLUMN (nullable), no table rebuild on SQLite: see 0003.
    op.add_column("pubsub_nodes", sa.Column("last_synced", sa.DateTime(timezone=True)))
    op.add_column("pubsub_nodes", sa.Column("last_error", sa.String(length=1023)))


def downgrade() -> None:
    # Dropping columns rebuilds the table on SQLite; migrate.py runs it with foreign
    # keys off, so the rebuild cannot cascade into pubsub_items.
    with op.batch_alter_table("pubsub_nodes", schema=None) as batch_op:
        batch_op.drop_column("last_error")
        batch_op.drop_column("last_synced")
    op.drop_table("pubsub_admin_requests")
