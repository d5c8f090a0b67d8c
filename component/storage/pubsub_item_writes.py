"""The SQL that writes a pubsub node's cached items: upsert, retract, restamp, purge,
replace and trim, for one node or (the group commit) several nodes in one statement.

Functions take an ``AsyncSession`` and plain values and do not commit: the caller's
transaction decides what is atomic (``replace_items`` together with the state change
that follows it, for instance). The search index is written in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import JSON, RowMapping, bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningInsert

from component.storage.convert import item_record, to_db
from component.storage.pubsub_tables import (
    ITEM_COLUMNS,
    ITEMS,
    NEWEST_FIRST,
    chunks,
    insert_for,
    pairs_in,
    rowcount,
)
from component.storage.records import ItemInput, ItemRecord
from component.storage.search_repo import index_items
from component.storage.timing import observed
from component.turns import in_turns


async def _upsert(
    session: AsyncSession, node_id: int, items: Sequence[ItemInput], now: datetime
) -> int:
    rows = _rows(node_id, items, now)
    await _upsert_rows(session, rows, whole=False)
    return len(rows)


def _rows(node_id: int, items: Sequence[ItemInput], now: datetime) -> list[dict[str, Any]]:
    # One row per item id, at its first position with its last content: what applying
    # the items one after another gives. PostgreSQL also refuses a multi-row ON
    # CONFLICT DO UPDATE that touches one row twice, which executemany batches can be.
    latest: dict[str, ItemInput] = {}
    for item in items:
        latest[item.item_id] = item
    return [
        {
            "node_id": node_id,
            "item_id": item.item_id,
            "publisher": item.publisher,
            "data": item.data,
            "parsed_value": item.parsed,
            "created": now if item.created is None else to_db(item.created),
            "updated": now,
        }
        for item in latest.values()
    ]


@cache
def _upsert_statement(dialect: str, whole: bool) -> ReturningInsert[Any]:
    """The upsert of item rows, returning each row as stored (whole) or its keys:
    built once per dialect, since building it (and its cache key) was 5% of Herald's
    CPU applying notifications."""
    # The column's JSON type would store None as the JSON text 'null'; no parsed form
    # is stored as SQL NULL instead, so that queries can tell "not parsed" with IS NULL.
    insert = insert_for(dialect, ITEMS).values(
        parsed=bindparam("parsed_value", type_=JSON(none_as_null=True))
    )
    upsert = insert.on_conflict_do_update(
        index_elements=["node_id", "item_id"],
        # created is left alone: an update keeps the item's place in the node.
        set_={
            "data": insert.excluded.data,
            "parsed": insert.excluded.parsed,
            "publisher": insert.excluded.publisher,
            "updated": insert.excluded.updated,
        },
    )
    keys = (ITEMS.c.node_id, ITEMS.c.item_id, ITEMS.c.id)
    columns = (ITEMS.c.node_id, *ITEM_COLUMNS) if whole else keys
    if dialect == "sqlite":
        # One multi-row statement, which SQLite inserts in the order given. (Asked in
        # parameter order, SQLAlchemy sent one statement per row: an upsert has no
        # sentinel to sort by on SQLite.)
        return upsert.returning(*columns)
    # PostgreSQL: one statement that orders its VALUES by a sentinel.
    return upsert.returning(*columns, sort_by_parameter_order=True)


async def _upsert_rows(
    session: AsyncSession, rows: list[dict[str, Any]], *, whole: bool
) -> list[RowMapping]:
    """Write the rows and index them; each row as stored, in the order given (whole),
    or nothing."""
    # Rows are sent in order, so items that share a `created` get increasing ids in
    # the order given: the tie-break of the chronological order. In turns: a big
    # node's rows (their JSON, their search documents) would hold the event loop.
    # The index is given the row ids written: looking each item up instead ran a
    # plan made while the table was nearly empty (a sequential scan) for every row,
    # quadratic in a big node's sync on PostgreSQL.
    statement = _upsert_statement(session.get_bind().dialect.name, whole)
    stored: list[RowMapping] = []
    async for some in in_turns(rows):
        result = await session.execute(statement, some)
        # Matched by key: SQLite returns the rows in no set order.
        found = {(m["node_id"], m["item_id"]): m for m in result.mappings()}
        written = [found[row["node_id"], row["item_id"]] for row in some]
        await index_items(session, some, [m["id"] for m in written])  # never lags
        if whole:
            stored += written
    return stored


async def _delete_ids(session: AsyncSession, node_id: int, item_ids: Iterable[str]) -> int:
    removed = 0
    for chunk in chunks(list(dict.fromkeys(item_ids))):
        result = await session.execute(
            delete(ITEMS).where(ITEMS.c.node_id == node_id, ITEMS.c.item_id.in_(chunk))
        )
        removed += rowcount(result)
    return removed


@observed
async def upsert_items(
    session: AsyncSession, node_id: int, items: Sequence[ItemInput], now: datetime
) -> int:
    """Store items (oldest first), replacing same-id ones; return how many distinct ids.

    A new item gets ``created`` from its input, or ``now``; an existing one keeps its
    ``created`` and its place, and takes the new data, parsed form and publisher, with
    ``updated = now``. The raw XML is stored exactly as given.
    """
    return await _upsert(session, node_id, items, to_db(now))


@observed
async def upsert_items_of_nodes(
    session: AsyncSession, items: Mapping[int, Sequence[ItemInput]], now: datetime
) -> dict[int, list[ItemRecord]]:
    """upsert_items for several nodes in one statement (node id -> its items, oldest
    first); return each node's rows as stored (what a read of them would give, without
    the read)."""
    now = to_db(now)
    rows = [row for node_id, some in items.items() for row in _rows(node_id, some, now)]
    out: dict[int, list[ItemRecord]] = {node_id: [] for node_id in items}
    for stored in await _upsert_rows(session, rows, whole=True):
        out[stored["node_id"]].append(item_record(stored))
    return out


@observed
async def retract_items(session: AsyncSession, node_id: int, item_ids: Iterable[str]) -> int:
    """Delete these items of the node; return how many existed."""
    return await _delete_ids(session, node_id, item_ids)


@observed
async def retract_items_of_nodes(session: AsyncSession, ids: Mapping[int, Iterable[str]]) -> int:
    """retract_items for several nodes in one statement; return how many existed."""
    pairs = list(dict.fromkeys((node_id, i) for node_id, some in ids.items() for i in some))
    removed = 0
    for chunk in chunks(pairs):
        result = await session.execute(
            delete(ITEMS).where(pairs_in(ITEMS.c.node_id, ITEMS.c.item_id, chunk))
        )
        removed += rowcount(result)
    return removed


@observed
async def restamp_items(session: AsyncSession, node_id: int, item_ids: Iterable[str]) -> int:
    """Move these items to the place of their last publication (created = updated),
    for services that treat a republished item as the newest; return how many."""
    moved = 0
    for chunk in chunks(list(dict.fromkeys(item_ids))):
        result = await session.execute(
            update(ITEMS)
            .where(ITEMS.c.node_id == node_id, ITEMS.c.item_id.in_(chunk))
            .values(created=ITEMS.c.updated)
        )
        moved += rowcount(result)
    return moved


@observed
async def purge_items(session: AsyncSession, node_id: int) -> int:
    """Delete every item of the node; return how many there were."""
    result = await session.execute(delete(ITEMS).where(ITEMS.c.node_id == node_id))
    return rowcount(result)


@observed
async def replace_items(
    session: AsyncSession, node_id: int, items: Sequence[ItemInput], now: datetime
) -> int:
    """Make the node hold exactly ``items`` (oldest first): the end of a full re-fetch.

    Items missing from the new set are deleted; the others are upserted as by
    ``upsert_items``, so surviving items keep their ``created`` and their place. Runs in
    the caller's transaction and does not commit: commit it with the state change.
    Returns how many items were deleted.
    """
    now = to_db(now)
    wanted = {item.item_id for item in items}
    existing = await session.execute(select(ITEMS.c.item_id).where(ITEMS.c.node_id == node_id))
    stale = [item_id for item_id in existing.scalars() if item_id not in wanted]
    removed = await _delete_ids(session, node_id, stale)
    await _upsert(session, node_id, items, now)
    return removed


@observed
async def trim_items(session: AsyncSession, node_id: int, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` items (max_items_per_node); return the ids
    that went (so that a memory copy can drop them too)."""
    if keep < 0:
        raise ValueError("keep must not be negative")
    beyond = (
        select(ITEMS.c.id).where(ITEMS.c.node_id == node_id).order_by(*NEWEST_FIRST).offset(keep)
    )
    result = await session.execute(
        delete(ITEMS).where(ITEMS.c.id.in_(beyond)).returning(ITEMS.c.item_id)
    )
    return list(result.scalars())
