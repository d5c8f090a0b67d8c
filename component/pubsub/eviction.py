"""Noticing items that upstream dropped without a notification.

XEP-0060 lets a service drop a node's oldest items once it holds pubsub#max_items.
Neither Prosody 0.12 nor ejabberd 23.01 publishes that limit in the node metadata,
and Prosody sends no retraction when it drops one (its default limit is 20). So after
N items are published on a cached node whose limit is unknown, Herald asks upstream
for its N oldest cached items (one small request per burst of publications): those
upstream no longer has are dropped from the cache too. A burst too large to ask about
item by item has the node fetched again instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from xml.etree import ElementTree as ET

from component.pubsub.cache import Cache, NodeState
from component.pubsub.upstream import Upstream, UpstreamError
from component.xmpp.namespaces import PUBSUB_NS

log = logging.getLogger(__name__)

PROBE_DELAY = 1.0  # seconds: publications arriving meanwhile share one probe
MAX_PROBED = 50  # items asked about in one probe; a larger burst re-fetches the node

NodeKey = tuple[str, str]
# Drops the items (id -> the `updated` time they had when probed) from the node,
# unless they changed since.
Drop = Callable[[NodeKey, dict[str, datetime]], Awaitable[None]]


class EvictionWatch:
    """Probes nodes after publications, and drops what upstream no longer holds."""

    def __init__(
        self, upstream: Upstream, cache: Cache, drop: Drop, refetch: Callable[[NodeState], None]
    ) -> None:
        self.upstream = upstream
        self.cache = cache
        self.drop = drop
        self.refetch = refetch
        self._published: dict[NodeKey, int] = {}  # publications not probed for yet
        self._tasks: set[asyncio.Task[None]] = set()

    def published(self, node: NodeState, count: int) -> None:
        """count items were just published on the node: probe it soon."""
        if node.upstream_max_items is not None:
            return  # the cache is trimmed to upstream's own limit
        key = (node.service, node.name)
        if key not in self._published:
            task = asyncio.create_task(self._probe(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._published[key] = self._published.get(key, 0) + count

    async def close(self) -> None:
        """Cancel pending probes."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _probe(self, key: NodeKey) -> None:
        await asyncio.sleep(PROBE_DELAY)
        # Publications from now on get a probe of their own: this one may be answered
        # before upstream has stored them.
        count = self._published.pop(key, 0)
        try:
            node = self.cache.node(*key)
            if node is None or not node.serves_from_cache:
                return
            if count > MAX_PROBED:
                self.refetch(node)
                return
            oldest = (await self.cache.items(node))[:count]
            gone = await self._missing_upstream(node, [item.item_id for item in oldest])
            if gone:
                log.info("pubsub: %s/%s: upstream dropped %d old items", *key, len(gone))
                await self.drop(key, {i.item_id: i.updated for i in oldest if i.item_id in gone})
        except UpstreamError as exc:
            log.debug("pubsub: cannot probe %s/%s: %s", *key, exc.condition)
        except Exception:
            log.exception("pubsub: probing %s/%s failed", *key)

    async def _missing_upstream(self, node: NodeState, item_ids: list[str]) -> set[str]:
        """Which of the items upstream no longer has (it answers with those it has)."""
        if not item_ids:
            return set()
        pubsub = ET.Element(f"{{{PUBSUB_NS}}}pubsub")
        items = ET.SubElement(pubsub, f"{{{PUBSUB_NS}}}items", {"node": node.name})
        for item_id in item_ids:
            ET.SubElement(items, f"{{{PUBSUB_NS}}}item", {"id": item_id})
        # item-not-found here means the node is gone: raised, and left to its
        # delete notification or the next verification.
        reply = await self.upstream.as_herald("get", node.service, pubsub)
        found = reply.findall(f"{{{PUBSUB_NS}}}pubsub/{{{PUBSUB_NS}}}items/{{{PUBSUB_NS}}}item")
        return set(item_ids) - {element.get("id") for element in found}
