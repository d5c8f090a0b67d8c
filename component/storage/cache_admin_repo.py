"""The SQL of cache administration: statistics, node listings, purges, resets and the
log of administrator requests that running Heralds apply to their memory.

Like the pubsub repository modules, functions take an ``AsyncSession`` and plain
values, return frozen records, and do not commit: a purge and its log rows commit together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import LargeBinary, Table, cast, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from component.storage.convert import from_db, node_record, to_db
from component.storage.models import Base
from component.storage.pubsub_tables import ITEMS, NODES, chunks
from component.storage.records import ERROR, SYNC_STATES, NodeRecord

RESYNC: Final = "resync"
PURGED: Final = "purged"
RESET: Final = "reset"

_REQUESTS: Final[Table] = Base.metadata.tables["pubsub_admin_requests"]


@dataclass(frozen=True)
class NodeSummary:
    """A node with how many items it holds and their size (bytes of stored XML)."""

    node: NodeRecord
    items: int
    bytes: int


@dataclass(frozen=True)
class ServiceStats:
    """One upstream service's share of the cache."""

    service: str
    nodes: dict[str, int]  # per sync state, every state present
    items: int
    bytes: int


@dataclass(frozen=True)
class AdminRequest:
    """A logged administrator change: resync or purged (of one node), or reset (all)."""

    id: int
    action: str
    service: str | None
    node: str | None
    node_id: int | None
    requested_at: datetime


def _bytes_of(session: AsyncSession) -> Any:
    # Bytes, not characters: what the data costs on disk and in memory, in UTF-8.
    if session.get_bind().dialect.name == "postgresql":
        return func.octet_length(ITEMS.c.data)
    return func.length(cast(ITEMS.c.data, LargeBinary))


def _per_node(session: AsyncSession) -> Any:
    return (
        select(
            ITEMS.c.node_id,
            func.count().label("items"),
            func.sum(_bytes_of(session)).label("bytes"),
        )
        .group_by(ITEMS.c.node_id)
        .subquery("per_node")
    )


async def cache_stats(session: AsyncSession) -> list[ServiceStats]:
    """Nodes per state, items and bytes for every service, by service name."""
    per_node = _per_node(session)
    query = (
        select(
            NODES.c.service,
            NODES.c.sync_state,
            func.count(),
            func.coalesce(func.sum(per_node.c["items"]), 0),
            func.coalesce(func.sum(per_node.c["bytes"]), 0),
        )
        .select_from(NODES.outerjoin(per_node, per_node.c.node_id == NODES.c.id))
        .group_by(NODES.c.service, NODES.c.sync_state)
    )
    found: dict[str, tuple[dict[str, int], list[int]]] = {}
    for service, state, nodes, items, size in await session.execute(query):
        by_state, totals = found.setdefault(service, (dict.fromkeys(SYNC_STATES, 0), [0, 0]))
        by_state[state] = by_state.get(state, 0) + nodes
        totals[0] += int(items)
        totals[1] += int(size)
    return [
        ServiceStats(service, by_state, totals[0], totals[1])
        for service, (by_state, totals) in sorted(found.items())
    ]


async def node_summaries(
    session: AsyncSession,
    *,
    service: str | None = None,
    name: str | None = None,
    sync_state: str | None = None,
    requested_before: datetime | None = None,
) -> list[NodeSummary]:
    """Nodes with their item counts, by service then name; filters are ANDed.

    requested_before: only nodes not requested since then (never requested counts).
    """
    per_node = _per_node(session)
    query = select(
        NODES,
        func.coalesce(per_node.c["items"], 0).label("item_count"),
        func.coalesce(per_node.c["bytes"], 0).label("byte_count"),
    ).select_from(NODES.outerjoin(per_node, per_node.c.node_id == NODES.c.id))
    if service is not None:
        query = query.where(NODES.c.service == service)
    if name is not None:
        query = query.where(NODES.c.name == name)
    if sync_state is not None:
        query = query.where(NODES.c.sync_state == sync_state)
    if requested_before is not None:
        query = query.where(
            or_(
                NODES.c.last_requested.is_(None),
                NODES.c.last_requested < to_db(requested_before),
            )
        )
    query = query.order_by(NODES.c.service, NODES.c.name)
    return [
        NodeSummary(node_record(row._mapping), int(row.item_count), int(row.byte_count))
        for row in await session.execute(query)
    ]


