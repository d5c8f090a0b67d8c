"""Keeping cached nodes in sync with upstream.

A node that matches a sync rule and is readable by anyone is synchronised: Herald
subscribes as itself, fetches every item (RSM pages when upstream has them), and
marks the node completed. Notifications then keep it current. A failed sync leaves
the node uncached (served from upstream) and is retried with backoff, forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from xml.etree import ElementTree as ET

from component import metrics
from component.background import Background
from component.keyed_locks import KeyedLocks
from component.paging import RsmRequest
from component.pubsub.access import NodeMeta, access_of, parse_node_meta, shareable
from component.pubsub.cache import Cache, utcnow
from component.pubsub.eviction import EvictionWatch
from component.pubsub.fetching import PAGE, FetchedPage, FullFetch
from component.pubsub.group_commit import GroupCommit
from component.pubsub.leases import abandoned_by, this_process
from component.pubsub.node_state import ItemStep, NodeState
from component.pubsub.openness import OpenNodes
from component.pubsub.ordering import RepublishOrder
from component.pubsub.reconcile import RECONCILE_EVERY, Reconciler
from component.pubsub.requests import items_payload, items_read
from component.pubsub.rules import Registry
from component.pubsub.stanzas import (
    NodeEvent,
    ReceivedItem,
    Serializer,
    received_items,
    result_items,
)
from component.pubsub.upstream import Upstream, UpstreamError
from component.sizes import utf8_size
from component.storage.records import COMPLETED, ERROR, IN_PROGRESS, NO_SYNC, ItemInput
from component.xmpp.namespaces import DISCO_INFO_NS, PUBSUB_NS, RSM_NS
from component.xmpp.numbers import count_in

log = logging.getLogger(__name__)

RSM_FEATURE = "http://jabber.org/protocol/pubsub#rsm"
LEASE = timedelta(minutes=5)
CONCURRENT_SYNCS = 4
MAX_NODES = 10_000
CONSIDER_AGAIN = 60.0  # seconds before a node found closed is looked at again
RECHECK_EVERY = 300.0  # seconds between access re-checks of idle cached nodes
# How long a node's metadata saying "open" lets misses on it be read as Herald. Served
# nodes are re-verified as often (Prosody 0.12 sends no configuration notifications).
OPEN_FOR = 5.0
# Errors that say nothing about the node: keep serving what is cached.
TRANSIENT = frozenset({"remote-server-timeout", "remote-server-not-found", "internal-server-error"})


def coalesced(events: list[NodeEvent]) -> list[NodeEvent]:
    """The same changes in fewer events: consecutive publications (no retractions)
    become one, as long as no item id repeats (a republication keeps its own step,
    since where it lands depends on the service)."""
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


def retry_delay(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min ... capped at 1 h: a failing node is retried, never given up."""
    return timedelta(seconds=min(3600, 30 * 2 ** max(0, attempts - 1)))


class SyncFailed(Exception):
    """A synchronisation could not complete; the text says why."""


@dataclass(frozen=True)
class CacheLimits:
    """What a hostile or careless upstream may make Herald cache.

    max_item_bytes: a node holding a larger item is not cached (served from upstream).
    max_nodes_per_service: beyond it, a service's further nodes are passed through.
    """

    max_item_bytes: int = 65_536
    max_nodes_per_service: int = 1_000


