"""Herald's own upstream subscription to each node it holds local subscriptions for.

One subscription per node, as Herald's bare JID, whatever the number of local
subscribers (the one the synchroniser also uses for a cached node): made once when
the first local subscriber comes, made again after a reconnect, ended when the last
one goes unless the cache still needs it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from component.background import Background
from component.pubsub.cache import Cache
from component.pubsub.upstream import Upstream, UpstreamError, set_subscription
from component.storage.records import NO_SYNC
from component.xmpp.errors import make_error

log = logging.getLogger(__name__)

NodeKey = tuple[str, str]


class HeraldUpstream:
    """Herald's upstream subscriptions for held nodes: made once, kept, released."""

    def __init__(
        self,
        cache: Cache,
        upstream: Upstream,
        proxy_jid: str,
        holds: Callable[[str, str], bool],
        recheck: Callable[[str, str], Awaitable[None]],
    ) -> None:
        self.cache = cache
        self.upstream = upstream
        self.proxy_jid = proxy_jid
        self.holds = holds  # whether local subscribers still need the node
        self.recheck = recheck  # whether the node may still be shared, when it failed
        self._subscribed: dict[NodeKey, asyncio.Task[None]] = {}
        self._background = Background("pubsub: held upstream subscriptions")

    def subscribed(self, service: str, node: str) -> bool:
        """Whether the subscription to the node is made since Herald connected."""
        task = self._subscribed.get((service, node))
        return task is not None and task.done() and not task.cancelled() and not task.exception()

    async def close(self) -> None:
        for task in self._subscribed.values():
            task.cancel()
        await asyncio.gather(*self._subscribed.values(), return_exceptions=True)
        await self._background.close()

    def reconnected(self, held: list[NodeKey]) -> None:
        """Subscribe upstream again for every held node: the server may have dropped
        Herald's subscriptions while it was away (and a restart forgets nothing held)."""
        self._subscribed.clear()
        for service, node in held:
            self._background.start(self._resubscribe(service, node))

    async def _resubscribe(self, service: str, node: str) -> None:
        try:
            await self.ensure(service, node)
        except UpstreamError as exc:
            log.warning("pubsub: cannot subscribe to %s/%s again: %s", service, node, exc.condition)
            await self.recheck(service, node)

    def ensure(self, service: str, node: str) -> asyncio.Task[None]:
        """Herald's subscription to the node, made once (shared by concurrent callers)."""
        key = (service, node)
        task = self._subscribed.get(key)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = asyncio.ensure_future(self._subscribe(service, node))
            self._subscribed[key] = task
        return task

    async def _subscribe(self, service: str, node: str) -> None:
        sub = await set_subscription(self.upstream, "subscribe", service, node, self.proxy_jid)
        state = None if sub is None else sub.get("subscription")
        if state not in (None, "subscribed"):
            text = f"Upstream left the proxy's own subscription {state}."
            raise UpstreamError(make_error("service-unavailable", text), text)

    async def release(self, service: str, node: str) -> None:
        """No local subscriber is left: unsubscribe, unless the cache uses it too."""
        self._subscribed.pop((service, node), None)
        cached = self.cache.node(service, node)
        if cached is not None and cached.sync_state != NO_SYNC:
            return  # the synchroniser subscribed for the cache: it is its to end
        try:
            await set_subscription(self.upstream, "unsubscribe", service, node, self.proxy_jid)
        except UpstreamError as exc:
            log.info("pubsub: unsubscribing from %s/%s: %s", service, node, exc.condition)
        if self.holds(service, node):
            # Someone subscribed while the unsubscribe was on its way: subscribe again.
            self._subscribed.pop((service, node), None)
            await self._resubscribe(service, node)
