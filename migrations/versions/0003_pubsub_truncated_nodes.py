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
    with op.batch_alter_table("pubsub_nodes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("truncated", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("upstream_max_items", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pubsub_nodes", schema=None) as batch_op:
        batch_op.drop_column("upstream_max_items")
        batch_op.drop_column("truncated")
