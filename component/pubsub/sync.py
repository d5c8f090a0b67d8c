"""Keeping cached nodes in sync with upstream.

A node that matches a sync rule and is readable by anyone is synchronised: Herald
subscribes as itself, fetches every item (RSM pages when upstream has them), and
marks the node completed. Notifications then keep it current. A failed sync leaves
the node uncached (served from upstream) and is retried with backoff, forever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import timedelta
from xml.etree import ElementTree as ET

from component import metrics
from component.pubsub.access import DISCO_INFO_NS, NodeMeta, parse_node_meta, shareable
from component.pubsub.cache import Cache, NodeState, utcnow
from component.pubsub.rules import Registry
from component.pubsub.stanzas import (
    PUBSUB_NS,
    RSM_NS,
    NodeEvent,
    ReceivedItem,
    Serializer,
    received_items,
)
from component.pubsub.upstream import Upstream, UpstreamError
from component.storage.records import COMPLETED, ERROR, IN_PROGRESS, NO_SYNC, ItemInput

log = logging.getLogger(__name__)

RSM_FEATURE = "http://jabber.org/protocol/pubsub#rsm"
LEASE = timedelta(minutes=5)
PAGE = 100


def retry_delay(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min ... capped at 1 h: a failing node is retried, never given up."""
    return timedelta(seconds=min(3600, 30 * 2 ** max(0, attempts - 1)))


class SyncFailed(Exception):
    """A synchronisation could not complete; the text says why."""


