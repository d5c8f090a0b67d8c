"""Comparing cached nodes with upstream where notifications are not guaranteed.

Prosody 0.12 and ejabberd 23.01 promise no notification for every change
(pubsub#notify_retract off, a subscription the owner removed or the server dropped
silently, ...): a node whose upstream does not say XEP-0460 always-notify is
compared with upstream at least every pubsub.reconcile_interval while it is read:
its item ids (disco#items on the node, no payloads) and Herald's own subscription.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from xml.etree import ElementTree as ET

from component.keyed_locks import KeyedLocks
from component.pubsub import tracing
from component.pubsub.cache import Cache, utcnow
from component.pubsub.node_state import NodeState
from component.pubsub.upstream import Upstream, UpstreamError
from component.xmpp.namespaces import DISCO_ITEMS_NS, PUBSUB_NS

log = logging.getLogger(__name__)

RECONCILE_EVERY = 60.0  # default pubsub.reconcile_interval, seconds
# Seconds a comparison waits for the notifications of items upstream already lists
# to arrive (then for those that arrived to be applied, however long that takes).
NOTIFICATION_GRACE = 0.5
# Comparisons in a row left undecided by notifications before the node is re-fetched.
ATTEMPTS = 3


class Reconciler:
    """When each cached node was last compared with upstream, and the comparisons."""

    def __init__(
        self,
        upstream: Upstream,
        cache: Cache,
        order: KeyedLocks[tuple[str, str]],
        out_of_service: Callable[[str, str, str], None],
        proxy_jid: str,
        interval: float = RECONCILE_EVERY,
        *,
        settled: Callable[[tuple[str, str]], Awaitable[None]],
    ) -> None:
        self.upstream = upstream
        self.cache = cache
        self.order = order  # the synchroniser's per-node notification order
        self.out_of_service = out_of_service
        self.proxy_jid = proxy_jid
        self.interval = interval
        # Waits until the node's notifications received so far are applied.
        self.settled = settled
        # When each node was last compared with upstream (a full fetch counts), in
        # loop time; and the nodes whose upstream promises every notification.
        self.compared: dict[int, float] = {}
        self._notifying: set[int] = set()
        self._running: dict[int, asyncio.Task[None]] = {}

    def fetched(self, node_id: int, at: float, always_notify: bool) -> None:
        """A full fetch of the node started at loop time `at` just completed."""
        self.compared[node_id] = at
        if always_notify:
            self._notifying.add(node_id)
        else:
            self._notifying.discard(node_id)

    def due(self, node: NodeState) -> str | None:
        """ "now" when the node must be compared with upstream before it is served,
        "soon" when a comparison should start in the background, else None."""
        if node.id in self._notifying:
            return None
        age = asyncio.get_running_loop().time() - self.compared.get(node.id, float("-inf"))
        if age >= self.interval:
            return "now"
        return "soon" if age >= self.interval / 2 else None

    def comparing(self, node: NodeState) -> asyncio.Task[None]:
        """The node's comparison with upstream, shared by everyone who waits for it."""
        task = self._running.get(node.id)
        if task is None or task.done():
            task = asyncio.create_task(self.compare(node))
            self._running[node.id] = task
            task.add_done_callback(lambda done: self._compared_done(node.id, done))
        return task

    def _compared_done(self, node_id: int, task: asyncio.Task[None]) -> None:
        if self._running.get(node_id) is task:
            del self._running[node_id]
        failure = None if task.cancelled() else task.exception()
        if failure is not None and not isinstance(failure, UpstreamError):
            log.error("pubsub: reconciling a node failed", exc_info=failure)

    async def compare(self, node: NodeState) -> None:
        """Compare the node's item ids and Herald's subscription with upstream's.

        Retractions upstream did not announce are applied; anything else that
        differs (new items, a lost subscription) takes the node out of service and
        fetches it again. Raises UpstreamError when upstream cannot be asked now.
        """
        key = (node.service, node.name)
        for _ in range(ATTEMPTS):
            if await self._compare_once(key):
                return
        self.out_of_service(*key, "it kept changing while compared with upstream")

    async def _compare_once(self, key: tuple[str, str]) -> bool:
        """One comparison; False when notifications applied meanwhile leave it
        undecided (an item upstream did not list was written after the question)."""
        current = self.cache.node(*key)
        if current is None or not current.serves_from_cache:
            return True
        tracing.step("compare-start", key[1])
        asked = asyncio.get_running_loop().time()
        since = utcnow()  # items written from now on may postdate upstream's answer
        # Upstream is asked without holding the node's notification order: its
        # notifications go on being applied meanwhile (they waited for both answers
        # before), and what they wrote is told apart below by its time.
        upstream_ids = await self._item_ids(current)
        if not await self._subscribed(current):
            self.out_of_service(*key, "Herald's subscription upstream is gone")
            return True
        listed = set(upstream_ids)
        async with self.order.hold(key):
            current = self.cache.node(*key)
            if current is None or not current.serves_from_cache:
                return True
            held = await self.cache.items(current)
            unlisted = [item for item in held if item.item_id not in listed]
            # Written before the question and not listed in the answer: retracted
            # upstream without a notification (or with one still on its way).
            gone = [item.item_id for item in unlisted if item.updated < since]
            known = {item.item_id for item in held}
            # A truncated node holds only the newest items: older ones upstream are
            # expected to be missing here.
            new = [] if current.truncated else [i for i in upstream_ids if i not in known]
            if gone:
                await self.cache.retract_items(current, gone)
                log.info(
                    "pubsub: %s/%s: %d item(s) retracted upstream without notification; dropped",
                    *key,
                    len(gone),
                )
            if len(gone) < len(unlisted):
                return False  # written since the question: whether upstream has them is open
            if not new:
                self.compared[current.id] = asked
                tracing.step("compare-end", key[1], "same")
                return True
        # Items upstream lists that the cache lacks: their notifications may still be
        # on the way (upstream answers the listing before it notifies), or retractions
        # applied since the question removed them. Look again once notifications had
        # time to arrive and what arrived is applied; only what upstream still lists
        # and the cache still lacks takes the node out.
        tracing.step("compare-grace", key[1], ",".join(new))
        await asyncio.sleep(NOTIFICATION_GRACE)
        await self.settled(key)
        still = set(await self._item_ids(current))
        async with self.order.hold(key):
            current = self.cache.node(*key)
            if current is None or not current.serves_from_cache:
                return True
            wanted = [i for i in new if i in still]
            known = {item.item_id for item in await self.cache.held(current, wanted)}
            missing = [i for i in wanted if i not in known]
            if missing:
                self.out_of_service(*key, f"{len(missing)} item(s) upstream never notified")
                return True
            self.compared[current.id] = asked
            tracing.step("compare-end", key[1], "notified")
            return True

    async def _item_ids(self, node: NodeState) -> list[str]:
        """The ids of the items upstream holds (disco#items on the node: no payloads)."""
        query = ET.Element(f"{{{DISCO_ITEMS_NS}}}query", {"node": node.name})
        reply = await self.upstream.as_herald("get", node.service, query)
        return [
            item.get("name", "")
            for item in reply.iter(f"{{{DISCO_ITEMS_NS}}}item")
            if item.get("name")
        ]

    async def _subscribed(self, node: NodeState) -> bool:
        """Whether upstream still lists Herald's subscription to the node."""
        pubsub = ET.Element(f"{{{PUBSUB_NS}}}pubsub")
        ET.SubElement(pubsub, f"{{{PUBSUB_NS}}}subscriptions", {"node": node.name})
        reply = await self.upstream.as_herald("get", node.service, pubsub)
        return any(
            sub.get("node") in (None, node.name)
            and sub.get("subscription") == "subscribed"
            and (sub.get("jid") or "").split("/")[0] == self.proxy_jid
            for sub in reply.iter(f"{{{PUBSUB_NS}}}subscription")
        )
