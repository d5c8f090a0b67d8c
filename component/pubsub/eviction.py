"""Noticing items that upstream dropped without a notification.

XEP-0060 lets a service drop a node's oldest items once it holds pubsub#max_items.
Neither Prosody 0.12 nor ejabberd 23.01 publishes that limit in the node metadata,
and Prosody sends no retraction when it drops one (its default limit is 20). So after
new items arrive on a cached node whose limit is unknown, Herald asks upstream for
the oldest item it holds, one small request per burst of publications; if upstream
no longer has it, the node is fetched again, which makes the cache exact.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from xml.etree import ElementTree as ET

from component.pubsub.cache import Cache, NodeState
from component.pubsub.upstream import Upstream, UpstreamError
from component.xmpp.namespaces import PUBSUB_NS

log = logging.getLogger(__name__)

PROBE_DELAY = 1.0  # seconds: publications arriving meanwhile share one probe


class EvictionWatch:
    """Probes nodes after publications; asks for a re-fetch when items went missing."""

    def __init__(
        self, upstream: Upstream, cache: Cache, refetch: Callable[[NodeState], None]
    ) -> None:
        self.upstream = upstream
        self.cache = cache
        self.refetch = refetch
        self._due: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def published(self, node: NodeState) -> None:
        """Items were just published on the node: check upstream still has the oldest."""
        key = (node.service, node.name)
        if node.upstream_max_items is not None or key in self._due:
            return
        self._due.add(key)
        task = asyncio.create_task(self._probe(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel pending probes."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _probe(self, key: tuple[str, str]) -> None:
        await asyncio.sleep(PROBE_DELAY)
        # Publications from now on need a probe of their own: this one may be
        # answered before upstream has stored them.
        self._due.discard(key)
        node = self.cache.node(*key)
        if node is None or not node.serves_from_cache:
            return
        items = await self.cache.items(node)
        if not items:
            return
        oldest = items[0].item_id
        try:
            if await self._upstream_has(node, oldest):
                return
        except UpstreamError as exc:
            log.debug("pubsub: cannot probe %s/%s: %s", *key, exc.condition)
            return
        except Exception:
            log.exception("pubsub: probing %s/%s failed", *key)
            return
        log.info("pubsub: %s/%s dropped items upstream without notice; re-fetching", *key)
        self.refetch(node)

    async def _upstream_has(self, node: NodeState, item_id: str) -> bool:
        pubsub = ET.Element(f"{{{PUBSUB_NS}}}pubsub")
        items = ET.SubElement(pubsub, f"{{{PUBSUB_NS}}}items", {"node": node.name})
        ET.SubElement(items, f"{{{PUBSUB_NS}}}item", {"id": item_id})
        try:
            reply = await self.upstream.as_herald("get", node.service, pubsub)
        except UpstreamError as exc:
            if exc.condition == "item-not-found":
                return False
            raise
        found = reply.findall(f"{{{PUBSUB_NS}}}pubsub/{{{PUBSUB_NS}}}items/{{{PUBSUB_NS}}}item")
        return any(element.get("id") == item_id for element in found)
