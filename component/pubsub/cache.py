"""The cache: node states and items in the database, hot copies in memory.

Answering a hit must cost about what answering from memory costs, so the node index
and recently used nodes' items are kept in memory; the database is the durable copy
and is written first. Every change to a node goes through here, which keeps the
memory copy, the database and the gauges in step.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component.paging import RsmRequest
from component.pubsub import tracing
from component.pubsub.cache_gauges import CacheGauges
from component.pubsub.group_write import write_steps
from component.pubsub.hot_items import HotItems
from component.pubsub.node_state import (
    ItemStep,
    NodeState,
    item_limit,
    state_of,
    trim_truncates,
)
from component.pubsub.request_marks import RequestMarks
from component.pubsub.unflushed import UnflushedWrites
from component.pubsub.unwritten import AT_MOST_WORK, Ahead, Unwritten, with_unwritten
from component.sizes import held_size
from component.storage import pubsub_item_reads, pubsub_item_writes, pubsub_nodes
from component.storage.records import (
    NO_SYNC,
    SYNC_STATES,
    ItemInput,
    ItemRecord,
    NodeRecord,
)
from component.turns import in_turns

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


MEMORY_BYTES = 64 * 1024 * 1024


class Cache:
    """Node states, items, and the in-memory copy of hot nodes' items.

    The memory copy is bounded in bytes (memory_bytes; pubsub/hot_items.py).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        max_items_per_node: int,
        memory_bytes: int = MEMORY_BYTES,
        redoable: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self.sessions = sessions
        # For the group writes of notifications only: commits a database crash may
        # lose, since a resync redoes them (storage/engine.py: create_redoable_engine).
        self.redoable = redoable or sessions
        self.unflushed = UnflushedWrites(sessions, tracking=redoable is not None)
        self.max_items_per_node = max_items_per_node
        self.memory_bytes = memory_bytes
        self._nodes: dict[tuple[str, str], NodeState] = {}
        self._per_service: dict[str, int] = {}
        self._hot = HotItems(memory_bytes)
        self.requests = RequestMarks(sessions)
        self.gauges = CacheGauges(sessions)

    # -- start-up -------------------------------------------------------------------

    async def load(self) -> None:
        """Read every known node into memory, and set the gauges from the database."""
        async with self.sessions() as session:
            for state in SYNC_STATES:
                for record in await pubsub_nodes.nodes_in_state(session, state):
                    self._put(state_of(record))
        await self.gauges.refresh()

    # -- nodes ----------------------------------------------------------------------

    def node(self, service: str, name: str) -> NodeState | None:
        """The node's state, from memory."""
        return self._nodes.get((service, name))

    def count_on(self, service: str) -> int:
        """How many nodes of this upstream service are known (cached or being cached)."""
        return self._per_service.get(service, 0)

    def _put(self, state: NodeState) -> NodeState:
        key = (state.service, state.name)
        if key not in self._nodes:
            self._per_service[state.service] = self._per_service.get(state.service, 0) + 1
        self._nodes[key] = state
        return state

    def nodes(self) -> list[NodeState]:
        """Every known node."""
        return list(self._nodes.values())

    async def ensure(self, service: str, name: str, analyser: str | None) -> NodeState:
        """The node's state, creating the node (no-sync) if it is new."""
        known = self.node(service, name)
        if known is not None:
            return known
        async with self.sessions() as session:
            record = await pubsub_nodes.ensure_node(
                session, service, name, analyser=analyser, now=utcnow()
            )
            await session.commit()
        self.gauges.stale = True
        return self._put(state_of(record))

    async def set_state(
        self, node: NodeState, *, confirm: bool = False, **changes: object
    ) -> NodeState:
        """Change the node's stored state (set_node_state keywords); returns the new state.

        confirm: the node was just fetched in full, so its completed state is trusted.
        """
        async with self.sessions() as session:
            record = await pubsub_nodes.set_node_state(session, node.id, now=utcnow(), **changes)  # type: ignore[arg-type]
            await session.commit()
        self.gauges.stale = True
        if record is None:
            self.forget(node)
            return replace(node, sync_state=NO_SYNC, shareable=False, confirmed=False)
        state = self._remember(node, record, confirm)
        if not state.serves_from_cache:
            self._drop_items(node.id)
        return state

    def _remember(
        self, node: NodeState, record: NodeRecord | None, confirm: bool = False
    ) -> NodeState:
        """Keep the node's new state in memory (a deleted node's stays as it was).

        Whether it is confirmed carries over from what memory held, unless a sync
        confirms it now; a state other than completed always unconfirms it.
        """
        if record is None:
            return node
        held = self._nodes.get((node.service, node.name))
        confirmed = confirm or (held is not None and held.id == record.id and held.confirmed)
        return self._put(state_of(record, confirmed))

    def unconfirm(self, node: NodeState) -> None:
        """Stop answering the node from the cache until a sync confirms it again."""
        held = self._nodes.get((node.service, node.name))
        if held is not None:
            self._nodes[(node.service, node.name)] = replace(held, confirmed=False)

    async def delete(self, node: NodeState) -> None:
        """Forget the node and its items, in the database and in memory."""
        async with self.sessions() as session:
            await pubsub_nodes.delete_node(session, node.service, node.name)
            await session.commit()
        self.forget(node)

    def forget(self, node: NodeState) -> None:
        """Drop the node from memory only."""
        if self._nodes.pop((node.service, node.name), None) is not None:
            left = self._per_service.get(node.service, 1) - 1
            if left:
                self._per_service[node.service] = left
            else:
                self._per_service.pop(node.service, None)
        self._drop_items(node.id)

    def forget_gone(self, per_node: dict[int, Any]) -> None:
        """Drop the entries of a per-node map whose node is no longer known."""
        known = {state.id for state in self._nodes.values()}
        for node_id in [i for i in per_node if i not in known]:
            del per_node[node_id]

    # -- items ----------------------------------------------------------------------

    async def items(self, node: NodeState) -> list[ItemRecord]:
        """All the node's items, oldest first, from memory when hot."""
        held = self._hot.get(node.id)
        if held is not None:
            return held
        version = self._hot.version(node.id)
        tracing.step("items-db", node.name)
        async with self.sessions() as session:
            page = await pubsub_item_reads.page_items(session, node.id, None, None)
            await session.commit()  # not a ROLLBACK: see held()
        items = list(page.items)
        size = 0
        async for some in in_turns(items):  # a big node's would hold the event loop
            size += sum(held_size(item) for item in some)
        tracing.step("items-db-end", node.name)
        if self._hot.version(node.id) == version:
            self._hot.hold(node.id, items, size)
        return items

    def items_version(self, node: NodeState) -> tuple[int, int]:
        """The version of memory's copy of the node's items (with the node's id: a
        node cached again is another node): it changes whenever the copy does (held,
        merged, dropped)."""
        return node.id, self._hot.version(node.id)

    def ahead(self, node: NodeState, unwritten: Unwritten) -> Ahead | None:
        """The node's items with its unwritten steps applied, as their write will
        leave them: None unless memory holds the node's items, at the version the
        steps apply to, and applying them costs little. Taken from memory at once
        (no await)."""
        if self.items_version(node) != unwritten.since:
            return None
        held = self._hot.get(node.id)
        if held is None or len(unwritten.steps) * max(len(held), 1) > AT_MOST_WORK:
            return None
        return with_unwritten(
            held,
            unwritten.steps,
            self.limit(node),
            node.truncated,
            trim_truncates(node, self.max_items_per_node),
            utcnow(),
        )

    async def oldest(self, node: NodeState, count: int) -> list[ItemRecord]:
        """The node's `count` oldest items: from memory when held there (not counted
        as a use), or only those rows from the database (the node stays out of
        memory: an eviction probe is not a read)."""
        held = self._hot.peek(node.id)
        if held is not None:
            return held[:count]
        async with self.sessions() as session:
            page = await pubsub_item_reads.page_items(session, node.id, RsmRequest(max=count), None)
            await session.commit()  # not a ROLLBACK: see held()
        return list(page.items)

    def limit(self, node: NodeState) -> int:
        """How many items the node keeps (node_state.item_limit)."""
        return item_limit(node, self.max_items_per_node)

    async def replace_items(
        self, node: NodeState, items: Sequence[ItemInput], *, more_upstream: bool = False
    ) -> NodeState:
        """Make the node hold exactly items (a full fetch, oldest first), newest kept.

        The fetched order is the truth: everything is rewritten in one transaction, so
        an item stored earlier from a notification (ejabberd sends the last item on
        subscribe) does not keep an older place. more_upstream: the fetch stopped at
        the limit with older items left upstream.
        """
        limit = self.limit(node)
        keep = list(items)[-limit:]
        truncated = more_upstream or len(items) > limit
        async with self.sessions() as session:
            await pubsub_item_writes.purge_items(session, node.id)
            await pubsub_item_writes.upsert_items(session, node.id, keep, utcnow())
            record = await pubsub_nodes.set_node_state(
                session, node.id, now=utcnow(), truncated=truncated
            )
            await session.commit()
        self._drop_items(node.id)
        return self._remember(node, record)

    async def upsert_items(
        self, node: NodeState, items: Sequence[ItemInput], moved: Sequence[str] = ()
    ) -> NodeState:
        """Store published items, then trim the node to its limit.

        moved: republished ids to move to the newest place (where upstream does so).
        Past upstream's own pubsub#max_items, trimming mirrors what upstream dropped;
        past only ours, upstream still has what went, and the node is truncated.
        """
        async with self.sessions() as session:
            await pubsub_item_writes.upsert_items(session, node.id, items, utcnow())
            if moved:
                await pubsub_item_writes.restamp_items(session, node.id, moved)
            record, _ = await self._trim(session, node)
            await session.commit()
        self._drop_items(node.id)
        return self._remember(node, record)

    async def _trim(
        self, session: AsyncSession, node: NodeState
    ) -> tuple[NodeRecord | None, list[str]]:
        """Trim the node to its limit: its new record if its state changed, and the
        ids that went."""
        trimmed = await pubsub_item_writes.trim_items(session, node.id, self.limit(node))
        if trimmed and trim_truncates(node, self.max_items_per_node) and not node.truncated:
            record = await pubsub_nodes.set_node_state(
                session, node.id, now=utcnow(), truncated=True
            )
            return record, trimmed
        return None, trimmed

    async def apply_steps(
        self, changes: Sequence[tuple[NodeState, Sequence[ItemStep]]]
    ) -> list[tuple[NodeState, list[list[str]]]]:
        """Apply item changes to several nodes in one transaction (a group commit).

        Each node's steps apply in order, as retract_items then upsert_items would;
        the nodes' n-th steps share their statements. Returns each node's new state
        and, per step, the published ids it already held (republications), oldest
        first. Nothing changes, in the database or in memory, unless all commits.

        Nodes whose items are in memory (requested lately) keep them there: the rows
        the steps published, as the upsert returned them (read back only if moved
        since), are merged with what memory held, less what went. Their next
        requests are answered from memory while notifications keep coming, at a cost
        that follows the changes, not the nodes' sizes.
        """
        hot = {node.id: self._hot.version(node.id) for node, _ in changes if node.id in self._hot}
        # What memory holds plus what the steps publish bounds a hot node's count: one
        # kept under its limit by it needs no count statement (a round trip) and no trim.
        held_now = {node_id: self._hot.peek(node_id) or [] for node_id in hot}
        held_ids = {node_id: self._hot.ids(node_id) for node_id in hot}
        at_most = {node_id: len(items) for node_id, items in held_now.items()}
        tracing.step("write-start", "*", str(len(changes)))
        with self.unflushed.writing([node.id for node, _ in changes]) as committed:
            async with self.redoable() as session:
                written = await write_steps(
                    session, changes, at_most, held_now, held_ids, self.limit, self._trim
                )
                tracing.step("write-commit", "*")
                await session.commit()
                committed()
        tracing.step("write-end", "*")
        out = []
        for node, _ in changes:
            state = self._remember(node, written.records.get(node.id))
            # Merged only if nothing else changed the node's items meanwhile.
            unchanged = node.id in hot and self._hot.version(node.id) == hot[node.id]
            if unchanged and state.serves_from_cache:
                self.gauges.stale = True
                fresh = list(written.fresh[node.id].values())
                self._hot.merge(node.id, written.touched[node.id], fresh)
            else:
                self._drop_items(node.id)
            out.append((state, written.again[node.id]))
        return out

    async def held(self, node: NodeState, item_ids: Sequence[str]) -> list[ItemRecord]:
        """The node's items with these ids (oldest first), from memory when hot."""
        hot = self._hot.get(node.id)
        if hot is not None:
            wanted = set(item_ids)
            return [item for item in hot if item.item_id in wanted]
        async with self.sessions() as session:
            found = await pubsub_item_reads.get_items_by_ids(session, node.id, item_ids)
            # Ended with COMMIT, not the ROLLBACK a closing session sends: psycopg
            # forgets its prepared statements at every ROLLBACK and sends DEALLOCATE
            # ALL, then prepares them again, three round trips on PostgreSQL.
            await session.commit()
            return found

    async def move_to_newest(self, node: NodeState, item_ids: Sequence[str]) -> None:
        """Give republished items the place of their last publication."""
        async with self.sessions() as session:
            await pubsub_item_writes.restamp_items(session, node.id, item_ids)
            await session.commit()
        self._drop_items(node.id)

    async def retract_items(self, node: NodeState, item_ids: Sequence[str]) -> None:
        """Delete retracted items."""
        async with self.sessions() as session:
            await pubsub_item_writes.retract_items(session, node.id, item_ids)
            await session.commit()
        self._drop_items(node.id)

    async def purge_items(self, node: NodeState) -> NodeState:
        """Delete all the node's items (upstream holds none either: not truncated)."""
        async with self.sessions() as session:
            await pubsub_item_writes.purge_items(session, node.id)
            record = await pubsub_nodes.set_node_state(
                session, node.id, now=utcnow(), truncated=False
            )
            await session.commit()
        self._drop_items(node.id)
        return self._remember(node, record)

    def hot(self, node: NodeState) -> bool:
        """Whether the node's items are held in memory now."""
        return node.id in self._hot

    @property
    def held_bytes(self) -> int:
        """Bytes of items held in memory now (estimated)."""
        return self._hot.held_bytes

    def _drop_items(self, node_id: int) -> None:
        self.gauges.stale = True
        self._hot.drop(node_id)