class Synchroniser:
    """Runs node synchronisations and applies notifications."""

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
        self.upstream = upstream
        self.limits = limits or CacheLimits()
        self.cache = cache
        self.registry = registry
        self.proxy_jid = proxy_jid
        self.serialize = serialize
        me = this_process()
        self.owner = str(me)
        self._abandoned = abandoned_by(me)
        self.lease = LEASE
        self._tasks: dict[int, asyncio.Task[None]] = {}
        # Notifications for a node whose fetch is running here wait for it to finish,
        # then apply on top of what was fetched. (Re-fetching instead would loop on
        # servers that replay the last item to every new subscription, as ejabberd does.)
        self._pending: dict[int, list[NodeEvent]] = {}
        self._rsm: dict[str, bool] = {}
        self._slots = asyncio.Semaphore(CONCURRENT_SYNCS)
        # Notifications for a node are applied one at a time, in arrival order: slixmpp
        # runs each stanza's handler as its own task, and a retract must not overtake
        # its publish. Other nodes' notifications do not wait.
        self._order: KeyedLocks[tuple[str, str]] = KeyedLocks()
        # Publications and retractions with payloads, for nodes nothing else holds,
        # are written for many nodes in one transaction; the rest node by node.
        self._groups: GroupCommit[tuple[str, str], NodeEvent] = GroupCommit(
            self._apply_together, self._apply_alone, self._alone_only
        )
        self._considered: dict[tuple[str, str], float] = {}
        self._rechecked: dict[int, float] = {}
        # Every metadata read lands here, so a node found closed for any reason stops
        # being read as Herald on the miss path at once.
        self.open_nodes = OpenNodes(ttl=OPEN_FOR)
        self.evictions = EvictionWatch(upstream, cache, self._drop_evicted, self.schedule)
        self.order = RepublishOrder(upstream)
        self._chores = Background("pubsub: learning an item order")
        self.reconciler = Reconciler(
            upstream, cache, self._order, self.out_of_service, proxy_jid, reconcile_interval
        )
        # Herald's upstream subscription to a node may also serve local subscribers
        # (pubsub/held.py): then it is theirs to end, not the cache's.
        self.keeps_subscription: Callable[[str, str], bool] = lambda _service, _node: False

    # -- metadata ---------------------------------------------------------------------

    async def node_meta(self, service: str, node: str) -> NodeMeta:
        """disco#info on the node, as Herald; a missing node is exists=False."""
        query = ET.Element(f"{{{DISCO_INFO_NS}}}query", {"node": node})
        key = (service, node)
        # What the answer says holds from when it was asked, not from when it came.
        asked = asyncio.get_running_loop().time()
        try:
            reply = await self.upstream.as_herald("get", service, query)
        except UpstreamError as exc:
            if exc.condition != "item-not-found":
                self.open_nodes.forget(key)
                raise
            meta = NodeMeta(exists=False)
        else:
            found = reply.find(f"{{{DISCO_INFO_NS}}}query")
            # An answer without a <query/> proves nothing, not even that the node is gone.
            meta = NodeMeta(exists=True) if found is None else parse_node_meta(found)
        self.open_nodes.note(key, access_of(meta), asked)
        return meta

    async def consider(
        self, service: str, name: str, analyser: str | None, meta: NodeMeta | None = None
    ) -> None:
        """A node a sync rule matches was asked for: cache it if it is open.

        Only a node proven open gets a row, so requests for arbitrary node names on
        arbitrary services cannot fill the database.
        """
        key = (service, name)
        now = asyncio.get_running_loop().time()
        if now - self._considered.get(key, -CONSIDER_AGAIN) < CONSIDER_AGAIN:
            return
        if len(self._considered) > MAX_NODES:
            self._considered.clear()
        self._considered[key] = now
        known = self.cache.node(service, name)
        if known is not None and known.sync_state != NO_SYNC:
            return  # syncing, synced, or retried by upkeep
        try:
            if meta is None:
                meta = await self.node_meta(service, name)
        except UpstreamError as exc:
            log.info("pubsub: cannot check %s/%s: %s", service, name, exc.condition)
            return
        if not meta.cacheable:
            return
        if known is None and len(self.cache.nodes()) >= MAX_NODES:
            log.warning("pubsub: %d nodes cached; not caching %s/%s", MAX_NODES, service, name)
            return
        if known is None and self.cache.count_on(service) >= self.limits.max_nodes_per_service:
            # Anyone able to create open nodes there could otherwise fill the cache.
            log.info(
                "pubsub: %s has pubsub.max_nodes_per_service (%d) nodes cached; "
                "%s passed through, not cached",
                service,
                self.limits.max_nodes_per_service,
                name,
            )
            return
        try:
            node = known or await self.cache.ensure(service, name, analyser)
        except Exception as exc:
            # The database is down: ask again at the next request, not in a minute.
            self._considered.pop(key, None)
            log.warning("pubsub: cannot record %s/%s now: %s", service, name, str(exc)[:200])
            return
        self.schedule(node)

    async def verify(self, node: NodeState) -> None:
        """Re-read a cached node's access model; stop caching it if it is not open now."""
        try:
            meta = await self.node_meta(node.service, node.name)
        except UpstreamError as exc:
            if exc.condition in TRANSIENT:
                log.info(
                    "pubsub: cannot re-verify %s/%s now: %s", node.service, node.name, exc.condition
                )
                return
            # Refused metadata (Prosody hides it for non-open nodes): not provably open.
            meta = NodeMeta(exists=True)
        if not meta.cacheable:
            await self.stop_caching(node, meta)
        elif meta.max_items != node.upstream_max_items and node.sync_state == COMPLETED:
            # Upstream now keeps a different number of items: fetch again to match it.
            self.schedule(node)

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
        self._pending.pop(node.id, None)
        self.cache.forget(node)

    async def unsubscribe_purged(self, node: NodeState) -> None:
        """Drop Herald's upstream subscription to a purged node (failures are logged),
        unless the node is cached again by now: its new sync subscribes, and must not
        be undone. The check and the sending happen in one step of the loop."""
        if node.sync_state != NO_SYNC and self.cache.node(node.service, node.name) is None:
            await self._unsubscribe(node)

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
        await self._groups.close()
        await self.evictions.close()
        await self._chores.close()

    async def _run(self, node: NodeState) -> None:
        async with self._slots:
            await self.sync(node)

    async def sync(self, node: NodeState) -> None:
        """Synchronise one node now, if this process wins its lease."""
        from component.storage import pubsub_leases

        sessions = self.cache.sessions
        # The lease and the in-progress state are one UPDATE: a crash can never leave
        # the lease taken and the node still marked completed.
        if not await pubsub_leases.try_acquire_sync(
            sessions,
            node.id,
            self.owner,
            utcnow(),
            self.lease,
            sync_state=IN_PROGRESS,
            abandoned=self._abandoned,
        ):
            log.debug("pubsub: %s/%s is being synced elsewhere", node.service, node.name)
            return
        key = (node.service, node.name)
        this_sync = asyncio.current_task()
        assert this_sync is not None
        keeper = asyncio.create_task(self._keep_lease(node, this_sync))
        try:
            node = await self.cache.set_state(node)  # in progress, as just written
            meta = await self.node_meta(node.service, node.name)
            if not meta.cacheable:
                await self.stop_caching(node, meta)
                return
            node = await self.cache.set_state(node, upstream_max_items=meta.max_items)
            fetched_at = asyncio.get_running_loop().time()
            self._pending[node.id] = []
            await self._subscribe(node)
            fetched, more = await self._fetch_all(node)
            node = await self.cache.replace_items(
                node, [self._item_input(node, i) for i in fetched], more_upstream=more
            )
            async with self._order.hold((node.service, node.name)):
                current = self.cache.node(node.service, node.name)
                if current is None or current.sync_state != IN_PROGRESS:
                    # Stopped meanwhile (closed, deleted): that decision stands; what
                    # this sync read under the old metadata is not kept.
                    if current is not None:
                        await self.cache.purge_items(current)
                    log.info("pubsub: %s/%s stopped being cached during its sync", *key)
                    return
                node = await self.cache.set_state(
                    node,
                    confirm=True,
                    sync_state=COMPLETED,
                    shareable=True,
                    access_model=meta.access_model,
                    subscribed=True,
                    sync_attempts=0,
                    next_sync_at=None,
                    last_synced=utcnow(),
                    last_error=None,
                )
                for event in self._pending.pop(node.id, []):
                    await self._apply(node.service, event)
                self.reconciler.fetched(node.id, fetched_at, meta.always_notify)
            metrics.PUBSUB_SYNC_RUNS.labels(result="completed").inc()
            log.info(
                "pubsub: synced %s/%s (%d items%s)",
                node.service,
                node.name,
                len(fetched),
                ", older ones left upstream" if node.truncated else "",
            )
        except (UpstreamError, SyncFailed) as exc:
            await self._failed(node, str(exc) if isinstance(exc, SyncFailed) else exc.condition)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pubsub: sync of %s/%s crashed", node.service, node.name)
            await self._failed(node, "internal error")
        finally:
            keeper.cancel()
            self._pending.pop(node.id, None)
            await pubsub_leases.release_sync(sessions, node.id, self.owner)
            await self.cache.refresh_gauges()

    async def _keep_lease(self, node: NodeState, sync: asyncio.Task[None]) -> None:
        """Renew the node's lease while its sync runs; stop the sync if it is lost.

        A sync may outlast one lease (a large node over a slow link); without renewal
        another process would start the same sync meanwhile.
        """
        from component.storage import pubsub_leases

        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            try:
                held = await pubsub_leases.renew_sync(
                    self.cache.sessions, node.id, self.owner, utcnow(), self.lease
                )
            except Exception as exc:  # the database may be back before the lease ends
                log.warning(
                    "pubsub: cannot renew the lease of %s/%s: %s", node.service, node.name, exc
                )
                continue
            if not held:
                log.warning(
                    "pubsub: lost the sync lease of %s/%s; leaving the sync to its holder",
                    node.service,
                    node.name,
                )
                sync.cancel()
                return

    async def _failed(self, node: NodeState, reason: str) -> None:
        from component.storage import pubsub_nodes

        async with self.cache.sessions() as session:
            record = await pubsub_nodes.get_node_by_id(session, node.id)
        attempts = (record.sync_attempts if record else 0) + 1
        # Never half-cached: drop what was fetched; requests go upstream until a retry works.
        await self.cache.purge_items(node)
        await self.cache.set_state(
            node,
            sync_state=ERROR,
            sync_attempts=attempts,
            next_sync_at=utcnow() + retry_delay(attempts),
            last_error=reason,
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
        """Drop a node that is no longer open, whose items expire, or that is gone.

        It stops being served before anything else happens: never an empty answer
        from a node being dropped.
        """
        self.cache.unconfirm(node)
        if not meta.exists:
            await self.cache.delete(node)
            return
        node = await self.cache.set_state(
            node,
            sync_state=NO_SYNC,
            shareable=False,
            access_model=meta.access_model,
            subscribed=False,
        )
        await self.cache.purge_items(node)
        await self._unsubscribe(node)
        why = (
            f"items expire after {meta.item_expire} s"
            if shareable(meta)
            else f"not open ({meta.access_model})"
        )
        log.info("pubsub: %s/%s: %s: not cached", node.service, node.name, why)

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
        if self.keeps_subscription(node.service, node.name):
            return
        pubsub = ET.Element(f"{{{PUBSUB_NS}}}pubsub")
        ET.SubElement(
            pubsub, f"{{{PUBSUB_NS}}}unsubscribe", {"node": node.name, "jid": self.proxy_jid}
        )
        try:
            await self.upstream.as_herald("set", node.service, pubsub)
        except UpstreamError as exc:
            log.info("pubsub: unsubscribing from %s/%s: %s", node.service, node.name, exc.condition)

    async def _fetch_all(self, node: NodeState) -> tuple[list[ReceivedItem], bool]:
        """Every item, oldest first, up to the limit; and whether older ones were left.

        Not every RSM upstream says so in disco (ejabberd 23.01 does not), so every
        fetch asks for RSM and looks at the answer (component/pubsub/fetching.py).
        """
        fetch = FullFetch(self.cache.limit(node))
        before: str | None = ""
        while before is not None:
            page = await self._fetch_rsm_page(node, before)
            self._rsm[node.service] = page.paged
            before = fetch.add(page)
        return fetch.result()

    async def _fetch_rsm_page(self, node: NodeState, before: str) -> FetchedPage:
        """One page, the one before the anchor (the newest page for an empty anchor).

        The anchor is a page's RSM <first/>, which need not be an item id (ejabberd
        pages by timestamp).
        """
        request = items_read(node.name, rsm=RsmRequest(max=PAGE, before=before))
        reply = await self.upstream.as_herald("get", node.service, items_payload(request))
        got = received_items(result_items(reply), self.serialize)
        answer = reply.find(f"{{{PUBSUB_NS}}}pubsub/{{{RSM_NS}}}set")
        if answer is None:
            return FetchedPage(got, paged=False)
        first = answer.find(f"{{{RSM_NS}}}first")
        anchor = None if first is None or not first.text else first.text
        index = None if first is None else count_in(first.get("index"))
        return FetchedPage(
            got, True, anchor, index, count_in(answer.findtext(f"{{{RSM_NS}}}count"))
        )

    def _item_input(self, node: NodeState, item: ReceivedItem) -> ItemInput:
        size = utf8_size(item.payload)
        if size > self.limits.max_item_bytes:
            # Caching the node without this item would answer differently from upstream:
            # the node is served from upstream instead (the sync fails, retried later).
            raise SyncFailed(
                f"item {item.item_id!r} is {size} bytes, over pubsub.max_item_bytes "
                f"({self.limits.max_item_bytes})"
            )
        parsed = None
        analyser = self.registry.match(node.service, node.name, item.namespace)
        if analyser is not None and analyser.parser and item.element is not None:
            parsed = self.registry.parse(analyser.parser, item.element)
        return ItemInput(item.item_id, item.payload, parsed, item.publisher)

    # -- notifications ----------------------------------------------------------------

    async def apply(self, service: str, event: NodeEvent) -> None:
        """Apply one notification from `service` to the cached node it concerns.

        One that cannot be applied takes the node out of service until a re-fetch:
        nothing is dropped while the node goes on being served.
        """
        await self._groups.submit((service, event.node), event)

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
                for run in coalesced(events):
                    await self._apply(service, run)
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
                steps = [
                    ItemStep(
                        run.retracted,
                        tuple(self._item_input(node, item) for item in run.published),
                        bool(moves[-1]),
                    )
                    for run in coalesced(events)
                ]
                changes.append((node, steps))
            applied = await self.cache.apply_steps(changes)
            for (_, steps), (node, again), moving in zip(changes, applied, moves, strict=True):
                for step, held in zip(steps, again, strict=True):
                    if step.published:
                        self.evictions.published(node, len(step.published))
                    if held and moving is None:
                        await self._learn_order(node, held)

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
            node, [self._item_input(node, i) for i in event.published], moved=again if moves else ()
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
            gone = [
                i.item_id
                for i in await self.cache.items(node)
                if probed.get(i.item_id) == i.updated
            ]
            if gone:
                await self.cache.retract_items(node, gone)

    # -- upkeep -----------------------------------------------------------------------

    def resync_all(self) -> None:
        """Re-fetch every synced node: notifications sent while we were away are lost.

        Until its re-fetch completes, no node is answered from the cache.
        """
        self.cache.unconfirm_all()
        for node in self.cache.nodes():
            if node.sync_state in (COMPLETED, IN_PROGRESS):
                self.schedule(node)

    async def upkeep(self, idle: timedelta) -> None:
        """One round of housekeeping: retries, idle eviction, access re-checks, flushes."""
        from component.storage import pubsub_nodes

        await self.cache.flush_requested()
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
                await self._unsubscribe(node)
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
        await self.cache.refresh_gauges()
