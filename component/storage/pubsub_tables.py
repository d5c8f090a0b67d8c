"""What the pubsub repository modules share: the tables, the item orderings, and
small statement helpers (the dialect's INSERT, IN-list chunks, pair lookups, row
counts).

Ordering: "chronological" is by ``created``, then by insertion order (the row id).
An update keeps both, so a republished item keeps its place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final, TypeVar

from sqlalchemy import ColumnElement, Table, and_, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from component.storage.models import Base

NODES: Final[Table] = Base.metadata.tables["pubsub_nodes"]
ITEMS: Final[Table] = Base.metadata.tables["pubsub_items"]
ITEM_COLUMNS: Final = (
    ITEMS.c.id,
    ITEMS.c.item_id,
    ITEMS.c.data,
    ITEMS.c.parsed,
    ITEMS.c.publisher,
    ITEMS.c.created,
    ITEMS.c.updated,
)
CHRONOLOGICAL: Final = (ITEMS.c.created.asc(), ITEMS.c.id.asc())
NEWEST_FIRST: Final = (ITEMS.c.created.desc(), ITEMS.c.id.desc())
# Bound parameters per IN list: far below SQLite's (32766) and PostgreSQL's (65535) limits.
CHUNK: Final = 500

T = TypeVar("T")


def dialect_insert(session: AsyncSession, table: Table) -> sqlite.Insert | postgresql.Insert:
    """The dialect's INSERT, which is the one that knows ON CONFLICT."""
    return insert_for(session.get_bind().dialect.name, table)


def insert_for(dialect: str, table: Table) -> sqlite.Insert | postgresql.Insert:
    """The INSERT of the dialect named, which is the one that knows ON CONFLICT."""
    if dialect == "sqlite":
        return sqlite.insert(table)
    if dialect == "postgresql":
        return postgresql.insert(table)
    raise NotImplementedError(f"the pubsub cache supports SQLite and PostgreSQL, not {dialect}")


def chunks(values: Sequence[T]) -> Iterable[Sequence[T]]:
    """``values`` in slices of at most CHUNK, one IN list each."""
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def rowcount(result: Any) -> int:
    """How many rows a DML statement matched."""
    # DML through AsyncSession.execute yields a CursorResult; its rowcount is the
    # number of matched rows on both backends.
    count: int = result.rowcount
    return count


Column = ColumnElement[Any] | InstrumentedAttribute[Any]


def pairs_in(
    first: Column, second: Column, pairs: Iterable[tuple[Any, Any]]
) -> ColumnElement[bool]:
    """``(first, second) IN pairs``, written so that an index on (first, second) serves
    it: (first = a AND second IN (...)) OR ... . SQLite 3.40 scans the whole table for
    a row-value IN list (every group write read the whole cache back); PostgreSQL
    used the index either way."""
    grouped: dict[Any, list[Any]] = {}
    for a, b in pairs:
        grouped.setdefault(a, []).append(b)
    return or_(*(and_(first == a, second.in_(bs)) for a, bs in grouped.items()))
