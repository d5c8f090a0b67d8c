"""Applying upstream notifications to cached nodes.

Notifications for a node apply one at a time, in arrival order; publications and
retractions with payloads for nodes nothing else holds are written for many nodes in
one transaction (pubsub/group_commit.py), the rest node by node. Notifications for a
node whose sync is running here are held back until it completes, then applied on top
of what it fetched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import datetime

from component.background import Background
from component.keyed_locks import KeyedLocks
from component.pubsub.cache import Cache
from component.pubsub.eviction import EvictionWatch
from component.pubsub.group_commit import GroupCommit
from component.pubsub.item_intake import ItemIntake, SyncFailed
from component.pubsub.node_state import ItemStep, NodeState
from component.pubsub.openness import OpenNodes
from component.pubsub.ordering import RepublishOrder
from component.pubsub.requests import items_payload, items_read
from component.pubsub.stanzas import NodeEvent, Serializer, received_items, result_items
from component.pubsub.unwritten import AT_MOST_STEPS, Unwritten
from component.pubsub.upstream import Upstream, UpstreamError
from component.storage.records import NO_SYNC

log = logging.getLogger(__name__)

# Seconds a read waits for its node's received notifications to be applied; past it
# the read is answered upstream, never from a cache known to be behind.
READ_WAITS_AT_MOST = 2.0


def coalesced(events: list[NodeEvent]) -> list[NodeEvent]:
    """The same changes in fewer events: consecutive publications (no retractions)
    become one, as long as no item id repeats in it. Written as one step, they land
    where writing them one by one puts them, for a service that leaves republished
    items in place (those that move them are not merged): a step whose trim takes
    an item it publishes again is written one by one instead (group_write.OneByOne)."""
    merged: list[NodeEvent] = []
    ids: set[str] = set()
    for event in events:
        last = merged[-1] if merged else None
        fresh = {item.item_id for item in event.published}
        if (
            last is not None
            and event.kind == last.kind == "items"
            and not event.retracted
            and not last.retracted
            and len(fresh) == len(event.published)
            and not fresh & ids
        ):
            merged[-1] = replace(last, published=last.published + event.published)
            ids |= fresh
        else:
            merged.append(event)
            ids = fresh
    return merged


class NotificationApplier:
    """Applies notifications (and writes Herald forwarded) to the cached nodes.

    verify(node) re-reads a node's access after a configuration change; schedule(node)
    fetches a node again.
    """

    def __init__(
        self,
        upstream: Upstream,
        cache: Cache,
        serialize: Serializer,
        intake: ItemIntake,
        order: KeyedLocks[tuple[str, str]],
        open_nodes: OpenNodes,
        verify: Callable[[NodeState], Awaitable[None]],
        schedule: Callable[[NodeState], None],
    ) -> None:
        self.upstream = upstream
        self.cache = cache
        self.serialize = serialize
        self.intake = intake
        self.open_nodes = open_nodes
        self.verify = verify
        self.schedule = schedule
        # Notifications for a node whose fetch is running here wait for it to finish,
        # then apply on top of what was fetched. (Re-fetching instead would loop on
        # servers that replay the last item to every new subscription, as ejabberd does.)
        self._pending: dict[int, list[NodeEvent]] = {}
        # Notifications for a node are applied one at a time, in arrival order: slixmpp
        # runs each stanza's handler as its own task, and a retract must not overtake
        # its publish. Other nodes' notifications do not wait.
        self._order = order
        # Publications and retractions with payloads, for nodes nothing else holds,
        # are written for many nodes in one transaction; the rest node by node.
        # Each node's unapplied notifications are marked with the version of memory's
        # copy of its items when the first of them was next: a read may apply them on
        # top of that copy while it is unchanged (see unwritten_steps).
        self._groups: GroupCommit[tuple[str, str], NodeEvent] = GroupCommit(
            self._apply_together, self._apply_alone, self._alone_only, self._items_version
        )
        self.evictions = EvictionWatch(upstream, cache, self._drop_evicted, schedule)
        self.order = RepublishOrder(upstream)
        self._chores = Background("pubsub: learning an item order")

    async def close(self) -> None:
        """Finish queued notifications, then stop the probes and chores they started."""
        await self._groups.close()
        await self.evictions.close()
        await self._chores.close()

    # -- a node being synced ----------------------------------------------------------

    def hold_back(self, node_id: int) -> None:
        """The node's fetch starts: hold its notifications until apply_held()."""
        self._pending[node_id] = []

    async def apply_held(self, node: NodeState) -> None:
        """The node's fetch completed: apply what was held back, in arrival order.

        The caller holds the node's order lock.
        """
        for event in self._pending.pop(node.id, []):
            await self._apply(node.service, event)

    def drop_held(self, node_id: int) -> None:
        """The node's sync ended or was stopped: what was held back is not applied."""
        self._pending.pop(node_id, None)

    # -- notifications ----------------------------------------------------------------

    async def apply(self, service: str, event: NodeEvent) -> None:
        """Apply one notification from `service` to the cached node it concerns.

        One that cannot be applied takes the node out of service until a re-fetch:
        nothing is dropped while the node goes on being served.
        """
        await self._groups.submit((service, event.node), event)

    async def settled(self, key: tuple[str, str]) -> None:
        """Wait until the node's notifications received so far are applied."""
        await self._groups.settled(key)

    async def settled_for_reading(self, node: NodeState) -> bool:
        """Before a read of the node is answered from the cache: wait until the
        notifications received for it are applied. False if that takes more than
        READ_WAITS_AT_MOST (a database that hangs): the read then goes upstream."""
        try:
            async with asyncio.timeout(READ_WAITS_AT_MOST):
                await self._groups.settled((node.service, node.name))
        except TimeoutError:
            log.info("pubsub: %s: notifications still being applied; read upstream", node.name)
            return False
        return True

    def unwritten_steps(self, node: NodeState) -> Unwritten | None:
        """The item steps of the notifications received for the node and not written
        yet, in arrival order, as the write will take them (without parsed forms),
        and the version of memory's copy of the node they apply to; None if one of
        them is more than items with their payloads (a purge, a payload to fetch, an
        item over the size bound), there are more than AT_MOST_STEPS, or the node is
        being fetched."""
        if node.id in self._pending:
            return None
        since, events = self._groups.unapplied((node.service, node.name))
        if not events:
            return Unwritten(since, [])
        if len(events) > AT_MOST_STEPS:
            return None
        moves = bool(self.order.moves(node.service))
        steps = []
        for event in events:
            if event.kind != "items" or not all(item.payload for item in event.published):
                return None
            try:
                published = tuple(
                    self.intake.item_input(node, item, parse=False) for item in event.published
                )
            except SyncFailed:
                return None
            steps.append(ItemStep(event.retracted, published, moves))
        return Unwritten(since, steps)

    def _items_version(self, key: tuple[str, str]) -> object:
        node = self.cache.node(*key)
        return None if node is None else self.cache.items_version(node)

    def unsettled(self, key: tuple[str, str]) -> bool:
        """Whether notifications received for the node are not applied yet."""
        return self._groups.unsettled(key)

    def _alone_only(self, key: tuple[str, str], events: list[NodeEvent]) -> bool:
        """Whether the node's events must be applied on their own, not in a group."""
        node = self.cache.node(*key)
        return (
            node is None
            or node.id in self._pending
            or self._order.locked(key)
            or not all(
                event.kind == "items" and all(item.payload for item in event.published)
                for event in events
            )
        )

    async def _apply_alone(self, key: tuple[str, str], events: list[NodeEvent]) -> None:
        service, name = key
        async with self._order.hold(key):
            try:
                # One by one, not coalesced: a merged step trims once, after all its
                # publications (see group_write.OneByOne).
                for event in events:
                    await self._apply(service, event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.out_of_service(service, name, f"{events[-1].kind} notification: {exc!r}")

    async def _apply_together(self, group: dict[tuple[str, str], list[NodeEvent]]) -> None:
        """Publications and retractions for several nodes, in one transaction."""
        async with AsyncExitStack() as stack:
            for key in group:
                await stack.enter_async_context(self._order.hold(key))
            changes: list[tuple[NodeState, list[ItemStep]]] = []
            moves: list[bool | None] = []
            for (service, name), events in group.items():
                node = self.cache.node(service, name)
                if node is None:
                    continue
                moves.append(self.order.moves(service))
                # Not merged where republished items move: a merged step restamps
                # them all at one time, before the step's new items.
                runs = events if moves[-1] else coalesced(events)
                steps = [
                    ItemStep(
                        run.retracted,
                        tuple(self.intake.item_input(node, item) for item in run.published),
                        bool(moves[-1]),
                        merged=all(run is not event for event in events),
                    )
                    for run in runs
                ]
                changes.append((node, steps))
            applied = await self.cache.apply_steps(changes)
            # Committed: nothing after this may fail the group (it would be applied
            # again, node by node).
            try:
                for (_, steps), (node, again), moving in zip(changes, applied, moves, strict=True):
                    for step, held in zip(steps, again, strict=True):
                        if step.published:
                            self.evictions.published(node, len(step.published))
                        if held and moving is None:
                            await self._learn_order(node, held)
            except Exception:
                log.exception("pubsub: after a group write, learning an item order failed")

    def out_of_service(self, service: str, name: str, why: str) -> None:
        """Stop answering the node from the cache, and fetch it again."""
        node = self.cache.node(service, name)
        if node is None:
            return
        log.warning("pubsub: %s/%s: %s; re-fetching it", service, name, why[:300])
        self.cache.unconfirm(node)
        if node.sync_state != NO_SYNC:
            self.schedule(node)

    async def written(self, service: str, events: list[NodeEvent]) -> None:
        """A write Herald forwarded was accepted upstream: apply it as the notification
        it would have caused (Prosody 0.12 notifies a retraction only when asked to)."""
        for event in events:
            await self.apply(service, event)

    async def refresh_items(self, node: NodeState, item_ids: list[str]) -> None:
        """Read these items upstream as Herald; store what upstream holds now.

        For notifications without payloads (pubsub#deliver_payloads off) and for
        publications made through the proxy.
        """
        request = items_read(node.name, item_ids=item_ids)
        try:
            reply = await self.upstream.as_herald("get", node.service, items_payload(request))
        except UpstreamError as exc:
            if exc.condition != "item-not-found":
                raise
            found = []
        else:
            found = received_items(result_items(reply), self.serialize)
        held = {item.item_id for item in found}
        gone = [i for i in item_ids if i not in held]
        if gone:
            await self.cache.retract_items(node, gone)
        wanted = set(item_ids)
        found = [item for item in found if item.item_id in wanted]
        if found:
            await self._publish(node, NodeEvent("items", node.name, tuple(found)))

    async def _apply(self, service: str, event: NodeEvent) -> None:
        node = self.cache.node(service, event.node)
        if node is None:
            return
        held = self._pending.get(node.id)
        if held is not None and event.kind in ("items", "purge"):
            held.append(event)
            return
        if event.kind == "delete":
            self.open_nodes.forget((service, event.node))
            await self.cache.delete(node)
            log.info("pubsub: %s/%s deleted upstream; dropped", service, event.node)
        elif event.kind == "purge":
            await self.cache.purge_items(node)
        elif event.kind == "configuration":
            # What was known of its access no longer holds until checked again.
            self.open_nodes.forget((service, event.node))
            await self.verify(node)
        elif event.kind == "stale":
            self.out_of_service(service, event.node, "changed in a way Herald cannot apply")
        elif event.kind == "items":
            if event.retracted:
                await self.cache.retract_items(node, list(event.retracted))
            # Without payloads (pubsub#deliver_payloads off) an item is only its id:
            # fetch it rather than store it empty.
            bare = [item.item_id for item in event.published if not item.payload]
            full = tuple(item for item in event.published if item.payload)
            if full:
                await self._publish(node, replace(event, published=full))
            if bare:
                await self.refresh_items(node, bare)

    async def _publish(self, node: NodeState, event: NodeEvent) -> None:
        ids = [item.item_id for item in event.published]
        again = [item.item_id for item in await self.cache.held(node, ids)]
        moves = self.order.moves(node.service)
        node = await self.cache.upsert_items(
            node,
            [self.intake.item_input(node, i) for i in event.published],
            moved=again if moves else (),
        )
        self.evictions.published(node, len(ids))
        if again and moves is None:
            await self._learn_order(node, again)

    async def _learn_order(self, node: NodeState, again: list[str]) -> None:
        """Find out, in the background, where this service puts republished items."""
        held = await self.cache.items(node)
        place = {item.item_id: n for n, item in enumerate(held)}
        newer = next((i.item_id for i in reversed(held) if i.item_id not in again), None)
        older = [i for i in again if newer is not None and place.get(i, -1) < place[newer]]
        if newer is None or not older:
            return  # the republished items were the newest anyway: nothing to learn
        key = (node.service, node.name)

        async def learn() -> None:
            if await self.order.learn(node.service, node.name, older[0], newer):
                async with self._order.hold(key):
                    current = self.cache.node(*key)
                    if current is not None:
                        await self.cache.move_to_newest(current, again)

        self._chores.start(learn())

    async def _drop_evicted(self, key: tuple[str, str], probed: dict[str, datetime]) -> None:
        """Drop items upstream no longer holds, unless republished since the probe."""
        async with self._order.hold(key):
            node = self.cache.node(*key)
            if node is None or not node.serves_from_cache or node.id in self._pending:
                return
            # The probed items only: reading the whole node (and keeping it in
            # memory) for them cost what the probe saved.
            gone = [
                i.item_id
                for i in await self.cache.held(node, list(probed))
                if probed.get(i.item_id) == i.updated
            ]
            if gone:
                await self.cache.retract_items(node, gone)
