"""Keeping cached nodes in sync with upstream.

A node that matches a sync rule and is readable by anyone is synchronised: Herald
subscribes as itself, fetches every item (RSM pages when upstream has them), and
marks the node completed. Notifications then keep it current. A failed sync leaves
the node uncached (served from upstream) and is retried with backoff, forever.

The Synchroniser decides when syncs run (at most CONCURRENT_SYNCS at once) and does
the periodic upkeep; the work is done by its parts, which callers reach through it:

- node_metadata.NodeMetadata: metadata reads, and the memo of open nodes;
- admission.Admission: which nodes are cached (consider, verify, stop caching);
- node_sync.NodeSync: one node's sync, under a lease;
- sync_upstream.SyncUpstream: Herald's subscriptions; full fetches in RSM pages;
- notifications.NotificationApplier: notifications, group commit, per-node order;
- item_intake.ItemIntake: received items as stored, within CacheLimits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from component.keyed_locks import KeyedLocks
from component.pubsub.access import NodeMeta
from component.pubsub.admission import Admission
from component.pubsub.cache import Cache, utcnow
from component.pubsub.item_intake import CacheLimits, ItemIntake
from component.pubsub.node_metadata import NodeMetadata
from component.pubsub.node_state import NodeState
from component.pubsub.node_sync import NodeSync
from component.pubsub.notifications import NotificationApplier
from component.pubsub.reconcile import RECONCILE_EVERY, Reconciler
from component.pubsub.rules import Registry
from component.pubsub.stanzas import NodeEvent, Serializer
from component.pubsub.sync_upstream import SyncUpstream
from component.pubsub.upstream import Upstream
from component.storage.records import COMPLETED, IN_PROGRESS, NO_SYNC

log = logging.getLogger(__name__)

CONCURRENT_SYNCS = 4
RECHECK_EVERY = 300.0  # seconds between access re-checks of idle cached nodes


class Synchroniser:
    """Runs node synchronisations and applies notifications.

    Decides when syncs run and does the upkeep; the rest it hands to its parts.
    """

    def __init__(
        self,
        upstream: Upstream,
        cache: Cache,
        registry: Registry,
        proxy_jid: str,
        serialize: Serializer,
        reconcile_interval: float = RECONCILE_EVERY,
        limits: CacheLimits | None = None,
    ) -> None:
        limits = limits or CacheLimits()
        self.cache = cache
        self.registry = registry
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(CONCURRENT_SYNCS)
        self._rechecked: dict[int, float] = {}
        # Every metadata read lands here, so a node found closed for any reason stops
        # being read as Herald on the miss path at once.
        self.metadata = NodeMetadata(upstream)
        self.open_nodes = self.metadata.open_nodes
        self.sync_upstream = SyncUpstream(upstream, cache, proxy_jid, serialize)
        self.admission = Admission(
            cache, self.metadata, limits, self.schedule, self.sync_upstream.unsubscribe
        )
        intake = ItemIntake(limits, registry)
        # One lock per node: its notifications, the end of its sync, and comparisons
        # with upstream take turns.
        order: KeyedLocks[tuple[str, str]] = KeyedLocks()
        self.notifications = NotificationApplier(
            upstream,
            cache,
            serialize,
            intake,
            order,
            self.open_nodes,
            self.admission.verify,
            self.schedule,
        )
        self.reconciler = Reconciler(
            upstream,
            cache,
            order,
            self.notifications.out_of_service,
            proxy_jid,
            reconcile_interval,
            settled=self.notifications.settled,  # a comparison waits for what was received
        )
        self.node_sync = NodeSync(
            cache,
            self.metadata,
            self.admission,
            self.sync_upstream,
            intake,
            self.notifications,
            order,
            self.reconciler,
        )

    @property
    def keeps_subscription(self) -> Callable[[str, str], bool]:
        """Whether local subscribers (pubsub/held.py) share Herald's subscription to a
        node: then it is theirs to end, not the cache's."""
        return self.sync_upstream.keeps_subscription

    @keeps_subscription.setter
    def keeps_subscription(self, keeps: Callable[[str, str], bool]) -> None:
        self.sync_upstream.keeps_subscription = keeps

    # -- what the parts do, for callers -----------------------------------------------

    async def node_meta(self, service: str, node: str) -> NodeMeta:
        """disco#info on the node, as Herald (NodeMetadata.read)."""
        return await self.metadata.read(service, node)

    async def consider(
        self, service: str, name: str, analyser: str | None, meta: NodeMeta | None = None
    ) -> None:
        """A node a sync rule matches was asked for: cache it if it is open."""
        await self.admission.consider(service, name, analyser, meta)

    async def verify(self, node: NodeState) -> None:
        """Re-read a cached node's access model; stop caching it if it is not open now."""
        await self.admission.verify(node)

    async def stop_caching(self, node: NodeState, meta: NodeMeta) -> None:
        """Drop a node that is no longer open, whose items expire, or that is gone."""
        await self.admission.stop_caching(node, meta)

    async def sync(self, node: NodeState) -> None:
        """Synchronise one node now, if this process wins its lease."""
        await self.node_sync.sync(node)

    async def apply(self, service: str, event: NodeEvent) -> None:
        """Apply one notification from `service` to the cached node it concerns."""
        await self.notifications.apply(service, event)

    async def written(self, service: str, events: list[NodeEvent]) -> None:
        """A write Herald forwarded was accepted upstream: apply it as a notification."""
        await self.notifications.written(service, events)

    def out_of_service(self, service: str, name: str, why: str) -> None:
        """Stop answering the node from the cache, and fetch it again."""
        self.notifications.out_of_service(service, name, why)

    # -- scheduling -------------------------------------------------------------------

    def schedule(self, node: NodeState) -> None:
        """Start syncing the node in the background, unless it already is."""
        task = self._tasks.get(node.id)
        if task is not None and not task.done():
            return
        task = asyncio.create_task(self._run(node))
        self._tasks[node.id] = task
        task.add_done_callback(lambda done: self._finished(node.id, done))

    def resync(self, node: NodeState) -> None:
        """Fetch the node again because an administrator asked; it is not answered
        from the cache until then. A sync running now may have read upstream before
        the request: another one follows it."""
        self.cache.unconfirm(node)
        task = self._tasks.get(node.id)
        if task is None or task.done():
            self.schedule(node)
            return

        def again(_done: asyncio.Task[None]) -> None:
            current = self.cache.node(node.service, node.name)
            if current is not None and current.id == node.id:
                self.schedule(current)

        task.add_done_callback(again)

    def forget_purged(self, node: NodeState) -> None:
        """An administrator purged the node from the database: stop answering it from
        memory and stop its sync, at once (then unsubscribe_purged())."""
        task = self._tasks.get(node.id)
        if task is not None:
            # Before the unsubscribe is sent, so no sync of it can subscribe after it.
            task.cancel()
        self.notifications.drop_held(node.id)
        self.cache.forget(node)

    async def unsubscribe_purged(self, node: NodeState) -> None:
        """Drop Herald's upstream subscription to a purged node (failures are logged),
        unless the node is cached again by now: its new sync subscribes, and must not
        be undone. The check and the sending happen in one step of the loop."""
        if node.sync_state != NO_SYNC and self.cache.node(node.service, node.name) is None:
            await self.sync_upstream.unsubscribe(node)

    def syncing(self, node: NodeState) -> bool:
        """Whether a sync of the node is running or queued in this process."""
        return node.id in self._tasks

    def _finished(self, node_id: int, task: asyncio.Task[None]) -> None:
        # A sync scheduled after this one finished, but before this callback ran, is
        # the node's task now: keep it.
        if self._tasks.get(node_id) is task:
            del self._tasks[node_id]
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            log.error("pubsub: sync bookkeeping failed", exc_info=failure)

    async def wait_idle(self) -> None:
        """Wait for every running sync (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        """Cancel running syncs, then the probes they may have started."""
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)
        await self.notifications.close()

    async def _run(self, node: NodeState) -> None:
        async with self._slots:
            await self.sync(node)

    # -- upkeep -----------------------------------------------------------------------

    def resync_all(self) -> None:
        """Re-fetch every synced node: notifications sent while we were away are lost.

        Until its re-fetch completes, no node is answered from the cache.
        """
        self.refetch({node.id for node in self.cache.nodes()})

    def refetch(self, node_ids: set[int]) -> None:
        """Re-fetch these nodes (those synced or being synced), each unconfirmed:
        not answered from the cache until its re-fetch completes."""
        for node in self.cache.nodes():
            if node.id in node_ids and node.sync_state in (COMPLETED, IN_PROGRESS):
                self.cache.unconfirm(node)
                self.schedule(node)

    async def upkeep(self, idle: timedelta) -> None:
        """One round of housekeeping: retries, idle eviction, access re-checks, flushes."""
        from component.storage import pubsub_nodes

        await self.cache.requests.flush()
        now = utcnow()
        async with self.cache.sessions() as session:
            due = await pubsub_nodes.due_for_sync(session, now)
            idle_nodes = await pubsub_nodes.idle_nodes(session, now - idle)
        for record in due:
            node = self.cache.node(record.service, record.name)
            if node is not None:
                self.schedule(node)
        for record in idle_nodes:
            node = self.cache.node(record.service, record.name)
            if node is None or self.syncing(node):
                continue
            if record.subscribed:
                await self.sync_upstream.unsubscribe(node)
            await self.cache.delete(node)
            log.info("pubsub: %s/%s idle; unsubscribed and dropped", node.service, node.name)
        loop_now = asyncio.get_running_loop().time()
        for node in self.cache.nodes():
            if self.syncing(node):
                continue
            # A sync interrupted by a crash leaves in-progress behind; a completed node
            # not re-fetched since we connected (its lease was held elsewhere) waits too.
            if node.sync_state == IN_PROGRESS or (
                node.sync_state == COMPLETED and not node.confirmed
            ):
                self.schedule(node)
                continue
            if loop_now - self._rechecked.get(node.id, 0.0) < RECHECK_EVERY:
                continue
            self._rechecked[node.id] = loop_now
            # Prosody can drop our subscription silently when a node stops being open;
            # and a node found closed may have opened since.
            if node.serves_from_cache:
                await self.verify(node)
            elif node.sync_state == NO_SYNC:
                analyser = self.registry.match(node.service, node.name, None)
                if analyser is not None and analyser.sync:
                    self.schedule(node)
        self.cache.forget_gone(self._rechecked)
        self.cache.forget_gone(self.reconciler.compared)
        await self.cache.gauges.refresh()
