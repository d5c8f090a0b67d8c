"""Applying what administrators changed in the database to this process's memory.

`herald cache sync|purge|reset` (and the XEP-0050 commands) change the database and
log each change in ``pubsub_admin_requests``. A running Herald reads the log every
POLL_EVERY seconds: one indexed range query (``id > last seen``), the same on SQLite
and PostgreSQL. PostgreSQL's LISTEN/NOTIFY would save a second of latency at the cost
of a connection held outside the pool, reconnect handling, and a second code path
that SQLite would still need polling for.

Purges are applied by comparing memory with the database, not by trusting ids alone:
SQLite may hand a purged node's id to a new node. A node this process holds that the
database no longer has stops being served and synced at once, and its upstream
subscription is dropped. A node requested again later is simply cached anew.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from component.background import Background
from component.pubsub.cache import Cache
from component.pubsub.node_state import NodeState
from component.pubsub.sync import Synchroniser
from component.storage import cache_admin_repo as repo
from component.storage.cache_admin_repo import PURGED, RESET, RESYNC, AdminRequest

log = logging.getLogger(__name__)

POLL_EVERY: Final = 1.0  # seconds


class AdminWatch:
    """Reads the administrators' request log and applies it here."""

    def __init__(self, cache: Cache, synchroniser: Synchroniser) -> None:
        self.cache = cache
        self.synchroniser = synchroniser
        self._seen = 0
        self._lock = asyncio.Lock()
        self._failing = False
        self._unsubscribing = Background("pubsub: unsubscribing from purged nodes")

    async def close(self) -> None:
        """Stop the unsubscriptions still running."""
        await self._unsubscribing.close()

    async def skip_past(self) -> None:
        """Start after the newest logged request: call before loading the cache,
        which then already reflects everything logged so far."""
        async with self.cache.sessions() as session:
            self._seen = await repo.last_request_id(session)

    async def run(self, every: float = POLL_EVERY) -> None:
        """Poll until cancelled; a database outage is logged once, then retried."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._failing:
                    log.warning("pubsub: cannot read cache admin requests: %s", str(exc)[:200])
                self._failing = True
            else:
                self._failing = False

    async def poll(self) -> int:
        """Apply the requests logged since the last poll; return how many there were."""
        async with self._lock:
            async with self.cache.sessions() as session:
                found = await repo.requests_after(session, self._seen)
            if not found:
                return 0
            if any(r.action in (PURGED, RESET) for r in found):
                await self._drop_purged()
            for request in found:
                if request.action == RESYNC:
                    self._resync(request)
            self._seen = found[-1].id
            return len(found)

    def _resync(self, request: AdminRequest) -> None:
        if request.service is None or request.node is None:
            return
        node = self.cache.node(request.service, request.node)
        if node is None or node.id != request.node_id:
            log.info("pubsub: resync of %s/%s asked, but it is not cached", *_key(request))
            return
        log.info("pubsub: resync of %s/%s asked by an administrator", node.service, node.name)
        self.synchroniser.resync(node)

    async def _drop_purged(self) -> None:
        held = self.cache.nodes()
        async with self.cache.sessions() as session:
            present = await repo.node_keys(session)
        gone: list[NodeState] = []
        for node in held:
            current = self.cache.node(node.service, node.name)
            # Replaced while the database was read: not the node that was checked.
            if current is None or current.id != node.id:
                continue
            if (node.service, node.name, node.id) not in present:
                self.synchroniser.forget_purged(current)
                gone.append(current)
        if gone:
            log.info("pubsub: %d nodes purged by an administrator; dropped", len(gone))
        await self.cache.gauges.refresh()
        if gone:
            # In the background: an answer to an ad-hoc purge need not wait for them.
            self._unsubscribing.start(self._unsubscribe(gone))

    async def _unsubscribe(self, nodes: list[NodeState]) -> None:
        for node in nodes:
            await self.synchroniser.unsubscribe_purged(node)


def _key(request: AdminRequest) -> tuple[str | None, str | None]:
    return request.service, request.node
