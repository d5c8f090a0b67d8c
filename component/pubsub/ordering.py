"""Where a republished item goes: to the newest place, or where it was.

XEP-0060 leaves it open, and the servers differ: Prosody 0.12 moves an item
published again under the same id to the newest place, ejabberd 23.01 keeps its
first place. The cache must order items as upstream does, or `max_items` and RSM
answers from it would differ from upstream's. Herald learns it once per service, the
first time an item it holds is republished while a newer one exists: it asks
upstream for its newest item. The republished one means "moves"; the one that was
newest before means "keeps"; anything else (a publication in between) tells nothing,
and the next republication asks again.
"""

from __future__ import annotations

import logging

from component.pubsub.requests import items_payload, items_read
from component.pubsub.stanzas import result_items
from component.pubsub.upstream import Upstream, UpstreamError

log = logging.getLogger(__name__)


class RepublishOrder:
    """Per upstream service: does a republished item move to the newest place?"""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self._moves: dict[str, bool] = {}
        self._asking: set[str] = set()

    def moves(self, service: str) -> bool | None:
        """True, False, or None while not known."""
        return self._moves.get(service)

    async def learn(self, service: str, node: str, republished: str, newer: str) -> bool | None:
        """Ask upstream for the node's newest item, just after `republished` (older than
        `newer` in the cache) was published again; None when that tells nothing."""
        if service in self._moves or service in self._asking:
            return self._moves.get(service)
        self._asking.add(service)
        try:
            payload = items_payload(items_read(node, max_items=1))
            reply = await self.upstream.as_herald("get", service, payload)
        except UpstreamError as exc:
            log.debug("pubsub: cannot learn %s's item order: %s", service, exc.condition)
            return None
        finally:
            self._asking.discard(service)
        newest = [element.get("id") for element in result_items(reply)]
        if newest == [republished]:
            self._moves[service] = True
        elif newest == [newer]:
            self._moves[service] = False
        else:
            return None
        log.info(
            "pubsub: %s %s republished items to the newest place",
            service,
            "moves" if self._moves[service] else "does not move",
        )
        return self._moves[service]
