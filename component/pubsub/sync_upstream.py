"""What syncing asks upstream as Herald: to subscribe to a node, to unsubscribe, and
for its items (in RSM pages where upstream pages), no more than Herald keeps and one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from component.paging import RsmRequest
from component.pubsub.cache import Cache
from component.pubsub.fetching import PAGE, FetchedPage, FullFetch
from component.pubsub.item_intake import SyncFailed
from component.pubsub.node_state import NodeState
from component.pubsub.requests import items_payload, items_read
from component.pubsub.stanzas import ReceivedItem, Serializer, received_items, result_items
from component.pubsub.upstream import Upstream, UpstreamError, set_subscription
from component.turns import in_turns
from component.xmpp.namespaces import PUBSUB_NS, RSM_NS
from component.xmpp.numbers import count_in

log = logging.getLogger(__name__)

RSM_FEATURE = "http://jabber.org/protocol/pubsub#rsm"


class SyncUpstream:
    """Herald's own subscription to cached nodes, and full fetches of them."""

    def __init__(
        self, upstream: Upstream, cache: Cache, proxy_jid: str, serialize: Serializer
    ) -> None:
        self.upstream = upstream
        self.cache = cache
        self.proxy_jid = proxy_jid
        self.serialize = serialize
        # Herald's upstream subscription to a node may also serve local subscribers
        # (pubsub/held.py): then it is theirs to end, not the cache's.
        self.keeps_subscription: Callable[[str, str], bool] = lambda _service, _node: False

    async def subscribe(self, node: NodeState) -> None:
        """Subscribe Herald to the node; SyncFailed unless upstream says subscribed."""
        sub = await set_subscription(
            self.upstream, "subscribe", node.service, node.name, self.proxy_jid
        )
        state = None if sub is None else sub.get("subscription")
        if state not in (None, "subscribed"):
            raise SyncFailed(f"subscription is {state}")

    async def unsubscribe(self, node: NodeState) -> None:
        """End Herald's subscription to the node, unless local subscribers keep it;
        a refusal is logged."""
        if self.keeps_subscription(node.service, node.name):
            return
        try:
            await set_subscription(
                self.upstream, "unsubscribe", node.service, node.name, self.proxy_jid
            )
        except UpstreamError as exc:
            log.info("pubsub: unsubscribing from %s/%s: %s", node.service, node.name, exc.condition)

    async def fetch_all(self, node: NodeState) -> tuple[list[ReceivedItem], bool]:
        """Every item, oldest first, up to the limit; and whether older ones were left.

        Not every RSM upstream says so in disco (ejabberd 23.01 does not), so every
        fetch asks for RSM and looks at the answer (component/pubsub/fetching.py).
        Each request also says max_items: one past the limit. Prosody 0.12 ignores
        RSM, and without it sent every item of the node in one reply (a 100,000-item
        node stalled it for 45 s); the extra item tells that older ones were left.
        ejabberd 23.01 pages as asked, so no page is longer than that either.
        """
        limit = self.cache.limit(node)
        fetch = FullFetch(limit)
        before: str | None = ""
        while before is not None:
            before = fetch.add(await self._fetch_rsm_page(node, before, limit + 1))
        return fetch.result()

    async def _fetch_rsm_page(self, node: NodeState, before: str, at_most: int) -> FetchedPage:
        """One page, the one before the anchor (the newest page for an empty anchor),
        of the node's newest at_most items.

        The anchor is a page's RSM <first/>, which need not be an item id (ejabberd
        pages by timestamp).
        """
        # ejabberd's page is RSM's max, whatever max_items says.
        rsm = RsmRequest(max=min(PAGE, at_most), before=before)
        request = items_read(node.name, max_items=at_most, rsm=rsm)
        reply = await self.upstream.as_herald("get", node.service, items_payload(request))
        got: list[ReceivedItem] = []
        async for some in in_turns(result_items(reply)):
            got += received_items(some, self.serialize)
        answer = reply.find(f"{{{PUBSUB_NS}}}pubsub/{{{RSM_NS}}}set")
        if answer is None:
            return FetchedPage(got, paged=False)
        first = answer.find(f"{{{RSM_NS}}}first")
        anchor = None if first is None or not first.text else first.text
        index = None if first is None else count_in(first.get("index"))
        return FetchedPage(
            got, True, anchor, index, count_in(answer.findtext(f"{{{RSM_NS}}}count"))
        )
