"""pubsub search: full-text index of cached items (FTS5 on SQLite, tsvector+GIN on PG)

Creates the index and fills it from the items already cached, so a node that was in
the cache before the upgrade is searchable at once.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 11:00:00
"""

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from component.search_text import document

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 1000

_INSERT = {
    "sqlite": "INSERT INTO pubsub_search (rowid, document) VALUES (:id, :document)",
    "postgresql": (
        "INSERT INTO pubsub_search (item_pk, document) "
        "VALUES (:id, to_tsvector('simple', :document))"
    ),
}


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    if dialect == "sqlite":
        op.execute("CREATE VIRTUAL TABLE pubsub_search USING fts5(document)")
        # Every deleted item leaves the index: retracts, trims, purges, and the
        # ON DELETE CASCADE of a node's deletion (SQLite fires triggers for it).
        op.execute(
            "CREATE TRIGGER pubsub_search_forget AFTER DELETE ON pubsub_items "
            "BEGIN DELETE FROM pubsub_search WHERE rowid = old.id; END"
        )
    else:
        op.execute(
            "CREATE TABLE pubsub_search ("
            "item_pk INTEGER PRIMARY KEY REFERENCES pubsub_items (id) ON DELETE CASCADE, "
            "document TSVECTOR NOT NULL)"
        )
        op.execute("CREATE INDEX ix_pubsub_search_document ON pubsub_search USING GIN (document)")
    _index_existing(bind, dialect)


def _index_existing(bind: sa.Connection, dialect: str) -> None:
    last = 0
    insert = sa.text(_INSERT[dialect])
    while True:
        rows = bind.execute(
            sa.text(
                "SELECT id, data, parsed FROM pubsub_items WHERE id > :last ORDER BY id LIMIT :n"
            ),
            {"last": last, "n": _BATCH},
        ).all()
        if not rows:
            return
        values = [{"id": r[0], "document": document(r[1], _parsed(r[2]))} for r in rows]
        bind.execute(insert, values)
        last = rows[-1][0]


def _parsed(value: Any) -> dict[str, Any] | None:
    # SQLite hands JSON back as text; psycopg decodes it.
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else None


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS pubsub_search_forget")
    op.execute("DROP TABLE pubsub_search")
