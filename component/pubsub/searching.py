"""The edge of search: answers XEP-0442 queries at a proxy address.

A query is answered from the cache only when an items read of the node would be
(the same ``decide()``, with the node untruncated, since a search must see every
item). Otherwise it goes upstream as the user, through a XEP-0356 privileged IQ (the
results then flow from upstream to the user directly), or it is refused with a text
saying why. Herald never searches, as itself, a node the requester could not read.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import TYPE_CHECKING

from slixmpp.xmlstream import StanzaBase

from component.paging import PagingError
from component.pubsub.decision import Action
from component.pubsub.node_state import NodeState
from component.pubsub.refused import Refused, no_such_node, only_child
from component.pubsub.search import (
    MAM_NS,
    SearchError,
    SearchQuery,
    fin_element,
    form_element,
    parse_query,
    result_messages,
)
from component.storage import search_repo
from component.storage.search_repo import SearchFilter
from component.xmpp.errors import make_error

if TYPE_CHECKING:
    from component.pubsub.service import PubsubComponent

log = logging.getLogger(__name__)


class Searching:
    """Routes a MAM query to the cache, upstream as the user, or a refusal."""

    def __init__(self, component: PubsubComponent) -> None:
        self.component = component

    def searchable(self, service: str, node: str) -> bool:
        """Whether the node is searched from the cache (for disco#info)."""
        state = self.component.cache.node(service, node)
        return state is not None and state.serves_from_cache and not state.truncated

    async def answer(self, iq: StanzaBase) -> str:
        """Handle one query; returns the metrics result (hit, bypass)."""
        pubsub = self.component
        began = time.perf_counter()
        element = only_child(iq, f"{{{MAM_NS}}}query")
        try:
            query = parse_query(element, iq["type"])
        except SearchError as exc:
            raise Refused(make_error(exc.condition, exc.text, exc.etype)) from None
        service = await pubsub.targeting.target(iq, reading=True)
        analyser = pubsub.registry.match(service, query.node, None)
        cacheable = analyser is not None and analyser.sync and "@" not in service
        sync_as = analyser.name if cacheable and analyser is not None else None

        async def answers(node: NodeState) -> bool:
            # As a read of items: the notifications received are applied first.
            ready = await pubsub.synchroniser.notifications.settled_for_reading(node)
            return ready and not node.truncated

        action, node = await pubsub.deciding.decide(
            iq, "read", service, query.node, sync_as, answers
        )
        if action is Action.FROM_CACHE and node is not None:
            decided = time.perf_counter()
            await self._from_cache(iq, node, query, decided - began)
            return "hit"
        if action is Action.REFUSE_MISSING:
            raise Refused(no_such_node(service, query.node))
        if pubsub.targeting.privileges_for(iq["from"], MAM_NS, iq["type"]) is not None:
            # Upstream may support it; its result messages go to the user directly.
            reply = await pubsub.targeting.as_user(iq, MAM_NS, service, copy.deepcopy(element))
            pubsub._reply(iq, list(reply))
            return "bypass"
        if action is Action.REFUSE_FORBIDDEN:
            text = (
                f"Herald cannot search {query.node!r} for you: it does not serve it from "
                "its cache, and your server grants Herald no XEP-0356 permission to ask "
                "upstream as you (Herald never asks as itself)."
            )
            raise Refused(make_error("forbidden", text, "auth"))
        text = (
            f"Herald searches only the nodes it serves from its cache (cached, in sync, "
            f"open to anyone, with all their items), and {query.node!r} is not one of them "
            "now; your server grants Herald no permission to search upstream as you."
        )
        raise Refused(make_error("feature-not-implemented", text, "cancel"))

    async def _from_cache(
        self, iq: StanzaBase, node: NodeState, query: SearchQuery, deciding: float
    ) -> None:
        pubsub = self.component
        began = time.perf_counter()
        async with pubsub.cache.sessions() as session:
            if query.form:
                keys = await search_repo.parsed_keys(session, node.id)
                pubsub._reply(iq, [form_element(query.node, keys)])
                return
            wanted = SearchFilter(query.terms, query.start, query.end, query.publisher)
            try:
                page = await search_repo.search_items(session, node.id, wanted, query.rsm)
            except PagingError as exc:
                raise Refused(make_error(exc.condition, exc.text, "cancel")) from None
            searched = time.perf_counter()
        closed = time.perf_counter()
        messages = result_messages(query, str(iq["to"]), str(iq["from"]), page.items)
        if messages:
            # One write for the page: one system call and one read for the server,
            # instead of a small TCP segment per result (the socket has TCP_NODELAY).
            pubsub.send_raw("".join(messages))
        pubsub._reply(iq, [fin_element(query, page)])
        if log.isEnabledFor(logging.DEBUG):
            # Where a slow search spends its time: deciding (access checks,
            # comparisons), the database, closing the session, sending the results.
            log.debug(
                "pubsub: search %s: decide %.1f ms, query %.1f ms, close %.1f ms, "
                "send %.1f ms, %d results of %d",
                query.node,
                deciding * 1000,
                (searched - began) * 1000,
                (closed - searched) * 1000,
                (time.perf_counter() - closed) * 1000,
                len(page.items),
                page.count,
            )
