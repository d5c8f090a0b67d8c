"""The SQL that reads a pubsub node's cached items: ids, items by id, counts, and RSM
pages computed in SQL.

Functions take an ``AsyncSession`` and plain values and return ``ItemRecord``s in
chronological order (``component.storage.pubsub_tables``). ``page_items`` returns what
``component.paging.paginate`` returns for the node's items in that order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from component.paging import Page, PagingError, RsmRequest
from component.storage.convert import from_db, item_record
from component.storage.pubsub_tables import (
    CHRONOLOGICAL,
    ITEM_COLUMNS,
    ITEMS,
    NEWEST_FIRST,
    chunks,
    pairs_in,
)
from component.storage.records import ItemRecord, chronological
from component.storage.timing import observed
from component.turns import in_turns


@observed
async def count_items(session: AsyncSession) -> int:
    """Items held in the whole cache."""
    count: int = (await session.execute(select(func.count()).select_from(ITEMS))).scalar_one()
    return count


@observed
async def item_ids(session: AsyncSession, node_id: int) -> list[str]:
    """The node's item ids, oldest first (what disco#items on the node lists)."""
    query = select(ITEMS.c.item_id).where(ITEMS.c.node_id == node_id).order_by(*CHRONOLOGICAL)
    return list((await session.execute(query)).scalars())


@observed
async def get_items_by_ids(
    session: AsyncSession, node_id: int, ids: Iterable[str]
) -> list[ItemRecord]:
    """The node's items with these ids, oldest first; unknown ids are left out."""
    found: list[ItemRecord] = []
    for chunk in chunks(list(dict.fromkeys(ids))):
        query = select(*ITEM_COLUMNS).where(ITEMS.c.node_id == node_id, ITEMS.c.item_id.in_(chunk))
        found += [item_record(row._mapping) for row in await session.execute(query)]
    return sorted(found, key=chronological)


@observed
async def items_by_ids_of_nodes(
    session: AsyncSession, ids: Mapping[int, Iterable[str]]
) -> dict[int, list[ItemRecord]]:
    """get_items_by_ids for several nodes in one query (per chunk of pairs)."""
    pairs = list(dict.fromkeys((node_id, i) for node_id, some in ids.items() for i in some))
    found: dict[int, list[ItemRecord]] = {node_id: [] for node_id in ids}
    for chunk in chunks(pairs):
        query = select(ITEMS.c.node_id, *ITEM_COLUMNS).where(
            pairs_in(ITEMS.c.node_id, ITEMS.c.item_id, chunk)
        )
        for row in await session.execute(query):
            found[row.node_id].append(item_record(row._mapping))
    return {node_id: sorted(some, key=chronological) for node_id, some in found.items()}


@observed
async def held_ids_of_nodes(
    session: AsyncSession, ids: Mapping[int, Iterable[str]]
) -> dict[int, list[str]]:
    """Which of these ids each node holds, oldest first: get_items_by_ids without the
    payloads, for several nodes in one query (republication or new item?)."""
    wanted = {(node_id, item_id) for node_id, some in ids.items() for item_id in some}
    found: dict[int, list[tuple[datetime, int, str]]] = {node_id: [] for node_id in ids}
    every = list(dict.fromkeys(item_id for _, item_id in wanted))
    for chunk in chunks(every):
        query = select(ITEMS.c.node_id, ITEMS.c.id, ITEMS.c.created, ITEMS.c.item_id).where(
            ITEMS.c.node_id.in_(list(ids)), ITEMS.c.item_id.in_(chunk)
        )
        for row in await session.execute(query):
            if (row.node_id, row.item_id) in wanted:
                found[row.node_id].append((from_db(row.created), row.id, row.item_id))
    return {node_id: [i for _, _, i in sorted(held)] for node_id, held in found.items()}


@observed
async def count_items_of_nodes(session: AsyncSession, node_ids: Iterable[int]) -> dict[int, int]:
    """How many items each of these nodes holds (absent: none)."""
    query = (
        select(ITEMS.c.node_id, func.count())
        .where(ITEMS.c.node_id.in_(list(node_ids)))
        .group_by(ITEMS.c.node_id)
    )
    return {node_id: count for node_id, count in await session.execute(query)}


