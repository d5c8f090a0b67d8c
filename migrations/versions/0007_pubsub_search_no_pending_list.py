"""pubsub search: the PostgreSQL index takes entries at once (GIN fastupdate off)

With fast update, a GIN index keeps new entries in a pending list that every search
scans until a vacuum (or a list past gin_pending_list_limit) merges it, and a search
that meets the merge waits for it: after a big node's sync, thousands of entries
stayed pending. Writes into the index cost a little more instead. What is pending
now is merged. SQLite's FTS5 index has no such list: nothing to do there.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 18:05:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_pubsub_search_document"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER INDEX {INDEX} SET (fastupdate = off)")
        op.execute(f"SELECT gin_clean_pending_list('{INDEX}')")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER INDEX {INDEX} RESET (fastupdate)")
