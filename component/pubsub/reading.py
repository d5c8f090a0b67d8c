"""The edge of items reads: answers them from the cache, or reads upstream.

The decision is ``decide()``'s (pubsub/deciding.py): from the cache only when the
node's items answer the request exactly, with the notifications Herald has received
for it applied (pubsub/unwritten.py); otherwise upstream as Herald (open nodes) or as
the user. What upstream answers is passed on, paged here when the client asked for a
page.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from slixmpp.xmlstream import StanzaBase

from component.pubsub import tracing
from component.pubsub.answering import answer_from_cache, page_upstream
from component.pubsub.decision import Action
from component.pubsub.node_state import NodeState
from component.pubsub.refused import Refused, no_such_node
from component.pubsub.requests import PubsubRequest, answered_by_newest, items_payload
from component.storage.records import ItemRecord
from component.xmpp.namespaces import PUBSUB_NS

if TYPE_CHECKING:
    from component.pubsub.service import PubsubComponent

log = logging.getLogger(__name__)


class Reading:
    """Routes an items read to the cache, upstream as Herald, upstream as the user,
    or a refusal."""

    def __init__(self, component: PubsubComponent) -> None:
        self.component = component

    async def answer(self, iq: StanzaBase, service: str, request: PubsubRequest) -> str:
        """Answer one items read; returns the metrics result (hit, miss, bypass)."""
        pubsub = self.component
        assert request.node is not None
        analyser = pubsub.registry.match(service, request.node, None)
        # PEP nodes are never provably open to Herald (Prosody hides their metadata).
        cacheable = analyser is not None and analyser.sync and "@" not in service
        sync_as = analyser.name if cacheable and analyser is not None else None
        held: list[ItemRecord] = []

        async def answers(node: NodeState) -> bool:
            # A truncated node answers only what its newest items answer; the rest
            # (all items, RSM counts and pages, ids it lacks) is read upstream.
            # Never an answer older than what Herald already knows of upstream: the
            # notifications received for the node are applied first, on top of what
            # memory holds when it holds the node, or else by waiting for their write.
            notifications = pubsub.synchroniser.notifications
            if notifications.unsettled((node.service, node.name)):
                unwritten = notifications.unwritten_steps(node)
                ahead = None if unwritten is None else pubsub.cache.ahead(node, unwritten)
                if ahead is not None:
                    held[:] = ahead.items
                    tracing.step("read-ahead", node.name)
                    return not ahead.truncated or answered_by_newest(request, held)
                if not await notifications.settled_for_reading(node):
                    return False
            try:
                held[:] = await pubsub.cache.items(node)
            except Exception as exc:
                # The database failed (an outage, the first statement after a crash):
                # upstream answers this one, truthfully, instead of an error.
                log.warning(
                    "pubsub: cannot read %s from the cache (%r); asking upstream", node.name, exc
                )
                return False
            return not node.truncated or answered_by_newest(request, held)

        tracing.step("read", request.node)
        action, node = await pubsub.deciding.decide(
            iq, "read", service, request.node, sync_as, answers
        )
        if action is Action.FROM_CACHE:
            assert node is not None
            answer_from_cache(pubsub.send_raw, iq, node, request, held)
            if tracing.on():
                tracing.step("answered", request.node, ",".join(i.item_id for i in held))
            return "hit"
        if action is Action.REFUSE_MISSING:
            raise Refused(no_such_node(service, request.node))
        # Sent upstream rebuilt from what was parsed, never as the client wrote it.
        payload = items_payload(request)
        if action is Action.AS_HERALD:
            reply = await pubsub.upstream.as_herald("get", service, payload)
        else:
            # Not known to be open: only as the user (refused without privileges).
            reply = await pubsub.targeting.as_user(iq, PUBSUB_NS, service, payload)
        children = list(reply)
        if request.rsm is not None:
            children = page_upstream(children, request)
        pubsub._reply(iq, children)
        tracing.step("answered", request.node, f"upstream {action.name}")
        return "miss" if cacheable else "bypass"
