"""The edge of messages: XEP-0356 privilege grants and pubsub event notifications.

Notifications change the cache only for the node's own service (the cache is keyed
by sender); messages from users, and errors, are never answered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slixmpp import JID
from slixmpp.xmlstream import StanzaBase

from component.pubsub import tracing
from component.pubsub.stanzas import parse_event
from component.xmpp.namespaces import PUBSUB_EVENT_NS
from component.xmpp.xmltext import serialize

if TYPE_CHECKING:
    from component.pubsub.service import PubsubComponent


async def on_message(pubsub: PubsubComponent, msg: StanzaBase) -> None:
    """Take privileges, or apply a notification to held subscriptions and the cache."""
    sender: JID = msg["from"]
    if msg["type"] == "error" or sender.user:
        # Never answer; PEP notifications are not cached (not provably open).
        return
    # Before anything else and without awaiting: what a last-item probe gets is only
    # the probe's, and must be kept before the probe's unsubscribe result is handled.
    if pubsub.held.last_items.received(msg["to"].resource, msg.xml):
        return
    if pubsub.take_privileges(sender, msg.xml):
        return
    event = msg.xml.find(f"{{{PUBSUB_EVENT_NS}}}event")
    if event is None:
        return
    pubsub.held.notified(sender.bare, event)
    if not any(
        pubsub.cache.node(sender.bare, name) is not None
        for name in (child.get("node") for child in event)
        if name is not None
    ):
        return  # no node of it is cached (one only held for subscribers, say)
    # Only the node's own service may change it: the cache is keyed by sender.
    try:
        changes = parse_event(event, serialize)
    except Exception as exc:  # a payload too deep to serialise, say
        for child in event:
            name = child.get("node")
            if name is not None:
                pubsub.synchroniser.out_of_service(
                    sender.bare, name, f"unreadable notification: {exc!r}"
                )
        return
    if tracing.on():
        for change in changes:
            ids = [i.item_id for i in change.published] + [f"-{i}" for i in change.retracted]
            tracing.step("recv", change.node, f"{change.kind} {','.join(ids)}")
    for change in changes:
        await pubsub.synchroniser.apply(sender.bare, change)