def _not_in_result_set(uid: str) -> PagingError:
    return PagingError("item-not-found", f"no item with id {uid!r} in this result set")


async def _count_and_position(
    session: AsyncSession, node_id: int, anchor: str | None
) -> tuple[int, int | None]:
    """The node's item count and the anchor's 0-based chronological position.

    One statement, so both come from one snapshot. The position is None when no anchor
    is asked for; an anchor the node does not hold raises item-not-found.
    """
    counted = ITEMS.alias("counted")
    total = (
        select(func.count())
        .select_from(counted)
        .where(counted.c.node_id == node_id)
        .scalar_subquery()
    )
    if anchor is None:
        return (await session.execute(select(total))).scalar_one(), None
    earlier = ITEMS.alias("earlier")
    # (created, id) < the anchor's; the redundant `created <=` lets the
    # (node_id, created) index bound the scan on both backends.
    position = (
        select(func.count())
        .select_from(earlier)
        .where(
            earlier.c.node_id == ITEMS.c.node_id,
            earlier.c.created <= ITEMS.c.created,
            or_(earlier.c.created < ITEMS.c.created, earlier.c.id < ITEMS.c.id),
        )
        .scalar_subquery()
    )
    query = select(total, position).where(ITEMS.c.node_id == node_id, ITEMS.c.item_id == anchor)
    row = (await session.execute(query)).first()
    if row is None:
        raise _not_in_result_set(anchor)
    return row[0], row[1]


async def _fetch_range(
    session: AsyncSession, node_id: int, start: int, stop: int, total: int
) -> list[ItemRecord]:
    """Items at chronological positions start..stop-1, read from the nearer end."""
    if stop <= start:
        return []
    query = select(*ITEM_COLUMNS).where(ITEMS.c.node_id == node_id).limit(stop - start)
    if start <= total - stop:
        rows = await session.execute(query.order_by(*CHRONOLOGICAL).offset(start))
        return await _records(rows.all())
    # The newest pages (max_items, <before/>) are the common requests: counting from
    # the end keeps their OFFSET small.
    rows = await session.execute(query.order_by(*NEWEST_FIRST).offset(total - stop))
    return await _records(list(reversed(rows.all())))


async def _records(rows: Sequence[Row[*tuple[Any, ...]]]) -> list[ItemRecord]:
    """The rows' records; a whole big node's (JSON decoded) in turns of the loop."""
    out: list[ItemRecord] = []
    async for some in in_turns(rows):
        out += [item_record(row._mapping) for row in some]
    return out


@observed
async def page_items(
    session: AsyncSession, node_id: int, rsm: RsmRequest | None, max_items: int | None
) -> Page[ItemRecord]:
    """The page of the node's items that the request asks for, computed in SQL.

    Returns exactly what ``paginate(items_oldest_first, key=item_id, rsm, max_items)``
    returns, and raises the same PagingError: bad-request for a non-positive
    ``max_items``, item-not-found for an after/before id outside the result set.
    Two statements: one counting (index range scans), one reading the page's rows.
    """
    if max_items is not None and max_items < 1:
        raise PagingError("bad-request", "max_items must be a positive integer")
    request = rsm or RsmRequest()
    anchor = request.after if request.after is not None else (request.before or None)
    total, position = await _count_and_position(session, node_id, anchor)
    # The result set is the newest `count` items: chronological positions base..total-1.
    count = total if max_items is None else min(total, max_items)
    base = total - count
    anchor_index = 0
    if anchor is not None and position is not None:
        if position < base:  # held by the node, but older than the newest max_items
            raise _not_in_result_set(anchor)
        anchor_index = position - base
    size = request.max
    if request.before is not None:
        stop = anchor_index if request.before else count
        start = 0 if size is None else max(0, stop - size)
    else:
        start = anchor_index + 1 if request.after is not None else min(request.index or 0, count)
        stop = count if size is None else min(count, start + size)
    items = await _fetch_range(session, node_id, base + start, base + stop, total)
    if not items:
        return Page((), None, None, None, count, complete=count == 0)
    return Page(
        tuple(items), items[0].item_id, start, items[-1].item_id, count, len(items) == count
    )
