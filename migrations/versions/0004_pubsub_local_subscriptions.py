"""pubsub local subscriptions: held by Herald, one upstream subscription per node

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 11:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pubsub_local_subscriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=3071), nullable=False),
        sa.Column("service", sa.String(length=1023), nullable=False),
        sa.Column("node", sa.String(length=1023), nullable=False),
        sa.Column("subscriber", sa.String(length=3071), nullable=False),
        sa.Column("subscriber_bare", sa.String(length=3071), nullable=False),
        sa.Column("subid", sa.String(length=255), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pubsub_local_subscriptions")),
        sa.UniqueConstraint("subid", name=op.f("uq_pubsub_local_subscriptions_subid")),
    )
    op.create_index(
        "ix_pubsub_local_subscriptions_service_node",
        "pubsub_local_subscriptions",
        ["service", "node"],
    )
    op.create_index(
        "ix_pubsub_local_subscriptions_address_bare",
        "pubsub_local_subscriptions",
        ["address", "subscriber_bare"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_pubsub_local_subscriptions_address_bare", table_name="pubsub_local_subscriptions"
    )
    op.drop_index(
        "ix_pubsub_local_subscriptions_service_node", table_name="pubsub_local_subscriptions"
    )
    op.drop_table("pubsub_local_subscriptions")