class Synchroniser:
    """Runs node synchronisations and applies notifications."""

    def __init__(
        self,
        upstream: Upstream,
        cache: Cache,
        registry: Registry,
        proxy_jid: str,
        serialize: Serializer,
    ) -> None:
        self.upstream = upstream
        self.cache = cache
        self.registry = registry
        self.proxy_jid = proxy_jid
        self.serialize = serialize
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._dirty: set[int] = set()
        self._rsm: dict[str, bool] = {}

    # -- metadata ---------------------------------------------------------------------

    async def node_meta(self, service: str, node: str) -> NodeMeta:
        """disco#info on the node, as Herald; a missing node is exists=False."""
        query = ET.Element(f"{{{DISCO_INFO_NS}}}query", {"node": node})
        try:
            reply = await self.upstream.as_herald("get", service, query)
        except UpstreamError as exc:
            if exc.condition == "item-not-found":
                return NodeMeta(exists=False)
            raise
        found = reply.find(f"{{{DISCO_INFO_NS}}}query")
        return NodeMeta(exists=False) if found is None else parse_node_meta(found)

    async def _supports_rsm(self, service: str) -> bool:
        if service not in self._rsm:
            query = ET.Element(f"{{{DISCO_INFO_NS}}}query")
            reply = await self.upstream.as_herald("get", service, query)
            features = {f.get("var") for f in reply.iter(f"{{{DISCO_INFO_NS}}}feature")}
            self._rsm[service] = RSM_FEATURE in features
        return self._rsm[service]

    # -- scheduling -------------------------------------------------------------------

    def schedule(self, node: NodeState) -> None:
        """Start syncing the node in the background, unless it already is."""
        task = self._tasks.get(node.id)
        if task is not None and not task.done():
            self._dirty.add(node.id)
            return
        task = asyncio.create_task(self._run(node))
        self._tasks[node.id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(node.id, None))

    async def wait_idle(self) -> None:
        """Wait for every running sync (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        """Cancel running syncs."""
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def _run(self, node: NodeState) -> None:
        while True:
            self._dirty.discard(node.id)
            await self.sync(node)
            # Notifications that arrived mid-sync may be missing from what was fetched.
            if node.id not in self._dirty:
                return
            current = self.cache.node(node.service, node.name)
            if current is None:
                return
            node = current

    async def sync(self, node: NodeState) -> None:
        """Synchronise one node now, if this process wins its lease."""
        from component.storage import pubsub_repo as repo

        sessions = self.cache.sessions
        if not await repo.try_acquire_sync(sessions, node.id, self.owner, utcnow(), LEASE):
            log.debug("pubsub: %s/%s is being synced elsewhere", node.service, node.name)
            return
        try:
            node = await self.cache.set_state(node, sync_state=IN_PROGRESS)
            meta = await self.node_meta(node.service, node.name)
            if not shareable(meta):
                await self.stop_caching(node, meta)
                return
            await self._subscribe(node)
            fetched = await self._fetch_all(node)
            await self.cache.replace_items(node, [self._item_input(node, i) for i in fetched])
            await self.cache.set_state(
                node,
                sync_state=COMPLETED,
                shareable=True,
                access_model=meta.access_model,
                subscribed=True,
                sync_attempts=0,
                next_sync_at=None,
            )
            metrics.PUBSUB_SYNC_RUNS.labels(result="completed").inc()
            log.info("pubsub: synced %s/%s (%d items)", node.service, node.name, len(fetched))
        except (UpstreamError, SyncFailed) as exc:
            await self._failed(node, str(exc) if isinstance(exc, SyncFailed) else exc.condition)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pubsub: sync of %s/%s crashed", node.service, node.name)
            await self._failed(node, "internal error")
        finally:
            await repo.release_sync(sessions, node.id, self.owner)
            await self.cache.refresh_gauges()

    async def _failed(self, node: NodeState, reason: str) -> None:
        from component.storage import pubsub_repo as repo

        async with self.cache.sessions() as session:
            record = await repo.get_node_by_id(session, node.id)
        attempts = (record.sync_attempts if record else 0) + 1
        # Never half-cached: drop what was fetched; requests go upstream until a retry works.
        await self.cache.purge_items(node)
        await self.cache.set_state(
            node,
            sync_state=ERROR,
            sync_attempts=attempts,
            next_sync_at=utcnow() + retry_delay(attempts),
        )
        metrics.PUBSUB_SYNC_RUNS.labels(result="failed").inc()
        log.warning(
            "pubsub: sync of %s/%s failed (%s); retry in %s",
            node.service,
            node.name,
            reason,
            retry_delay(attempts),
        )

    async def stop_caching(self, node: NodeState, meta: NodeMeta) -> None:
        """Drop a node that is no longer open (or no longer exists) from the cache."""
        await self.cache.purge_items(node)
        if not meta.exists:
            await self.cache.delete(node)
            return
        await self._unsubscribe(node)
        await self.cache.set_state(
            node,
            sync_state=NO_SYNC,
            shareable=False,
            access_model=meta.access_model,
            subscribed=False,
        )
        log.info(
            "pubsub: %s/%s is not open (%s): not cached", node.service, node.name, meta.access_model
        )

    # -- upstream operations ----------------------------------------------------------

    async def _subscribe(self, node: NodeState) -> None:
        pubsub = ET.Element(f"{{{PUBSUB_NS}}}pubsub")
        ET.SubElement(
            pubsub, f"{{{PUBSUB_NS}}}subscribe", {"node": node.name, "jid": self.proxy_jid}
        )
        reply = await self.upstream.as_herald("set", node.service, pubsub)
        sub = reply.find(f".//{{{PUBSUB_NS}}}subscription")
        state = None if sub is None else sub.get("subscription")
        if state not in (None, "subscribed"):
            raise SyncFailed(f"subscription is {state}")

    async def _unsubscribe(self, node: NodeState) -> None:
        pubsub = ET.Element(f"{{{PUBSUB_NS}}}pubsub")
        ET.SubElement(
            pubsub, f"{{{PUBSUB_NS}}}unsubscribe", {"node": node.name, "jid": self.proxy_jid}
        )
        try:
            await self.upstream.as_herald("set", node.service, pubsub)
        except UpstreamError as exc:
            log.info("pubsub: unsubscribing from %s/%s: %s", node.service, node.name, exc.condition)

    async def _fetch_all(self, node: NodeState) -> list[ReceivedItem]:
        limit = self.cache.max_items_per_node
        if not await self._supports_rsm(node.service):
            items = await self._fetch_page(node, None)
            return items[-limit:]
        collected: list[ReceivedItem] = []
        seen: set[str] = set()
        before = ""
        # Newest page first (before=""), then older ones, until the limit or the start.
        while len(collected) < limit:
            page = await self._fetch_page(node, before)
            fresh = [i for i in page if i.item_id not in seen]
            if not fresh:
                break
            seen.update(i.item_id for i in fresh)
            collected = fresh + collected
            before = fresh[0].item_id
        return collected[-limit:]

    async def _fetch_page(self, node: NodeState, before: str | None) -> list[ReceivedItem]:
        pubsub = ET.Element(f"{{{PUBSUB_NS}}}pubsub")
        ET.SubElement(pubsub, f"{{{PUBSUB_NS}}}items", {"node": node.name})
        if before is not None:
            rsm = ET.SubElement(pubsub, f"{{{RSM_NS}}}set")
            ET.SubElement(rsm, f"{{{RSM_NS}}}max").text = str(PAGE)
            ET.SubElement(rsm, f"{{{RSM_NS}}}before").text = before
        reply = await self.upstream.as_herald("get", node.service, pubsub)
        items = reply.find(f"{{{PUBSUB_NS}}}pubsub/{{{PUBSUB_NS}}}items")
        return [] if items is None else received_items(items, self.serialize)

    def _item_input(self, node: NodeState, item: ReceivedItem) -> ItemInput:
        parsed = None
        analyser = self.registry.match(node.service, node.name, item.namespace)
        if analyser is not None and analyser.parser and item.element is not None:
            parsed = self.registry.parse(analyser.parser, item.element)
        return ItemInput(item.item_id, item.payload, parsed, item.publisher)

    # -- notifications ----------------------------------------------------------------

    async def apply(self, service: str, event: NodeEvent) -> None:
        """Apply one notification from `service` to the cached node it concerns."""
        node = self.cache.node(service, event.node)
        if node is None:
            return
        if node.sync_state == IN_PROGRESS:
            self._dirty.add(node.id)
        if event.kind == "delete":
            await self.cache.delete(node)
            log.info("pubsub: %s/%s deleted upstream; dropped", service, event.node)
        elif event.kind == "purge":
            await self.cache.purge_items(node)
        elif event.kind == "configuration":
            meta = await self.node_meta(service, event.node)
            if not shareable(meta):
                await self.stop_caching(node, meta)
        elif event.kind == "items":
            if event.retracted:
                await self.cache.retract_items(node, list(event.retracted))
            if event.published:
                await self.cache.upsert_items(
                    node, [self._item_input(node, i) for i in event.published]
                )
        await self.cache.refresh_gauges()

    # -- upkeep -----------------------------------------------------------------------

    def resync_all(self) -> None:
        """Re-fetch every synced node: notifications sent while we were away are lost."""
        for node in self.cache.nodes():
            if node.sync_state in (COMPLETED, IN_PROGRESS):
                self.schedule(node)

    async def upkeep(self, idle: timedelta, recheck: Callable[[NodeState], bool]) -> None:
        """One round of housekeeping: retries, idle eviction, access re-checks, flushes."""
        from component.storage import pubsub_repo as repo

        await self.cache.flush_requested()
        now = utcnow()
        async with self.cache.sessions() as session:
            due = await repo.due_for_sync(session, now)
            idle_nodes = await repo.idle_nodes(session, now - idle)
        for record in due:
            node = self.cache.node(record.service, record.name)
            if node is not None:
                self.schedule(node)
        for record in idle_nodes:
            node = self.cache.node(record.service, record.name)
            if node is None or node.id in self._tasks:
                continue
            if node.sync_state == COMPLETED:
                await self._unsubscribe(node)
            await self.cache.delete(node)
            log.info("pubsub: %s/%s idle; unsubscribed and dropped", node.service, node.name)
        # Prosody can drop our subscription silently when a node stops being open.
        for node in self.cache.nodes():
            if node.serves_from_cache and recheck(node):
                try:
                    meta = await self.node_meta(node.service, node.name)
                except UpstreamError:
                    continue
                if not shareable(meta):
                    await self.stop_caching(node, meta)
        await self.cache.refresh_gauges()
