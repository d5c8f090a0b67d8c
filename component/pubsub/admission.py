"""Which nodes are cached: a node a sync rule matches is admitted once proven open;
a cached node is re-verified, and dropped once it is not open any more.

Only a node proven open gets a row, so requests for arbitrary node names on
arbitrary services cannot fill the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from component.pubsub.access import NodeMeta, shareable
from component.pubsub.cache import Cache
from component.pubsub.item_intake import CacheLimits
from component.pubsub.node_metadata import NodeMetadata
from component.pubsub.node_state import NodeState
from component.pubsub.upstream import UpstreamError
from component.storage.records import COMPLETED, NO_SYNC

log = logging.getLogger(__name__)

MAX_NODES = 10_000
CONSIDER_AGAIN = 60.0  # seconds before a node found closed is looked at again
# Errors that say nothing about the node: keep serving what is cached.
TRANSIENT = frozenset({"remote-server-timeout", "remote-server-not-found", "internal-server-error"})


class Admission:
    """Starts caching open nodes and stops caching nodes that are not open.

    schedule(node) starts the node's sync; unsubscribe(node) ends Herald's upstream
    subscription to it.
    """

    def __init__(
        self,
        cache: Cache,
        metadata: NodeMetadata,
        limits: CacheLimits,
        schedule: Callable[[NodeState], None],
        unsubscribe: Callable[[NodeState], Awaitable[None]],
    ) -> None:
        self.cache = cache
        self.metadata = metadata
        self.limits = limits
        self.schedule = schedule
        self.unsubscribe = unsubscribe
        self._considered: dict[tuple[str, str], float] = {}

    async def consider(
        self, service: str, name: str, analyser: str | None, meta: NodeMeta | None = None
    ) -> None:
        """A node a sync rule matches was asked for: cache it if it is open."""
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
                meta = await self.metadata.read(service, name)
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
            meta = await self.metadata.read(node.service, node.name)
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
        await self.unsubscribe(node)
        why = (
            f"items expire after {meta.item_expire} s"
            if shareable(meta)
            else f"not open ({meta.access_model})"
        )
        log.info("pubsub: %s/%s: %s: not cached", node.service, node.name, why)
