"""The SQL of the pubsub cache's nodes: lookup, creation, deletion, state changes, and
the listings the sync scheduler and metrics need.

Functions take an ``AsyncSession`` and plain values and return ``NodeRecord``s; no ORM
object leaves this module. They do not commit: the caller's transaction decides what
is atomic. Times are aware UTC (``component.storage.convert``).
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Final

from sqlalchemy import case, delete, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from component.storage.convert import node_record, to_db
from component.storage.pubsub_tables import NODES, dialect_insert, rowcount
from component.storage.records import ERROR, NO_SYNC, SYNC_STATES, NodeRecord
from component.storage.timing import observed


class Unset(Enum):
    """The type of ``UNSET``: "leave this field as it is" where None is a real value."""

    UNSET = "UNSET"


UNSET: Final = Unset.UNSET


@observed
async def get_node(session: AsyncSession, service: str, name: str) -> NodeRecord | None:
    """The cached node ``name`` of ``service``, or None if Herald does not know it."""
    query = select(NODES).where(NODES.c.service == service, NODES.c.name == name)
    row = (await session.execute(query)).first()
    return None if row is None else node_record(row._mapping)


@observed
async def get_node_by_id(session: AsyncSession, node_id: int) -> NodeRecord | None:
    """The node with this id, or None."""
    row = (await session.execute(select(NODES).where(NODES.c.id == node_id))).first()
    return None if row is None else node_record(row._mapping)


@observed
async def ensure_node(
    session: AsyncSession, service: str, name: str, *, analyser: str | None, now: datetime
) -> NodeRecord:
    """The node, created in state no-sync if it is new (an existing node is unchanged).

    Race-safe on both backends: INSERT ... ON CONFLICT DO NOTHING, then SELECT, so two
    processes creating the same node both get the one row.
    """
    now = to_db(now)
    insert = dialect_insert(session, NODES).values(
        service=service,
        name=name,
        analyser=analyser,
        sync_state=NO_SYNC,
        sync_state_updated=now,
        sync_attempts=0,
        subscribed=False,
        shareable=False,
        truncated=False,
        # Nodes are created because someone asked for them: that is a request.
        last_requested=now,
    )
    query = select(NODES).where(NODES.c.service == service, NODES.c.name == name)
    # A concurrent delete_node can remove the row between the two statements; one
    # more round then recreates it.
    for _attempt in range(3):
        await session.execute(insert.on_conflict_do_nothing(index_elements=["service", "name"]))
        row = (await session.execute(query)).first()
        if row is not None:
            return node_record(row._mapping)
    raise RuntimeError(f"node {name!r} on {service!r} keeps disappearing while created")


@observed
async def delete_node(session: AsyncSession, service: str, name: str) -> bool:
    """Forget the node and (by ON DELETE CASCADE) its items; False if it was unknown."""
    result = await session.execute(
        delete(NODES).where(NODES.c.service == service, NODES.c.name == name)
    )
    return rowcount(result) == 1


@observed
async def set_node_state(
    session: AsyncSession,
    node_id: int,
    *,
    now: datetime,
    sync_state: str | Unset = UNSET,
    access_model: str | Unset | None = UNSET,
    shareable: bool | Unset = UNSET,
    subscribed: bool | Unset = UNSET,
    sync_attempts: int | Unset = UNSET,
    next_sync_at: datetime | Unset | None = UNSET,
    truncated: bool | Unset = UNSET,
    upstream_max_items: int | Unset | None = UNSET,
    last_synced: datetime | Unset | None = UNSET,
    last_error: str | Unset | None = UNSET,
) -> NodeRecord | None:
    """Change only the fields given; return the node as it is now, None if unknown.

    ``sync_state_updated`` becomes ``now`` only when the state actually changes, so it
    keeps meaning "in this state since".
    """
    now = to_db(now)
    values: dict[str, Any] = {}
    if not isinstance(sync_state, Unset):
        if sync_state not in SYNC_STATES:
            raise ValueError(f"unknown sync state {sync_state!r}; expected one of {SYNC_STATES}")
        values["sync_state"] = sync_state
        # SET expressions see the row as it was, so this compares with the old state.
        values["sync_state_updated"] = case(
            (NODES.c.sync_state == sync_state, NODES.c.sync_state_updated),
            else_=literal(now, NODES.c.sync_state_updated.type),
        )
    if not isinstance(access_model, Unset):
        values["access_model"] = access_model
    if not isinstance(shareable, Unset):
        values["shareable"] = shareable
    if not isinstance(subscribed, Unset):
        values["subscribed"] = subscribed
    if not isinstance(sync_attempts, Unset):
        values["sync_attempts"] = sync_attempts
    if not isinstance(next_sync_at, Unset):
        values["next_sync_at"] = None if next_sync_at is None else to_db(next_sync_at)
    if not isinstance(truncated, Unset):
        values["truncated"] = truncated
    if not isinstance(upstream_max_items, Unset):
        values["upstream_max_items"] = upstream_max_items
    if not isinstance(last_synced, Unset):
        values["last_synced"] = None if last_synced is None else to_db(last_synced)
    if not isinstance(last_error, Unset):
        values["last_error"] = None if last_error is None else last_error[:1023]
    if not values:
        row = (await session.execute(select(NODES).where(NODES.c.id == node_id))).first()
    else:
        statement = update(NODES).where(NODES.c.id == node_id).values(values).returning(*NODES.c)
        row = (await session.execute(statement)).first()
    return None if row is None else node_record(row._mapping)


@observed
async def touch_node(session: AsyncSession, node_id: int, now: datetime) -> bool:
    """Record that the node was just requested; False if it is unknown."""
    result = await session.execute(
        update(NODES).where(NODES.c.id == node_id).values(last_requested=to_db(now))
    )
    return rowcount(result) == 1


@observed
async def idle_nodes(session: AsyncSession, older_than: datetime) -> list[NodeRecord]:
    """Nodes not requested since ``older_than`` (never requested counts), least recent first."""
    query = (
        select(NODES)
        .where(or_(NODES.c.last_requested.is_(None), NODES.c.last_requested < to_db(older_than)))
        .order_by(NODES.c.last_requested.asc().nulls_first(), NODES.c.id)
    )
    return [node_record(row._mapping) for row in await session.execute(query)]


@observed
async def due_for_sync(session: AsyncSession, now: datetime) -> list[NodeRecord]:
    """Nodes in state error whose retry time has come, the longest-waiting first."""
    query = (
        select(NODES)
        .where(NODES.c.sync_state == ERROR, NODES.c.next_sync_at <= to_db(now))
        .order_by(NODES.c.next_sync_at, NODES.c.id)
    )
    return [node_record(row._mapping) for row in await session.execute(query)]


@observed
async def nodes_in_state(session: AsyncSession, sync_state: str) -> list[NodeRecord]:
    """Every node in this sync state (e.g. completed ones to re-fetch after a restart)."""
    query = select(NODES).where(NODES.c.sync_state == sync_state).order_by(NODES.c.id)
    return [node_record(row._mapping) for row in await session.execute(query)]


@observed
async def count_nodes_by_state(session: AsyncSession) -> dict[str, int]:
    """Nodes per sync state; every known state is present, with 0 when it has none."""
    counts = dict.fromkeys(SYNC_STATES, 0)
    query = select(NODES.c.sync_state, func.count()).group_by(NODES.c.sync_state)
    for state, count in await session.execute(query):
        counts[state] = count
    return counts