async def node_summary(session: AsyncSession, service: str, name: str) -> NodeSummary | None:
    """One node with its counts, or None if the cache does not hold it."""
    found = await node_summaries(session, service=service, name=name)
    return found[0] if found else None


async def newest_and_oldest(
    session: AsyncSession, node_id: int
) -> tuple[datetime, datetime] | None:
    """The created time of the node's oldest and newest items; None when it has none."""
    query = select(func.min(ITEMS.c.created), func.max(ITEMS.c.created)).where(
        ITEMS.c.node_id == node_id
    )
    oldest, newest = (await session.execute(query)).one()
    if oldest is None or newest is None:
        return None
    return from_db(oldest), from_db(newest)


async def _log(
    session: AsyncSession, action: str, now: datetime, node: NodeRecord | None = None
) -> None:
    await session.execute(
        insert(_REQUESTS).values(
            action=action,
            service=None if node is None else node.service,
            node=None if node is None else node.name,
            node_id=None if node is None else node.id,
            requested_at=to_db(now),
        )
    )


async def request_resync(session: AsyncSession, node: NodeRecord, now: datetime) -> None:
    """Ask running Heralds to fetch the node again.

    A node waiting for a retry after a failure is also made due now, so that upkeep
    retries it even where no Herald reads the request log (an older one, say).
    """
    await session.execute(
        update(NODES)
        .where(NODES.c.id == node.id, NODES.c.sync_state == ERROR)
        .values(next_sync_at=to_db(now))
    )
    await _log(session, RESYNC, now, node)


async def purge_nodes(session: AsyncSession, nodes: Sequence[NodeRecord], now: datetime) -> int:
    """Forget these nodes and their items, logging one request per node; return how
    many were still there (a node dropped meanwhile is skipped)."""
    removed = 0
    for chunk in chunks(nodes):
        result = await session.execute(
            delete(NODES).where(NODES.c.id.in_([n.id for n in chunk])).returning(NODES.c.id)
        )
        gone = set(result.scalars())
        removed += len(gone)
        for node in chunk:
            if node.id in gone:
                await _log(session, PURGED, now, node)
    return removed


async def reset_cache(session: AsyncSession, now: datetime) -> tuple[int, int]:
    """Forget every node and item; return how many nodes and items there were."""
    items = (await session.execute(delete(ITEMS))).rowcount  # type: ignore[attr-defined]
    nodes = (await session.execute(delete(NODES))).rowcount  # type: ignore[attr-defined]
    await _log(session, RESET, now)
    return int(nodes), int(items)


async def last_request_id(session: AsyncSession) -> int:
    """The id of the newest logged request, 0 when there is none."""
    found = await session.scalar(select(func.max(_REQUESTS.c.id)))
    return int(found or 0)


async def requests_after(session: AsyncSession, after_id: int) -> list[AdminRequest]:
    """Logged requests newer than ``after_id``, oldest first."""
    query = select(_REQUESTS).where(_REQUESTS.c.id > after_id).order_by(_REQUESTS.c.id)
    return [
        AdminRequest(
            row.id, row.action, row.service, row.node, row.node_id, from_db(row.requested_at)
        )
        for row in await session.execute(query)
    ]


async def prune_requests(session: AsyncSession, older_than: datetime) -> int:
    """Drop logged requests made before ``older_than``; return how many."""
    result = await session.execute(
        delete(_REQUESTS).where(_REQUESTS.c.requested_at < to_db(older_than))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def node_keys(session: AsyncSession) -> set[tuple[str, str, int]]:
    """(service, name, id) of every node: what a Herald checks its memory against."""
    query = select(NODES.c.service, NODES.c.name, NODES.c.id)
    return {(row.service, row.name, row.id) for row in await session.execute(query)}
