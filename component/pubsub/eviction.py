"""Noticing items that upstream dropped without a notification.

XEP-0060 lets a service drop a node's oldest items once it holds pubsub#max_items.
Neither Prosody 0.12 nor ejabberd 23.01 publishes that limit in the node metadata,
and Prosody sends no retraction when it drops one (its default limit is 20). So after
N items are published on a cached node whose limit is unknown, Herald asks upstream
for its N oldest cached items (one small request per burst of publications): those
upstream no longer has are dropped from the cache too. Upstream drops oldest first,
so once one asked-for item is still there, nothing newer went. A probe that fails has
the node fetched again, so no dropped item can stay behind.

Upstream answers with the payloads of the asked items it still holds, which costs it
about what the publications did: so the first round asks for the oldest item alone.
Below upstream's limit it is still there, and the probe costs one item; at the limit
it is gone, and the next rounds ask for the rest (gone, so cheap to answer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from component.background import Background
from component.pubsub.cache import Cache
from component.pubsub.node_state import NodeState
from component.pubsub.requests import items_payload, items_read
from component.pubsub.stanzas import result_items
from component.pubsub.upstream import Upstream, UpstreamError

log = logging.getLogger(__name__)

PROBE_DELAY = 1.0  # seconds: publications arriving meanwhile share one probe
MAX_PROBED = 50  # items asked about in one request; more are asked in further rounds

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
        self._running: dict[NodeKey, asyncio.Task[None]] = {}
        self._probes = Background("pubsub: an eviction probe")
        self._closed = False

    def published(self, node: NodeState, count: int) -> None:
        """count items were just published on the node: probe it soon."""
        if self._closed or node.upstream_max_items is not None:
            return  # closing, or the cache is trimmed to upstream's own limit
        key = (node.service, node.name)
        if key not in self._published:
            self._probes.start(self._probe(key))
        self._published[key] = self._published.get(key, 0) + count

    async def close(self) -> None:
        """Cancel pending probes; publications from now on start none."""
        self._closed = True
        await self._probes.close()

    async def _probe(self, key: NodeKey) -> None:
        await asyncio.sleep(PROBE_DELAY)
        # One probe at a time per node: the next one must see what this one dropped.
        before = self._running.get(key)
        if before is not None:
            await asyncio.wait([before])
        this = asyncio.current_task()
        assert this is not None
        self._running[key] = this
        try:
            # Publications from now on get a probe of their own: this one may be
            # answered before upstream has stored them.
            await self._rounds(key, self._published.pop(key, 0))
        finally:
            if self._running.get(key) is this:
                del self._running[key]

    async def _rounds(self, key: NodeKey, count: int) -> None:
        first = True
        while count > 0:
            node = self.cache.node(*key)
            if node is None or not node.serves_from_cache:
                return
            asked = min(count, 1 if first else MAX_PROBED)
            first = False
            count -= asked
            try:
                oldest = await self.cache.oldest(node, asked)
                gone = await self._missing_upstream(node, [item.item_id for item in oldest])
            except Exception as exc:
                reason = exc.condition if isinstance(exc, UpstreamError) else repr(exc)
                log.info("pubsub: cannot probe %s/%s (%s); fetching it again", *key, reason)
                self.refetch(node)
                return
            if gone:
                log.info("pubsub: %s/%s: upstream dropped %d old items", *key, len(gone))
                await self.drop(key, {i.item_id: i.updated for i in oldest if i.item_id in gone})
            if len(gone) < len(oldest):
                return  # one of them is still there: nothing newer went

    async def _missing_upstream(self, node: NodeState, item_ids: list[str]) -> set[str]:
        """Which of the items upstream no longer has (it answers with those it has)."""
        if not item_ids:
            return set()
        payload = items_payload(items_read(node.name, item_ids=item_ids))
        # item-not-found here means the node is gone: raised, and the node is fetched
        # again, which finds that out.
        reply = await self.upstream.as_herald("get", node.service, payload)
        return set(item_ids) - {element.get("id") for element in result_items(reply)}
