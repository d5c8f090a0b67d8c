"""All SQL of the pubsub cache: nodes, sync leases, items, RSM pages and counts.

Functions take an ``AsyncSession`` and plain values and return the plain records of
``component.storage.records``; no ORM object leaves this module. They do not commit:
the caller's transaction decides what is atomic (``replace_items`` together with the
state change that follows it, for instance). The sync-lease functions are the
exception: a lease only means something once other processes can see it, so they take
a session factory and commit their own short transaction.

Ordering: "chronological" is by ``created``, then by insertion order (the row id).
An update keeps both, so a republished item keeps its place. ``page_items`` returns
what ``component.paging.paginate`` returns for the items in that order.

Times are timezone-aware UTC going in and coming out. SQLite stores a DateTime as
text without its zone, so every time is converted to UTC before it is bound (text
comparison then orders correctly) and tagged UTC when it is read back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Final, ParamSpec, TypeVar

from sqlalchemy import (
    JSON,
    Table,
    bindparam,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component.paging import Page, PagingError, RsmRequest
from component.storage.convert import from_db, item_record, node_record, to_db
from component.storage.models import Base
from component.storage.records import (
    ERROR,
    NO_SYNC,
    SYNC_STATES,
    ItemInput,
    ItemRecord,
    NodeRecord,
)
from component.storage.search_repo import index_items
from component.storage.timing import timed

__all__ = [
    "UNSET",
    "ItemInput",
    "ItemRecord",
    "NodeRecord",
    "Unset",
    "count_items",
    "count_nodes_by_state",
    "delete_node",
    "due_for_sync",
    "ensure_node",
    "get_items_by_ids",
    "get_node",
    "get_node_by_id",
    "idle_nodes",
    "item_ids",
    "nodes_in_state",
    "page_items",
    "purge_items",
    "release_sync",
    "renew_sync",
    "replace_items",
    "restamp_items",
    "retract_items",
    "set_node_state",
    "touch_node",
    "trim_items",
    "try_acquire_sync",
    "upsert_items",
]

# Core tables rather than ORM entities: rows never enter a session's identity map,
# so a later UPDATE here can never be hidden behind a stale cached object.
_NODES: Final[Table] = Base.metadata.tables["pubsub_nodes"]
_ITEMS: Final[Table] = Base.metadata.tables["pubsub_items"]
_ITEM_COLUMNS: Final = (
    _ITEMS.c.item_id,
    _ITEMS.c.data,
    _ITEMS.c.parsed,
    _ITEMS.c.publisher,
    _ITEMS.c.created,
    _ITEMS.c.updated,
)
_CHRONOLOGICAL: Final = (_ITEMS.c.created.asc(), _ITEMS.c.id.asc())
_NEWEST_FIRST: Final = (_ITEMS.c.created.desc(), _ITEMS.c.id.desc())
# Bound parameters per IN list: far below SQLite's (32766) and PostgreSQL's (65535) limits.
_CHUNK: Final = 500


class Unset(Enum):
    """The type of ``UNSET``: "leave this field as it is" where None is a real value."""

    UNSET = "UNSET"


UNSET: Final = Unset.UNSET

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _observed(
    fn: Callable[_P, Coroutine[Any, Any, _R]],
) -> Callable[_P, Awaitable[_R]]:
    """Time every call in herald_db_query_seconds{operation=<function name>}."""
    return timed(fn.__name__)(fn)


# --- statements ----------------------------------------------------------------------


def _insert(session: AsyncSession, table: Table) -> sqlite.Insert | postgresql.Insert:
    """The dialect's INSERT, which is the one that knows ON CONFLICT."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        return sqlite.insert(table)
    if dialect == "postgresql":
        return postgresql.insert(table)
    raise NotImplementedError(f"the pubsub cache supports SQLite and PostgreSQL, not {dialect}")


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _rowcount(result: Any) -> int:
    # DML through AsyncSession.execute yields a CursorResult; its rowcount is the
    # number of matched rows on both backends.
    count: int = result.rowcount
    return count


# --- nodes ---------------------------------------------------------------------------


@_observed
async def get_node(session: AsyncSession, service: str, name: str) -> NodeRecord | None:
    """The cached node ``name`` of ``service``, or None if Herald does not know it."""
    query = select(_NODES).where(_NODES.c.service == service, _NODES.c.name == name)
    row = (await session.execute(query)).first()
    return None if row is None else node_record(row._mapping)


@_observed
async def get_node_by_id(session: AsyncSession, node_id: int) -> NodeRecord | None:
    """The node with this id, or None."""
    row = (await session.execute(select(_NODES).where(_NODES.c.id == node_id))).first()
    return None if row is None else node_record(row._mapping)


@_observed
async def ensure_node(
    session: AsyncSession, service: str, name: str, *, analyser: str | None, now: datetime
) -> NodeRecord:
    """The node, created in state no-sync if it is new (an existing node is unchanged).

    Race-safe on both backends: INSERT ... ON CONFLICT DO NOTHING, then SELECT, so two
    processes creating the same node both get the one row.
    """
    now = to_db(now)
    insert = _insert(session, _NODES).values(
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
    query = select(_NODES).where(_NODES.c.service == service, _NODES.c.name == name)
    # A concurrent delete_node can remove the row between the two statements; one
    # more round then recreates it.
    for _attempt in range(3):
        await session.execute(insert.on_conflict_do_nothing(index_elements=["service", "name"]))
        row = (await session.execute(query)).first()
        if row is not None:
            return node_record(row._mapping)
    raise RuntimeError(f"node {name!r} on {service!r} keeps disappearing while created")


@_observed
async def delete_node(session: AsyncSession, service: str, name: str) -> bool:
    """Forget the node and (by ON DELETE CASCADE) its items; False if it was unknown."""
    result = await session.execute(
        delete(_NODES).where(_NODES.c.service == service, _NODES.c.name == name)
    )
    return _rowcount(result) == 1


@_observed
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
            (_NODES.c.sync_state == sync_state, _NODES.c.sync_state_updated),
            else_=literal(now, _NODES.c.sync_state_updated.type),
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
        row = (await session.execute(select(_NODES).where(_NODES.c.id == node_id))).first()
    else:
        statement = update(_NODES).where(_NODES.c.id == node_id).values(values).returning(*_NODES.c)
        row = (await session.execute(statement)).first()
    return None if row is None else node_record(row._mapping)


@_observed
async def touch_node(session: AsyncSession, node_id: int, now: datetime) -> bool:
    """Record that the node was just requested; False if it is unknown."""
    result = await session.execute(
        update(_NODES).where(_NODES.c.id == node_id).values(last_requested=to_db(now))
    )
    return _rowcount(result) == 1


@_observed
async def idle_nodes(session: AsyncSession, older_than: datetime) -> list[NodeRecord]:
    """Nodes not requested since ``older_than`` (never requested counts), least recent first."""
    query = (
        select(_NODES)
        .where(or_(_NODES.c.last_requested.is_(None), _NODES.c.last_requested < to_db(older_than)))
        .order_by(_NODES.c.last_requested.asc().nulls_first(), _NODES.c.id)
    )
    return [node_record(row._mapping) for row in await session.execute(query)]


@_observed
async def due_for_sync(session: AsyncSession, now: datetime) -> list[NodeRecord]:
    """Nodes in state error whose retry time has come, the longest-waiting first."""
    query = (
        select(_NODES)
        .where(_NODES.c.sync_state == ERROR, _NODES.c.next_sync_at <= to_db(now))
        .order_by(_NODES.c.next_sync_at, _NODES.c.id)
    )
    return [node_record(row._mapping) for row in await session.execute(query)]


@_observed
async def nodes_in_state(session: AsyncSession, sync_state: str) -> list[NodeRecord]:
    """Every node in this sync state (e.g. completed ones to re-fetch after a restart)."""
    query = select(_NODES).where(_NODES.c.sync_state == sync_state).order_by(_NODES.c.id)
    return [node_record(row._mapping) for row in await session.execute(query)]


@_observed
async def count_nodes_by_state(session: AsyncSession) -> dict[str, int]:
    """Nodes per sync state; every known state is present, with 0 when it has none."""
    counts = dict.fromkeys(SYNC_STATES, 0)
    query = select(_NODES.c.sync_state, func.count()).group_by(_NODES.c.sync_state)
    for state, count in await session.execute(query):
        counts[state] = count
    return counts


# --- the sync lease ------------------------------------------------------------------


@_observed
async def try_acquire_sync(
    sessions: async_sessionmaker[AsyncSession],
    node_id: int,
    owner: str,
    now: datetime,
    lease: timedelta,
    *,
    sync_state: str | None = None,
    abandoned: Callable[[str], bool] | None = None,
) -> bool:
    """Take the node's sync lease until ``now + lease``; True only for the one winner.

    A single conditional UPDATE, committed at once: the database serialises the
    contenders (PostgreSQL re-checks the WHERE after a concurrent commit, SQLite has one
    writer), so exactly one sees rowcount 1. A lease held by anyone, the same owner
    included, blocks until it is released or has expired, unless ``abandoned`` says
    its holder is gone (a dead process): then it is taken over at once, by one
    contender only (the UPDATE names the holder it replaces). The hosts' clocks must
    agree to well within the lease.

    sync_state: set in the same UPDATE, so no crash can leave the lease taken and the
    state unchanged.
    """
    if lease <= timedelta(0):
        raise ValueError("a sync lease must be positive")
    if sync_state is not None and sync_state not in SYNC_STATES:
        raise ValueError(f"unknown sync state {sync_state!r}; expected one of {SYNC_STATES}")
    now = to_db(now)
    values: dict[str, Any] = {"sync_owner": owner, "sync_lease_until": now + lease}
    if sync_state is not None:
        values["sync_state"] = sync_state
        values["sync_state_updated"] = case(
            (_NODES.c.sync_state == sync_state, _NODES.c.sync_state_updated),
            else_=literal(now, _NODES.c.sync_state_updated.type),
        )
    free = or_(
        _NODES.c.sync_owner.is_(None),
        _NODES.c.sync_lease_until.is_(None),
        _NODES.c.sync_lease_until < now,
    )
    async with sessions.begin() as session:
        result = await session.execute(
            update(_NODES).where(_NODES.c.id == node_id, free).values(values)
        )
        if _rowcount(result) == 1:
            return True
        if abandoned is None:
            return False
        holder = await session.scalar(select(_NODES.c.sync_owner).where(_NODES.c.id == node_id))
        if holder is None or holder == owner or not abandoned(holder):
            return False
        result = await session.execute(
            update(_NODES)
            .where(_NODES.c.id == node_id, _NODES.c.sync_owner == holder)
            .values(values)
        )
        return _rowcount(result) == 1


@_observed
async def renew_sync(
    sessions: async_sessionmaker[AsyncSession],
    node_id: int,
    owner: str,
    now: datetime,
    lease: timedelta,
) -> bool:
    """Extend ``owner``'s lease to ``now + lease``; False if someone else holds it now."""
    if lease <= timedelta(0):
        raise ValueError("a sync lease must be positive")
    statement = (
        update(_NODES)
        .where(_NODES.c.id == node_id, _NODES.c.sync_owner == owner)
        .values(sync_lease_until=to_db(now) + lease)
    )
    async with sessions.begin() as session:
        result = await session.execute(statement)
    return _rowcount(result) == 1


@_observed
async def release_sync(
    sessions: async_sessionmaker[AsyncSession], node_id: int, owner: str
) -> bool:
    """Give the lease back; False (and nothing changed) if ``owner`` no longer holds it."""
    statement = (
        update(_NODES)
        .where(_NODES.c.id == node_id, _NODES.c.sync_owner == owner)
        .values(sync_owner=None, sync_lease_until=None)
    )
    async with sessions.begin() as session:
        result = await session.execute(statement)
    return _rowcount(result) == 1


# --- items: writing ------------------------------------------------------------------


async def _upsert(
    session: AsyncSession, node_id: int, items: Sequence[ItemInput], now: datetime
) -> int:
    return await _upsert_rows(session, _rows(node_id, items, now))


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


async def _upsert_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> int:
    if not rows:
        return 0
    # The column's JSON type would store None as the JSON text 'null'; no parsed form
    # is stored as SQL NULL instead, so that queries can tell "not parsed" with IS NULL.
    insert = _insert(session, _ITEMS).values(
        parsed=bindparam("parsed_value", type_=JSON(none_as_null=True))
    )
    statement = insert.on_conflict_do_update(
        index_elements=["node_id", "item_id"],
        # created is left alone: an update keeps the item's place in the node.
        set_={
            "data": insert.excluded.data,
            "parsed": insert.excluded.parsed,
            "publisher": insert.excluded.publisher,
            "updated": insert.excluded.updated,
        },
    )
    # Rows are sent in order, so items that share a `created` get increasing ids in
    # the order given: the tie-break of the chronological order.
    await session.execute(statement, rows)
    await index_items(session, rows)  # same transaction: the index never lags
    return len(rows)


async def _delete_ids(session: AsyncSession, node_id: int, item_ids: Iterable[str]) -> int:
    removed = 0
    for chunk in _chunks(list(dict.fromkeys(item_ids))):
        result = await session.execute(
            delete(_ITEMS).where(_ITEMS.c.node_id == node_id, _ITEMS.c.item_id.in_(chunk))
        )
        removed += _rowcount(result)
    return removed


@_observed
async def upsert_items(
    session: AsyncSession, node_id: int, items: Sequence[ItemInput], now: datetime
) -> int:
    """Store items (oldest first), replacing same-id ones; return how many distinct ids.

    A new item gets ``created`` from its input, or ``now``; an existing one keeps its
    ``created`` and its place, and takes the new data, parsed form and publisher, with
    ``updated = now``. The raw XML is stored exactly as given.
    """
    return await _upsert(session, node_id, items, to_db(now))


@_observed
async def upsert_items_of_nodes(
    session: AsyncSession, items: Mapping[int, Sequence[ItemInput]], now: datetime
) -> int:
    """upsert_items for several nodes in one statement (node id -> its items, oldest
    first); return how many rows were written."""
    now = to_db(now)
    return await _upsert_rows(
        session, [row for node_id, some in items.items() for row in _rows(node_id, some, now)]
    )


@_observed
async def retract_items(session: AsyncSession, node_id: int, item_ids: Iterable[str]) -> int:
    """Delete these items of the node; return how many existed."""
    return await _delete_ids(session, node_id, item_ids)


@_observed
async def retract_items_of_nodes(session: AsyncSession, ids: Mapping[int, Iterable[str]]) -> int:
    """retract_items for several nodes in one statement; return how many existed."""
    pairs = list(dict.fromkeys((node_id, i) for node_id, some in ids.items() for i in some))
    removed = 0
    for start in range(0, len(pairs), _CHUNK):
        result = await session.execute(
            delete(_ITEMS).where(
                tuple_(_ITEMS.c.node_id, _ITEMS.c.item_id).in_(pairs[start : start + _CHUNK])
            )
        )
        removed += _rowcount(result)
    return removed


@_observed
async def restamp_items(session: AsyncSession, node_id: int, item_ids: Iterable[str]) -> int:
    """Move these items to the place of their last publication (created = updated),
    for services that treat a republished item as the newest; return how many."""
    moved = 0
    for chunk in _chunks(list(dict.fromkeys(item_ids))):
        result = await session.execute(
            update(_ITEMS)
            .where(_ITEMS.c.node_id == node_id, _ITEMS.c.item_id.in_(chunk))
            .values(created=_ITEMS.c.updated)
        )
        moved += _rowcount(result)
    return moved


@_observed
async def purge_items(session: AsyncSession, node_id: int) -> int:
    """Delete every item of the node; return how many there were."""
    result = await session.execute(delete(_ITEMS).where(_ITEMS.c.node_id == node_id))
    return _rowcount(result)


@_observed
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
    existing = await session.execute(select(_ITEMS.c.item_id).where(_ITEMS.c.node_id == node_id))
    stale = [item_id for item_id in existing.scalars() if item_id not in wanted]
    removed = await _delete_ids(session, node_id, stale)
    await _upsert(session, node_id, items, now)
    return removed


@_observed
async def trim_items(session: AsyncSession, node_id: int, keep: int) -> int:
    """Delete all but the newest ``keep`` items (max_items_per_node); return how many went."""
    if keep < 0:
        raise ValueError("keep must not be negative")
    beyond = (
        select(_ITEMS.c.id).where(_ITEMS.c.node_id == node_id).order_by(*_NEWEST_FIRST).offset(keep)
    )
    result = await session.execute(delete(_ITEMS).where(_ITEMS.c.id.in_(beyond)))
    return _rowcount(result)


# --- items: reading ------------------------------------------------------------------


@_observed
async def count_items(session: AsyncSession) -> int:
    """Items held in the whole cache."""
    count: int = (await session.execute(select(func.count()).select_from(_ITEMS))).scalar_one()
    return count


@_observed
async def item_ids(session: AsyncSession, node_id: int) -> list[str]:
    """The node's item ids, oldest first (what disco#items on the node lists)."""
    query = select(_ITEMS.c.item_id).where(_ITEMS.c.node_id == node_id).order_by(*_CHRONOLOGICAL)
    return list((await session.execute(query)).scalars())


@_observed
async def get_items_by_ids(
    session: AsyncSession, node_id: int, ids: Iterable[str]
) -> list[ItemRecord]:
    """The node's items with these ids, oldest first; unknown ids are left out."""
    found: list[tuple[datetime, int, ItemRecord]] = []
    for chunk in _chunks(list(dict.fromkeys(ids))):
        query = select(_ITEMS.c.id, *_ITEM_COLUMNS).where(
            _ITEMS.c.node_id == node_id, _ITEMS.c.item_id.in_(chunk)
        )
        for row in await session.execute(query):
            item = item_record(row._mapping)
            found.append((item.created, row.id, item))
    found.sort(key=lambda entry: (entry[0], entry[1]))
    return [item for _, _, item in found]


@_observed
async def held_ids_of_nodes(
    session: AsyncSession, ids: Mapping[int, Iterable[str]]
) -> dict[int, list[str]]:
    """Which of these ids each node holds, oldest first: get_items_by_ids without the
    payloads, for several nodes in one query (republication or new item?)."""
    wanted = {(node_id, item_id) for node_id, some in ids.items() for item_id in some}
    found: dict[int, list[tuple[datetime, int, str]]] = {node_id: [] for node_id in ids}
    every = list(dict.fromkeys(item_id for _, item_id in wanted))
    for chunk in _chunks(every):
        query = select(_ITEMS.c.node_id, _ITEMS.c.id, _ITEMS.c.created, _ITEMS.c.item_id).where(
            _ITEMS.c.node_id.in_(list(ids)), _ITEMS.c.item_id.in_(chunk)
        )
        for row in await session.execute(query):
            if (row.node_id, row.item_id) in wanted:
                found[row.node_id].append((from_db(row.created), row.id, row.item_id))
    return {node_id: [i for _, _, i in sorted(held)] for node_id, held in found.items()}


@_observed
async def items_of_nodes(
    session: AsyncSession, node_ids: Iterable[int]
) -> dict[int, list[ItemRecord]]:
    """Every item of each of these nodes, oldest first, in one query."""
    wanted = list(node_ids)
    found: dict[int, list[ItemRecord]] = {node_id: [] for node_id in wanted}
    query = (
        select(_ITEMS.c.node_id, *_ITEM_COLUMNS)
        .where(_ITEMS.c.node_id.in_(wanted))
        .order_by(_ITEMS.c.node_id, *_CHRONOLOGICAL)
    )
    for row in await session.execute(query):
        found[row.node_id].append(item_record(row._mapping))
    return found


@_observed
async def count_items_of_nodes(session: AsyncSession, node_ids: Iterable[int]) -> dict[int, int]:
    """How many items each of these nodes holds (absent: none)."""
    query = (
        select(_ITEMS.c.node_id, func.count())
        .where(_ITEMS.c.node_id.in_(list(node_ids)))
        .group_by(_ITEMS.c.node_id)
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
    counted = _ITEMS.alias("counted")
    total = (
        select(func.count())
        .select_from(counted)
        .where(counted.c.node_id == node_id)
        .scalar_subquery()
    )
    if anchor is None:
        return (await session.execute(select(total))).scalar_one(), None
    earlier = _ITEMS.alias("earlier")
    # (created, id) < the anchor's; the redundant `created <=` lets the
    # (node_id, created) index bound the scan on both backends.
    position = (
        select(func.count())
        .select_from(earlier)
        .where(
            earlier.c.node_id == _ITEMS.c.node_id,
            earlier.c.created <= _ITEMS.c.created,
            or_(earlier.c.created < _ITEMS.c.created, earlier.c.id < _ITEMS.c.id),
        )
        .scalar_subquery()
    )
    query = select(total, position).where(_ITEMS.c.node_id == node_id, _ITEMS.c.item_id == anchor)
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
    query = select(*_ITEM_COLUMNS).where(_ITEMS.c.node_id == node_id).limit(stop - start)
    if start <= total - stop:
        rows = await session.execute(query.order_by(*_CHRONOLOGICAL).offset(start))
        return [item_record(row._mapping) for row in rows]
    # The newest pages (max_items, <before/>) are the common requests: counting from
    # the end keeps their OFFSET small.
    rows = await session.execute(query.order_by(*_NEWEST_FIRST).offset(total - stop))
    return [item_record(row._mapping) for row in reversed(rows.all())]


@_observed
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
