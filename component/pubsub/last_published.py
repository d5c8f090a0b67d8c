"""The last published item on subscribing (XEP-0060 §6.1.7): the decisions (pure).

A direct subscriber gets the node's last item right after the subscribe result when
the node's pubsub#send_last_published_item is on_sub or on_sub_and_presence
(ejabberd 23.01's default; Prosody 0.12's is never), and nothing when it is never.
Neither server tells anyone but the owner that setting: their disco#info meta-data
forms leave it out. So Herald asks upstream's behaviour: it subscribes a probe JID of
its own (a resource of its bare JID) and unsubscribes it at once; whatever upstream
sent the probe in between is exactly what it sends a new direct subscriber, and
Herald passes it on to its own subscriber, from the address it subscribed at.
Nothing sent to the probe means nothing is sent on.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.etree import ElementTree as ET

from component.pubsub.subscriptions import Delivery
from component.storage.subscriptions_repo import LocalSubscription
from component.xmpp.namespaces import DELAY_NS, PUBSUB_EVENT_NS, SHIM_NS

PROBE_PREFIX = "last-item-"  # the probe resource: PROBE_PREFIX + a random hex token


def is_probe(resource: str) -> bool:
    """Whether a resource of Herald's JID is a last-item probe's."""
    return resource.startswith(PROBE_PREFIX)


def delivery_for(sub: LocalSubscription, held: Sequence[LocalSubscription]) -> Delivery:
    """Who gets the last item: the subscriber, from the address it subscribed at,
    naming the subscription that asked for it (SHIM SubID) when the subscriber holds
    several at that address and node, so it can tell which one (XEP-0060 §12.7)."""
    mine = [
        s
        for s in held
        if s.address == sub.address and s.node == sub.node and s.subscriber == sub.subscriber
    ]
    return Delivery(sub.address, sub.subscriber, (sub.subid,) if len(mine) > 1 else ())


Stamped = tuple[ET.Element, ET.Element | None]  # an <items/> and its message's <delay/>


def passed_on(node: str, received: Sequence[ET.Element]) -> Stamped | None:
    """From the messages upstream sent the probe: the node's <items/> to pass on, with
    its message's XEP-0203 <delay/> (None when unstamped); None when there is none.
    Only the first: upstream sends the last item at once on subscribing, so a later
    one is a publication made meanwhile, which the subscriber gets by the fan-out.
    Anything else (a subscription notice, another node's items) is not for it."""
    for msg in received:
        for event in msg.iterfind(f"{{{PUBSUB_EVENT_NS}}}event"):
            for child in event:
                if child.tag == f"{{{PUBSUB_EVENT_NS}}}items" and child.get("node") == node:
                    return child, msg.find(f"{{{DELAY_NS}}}delay")
    return None


def stray_subscription(message: ET.Element) -> tuple[str, str | None] | None:
    """The node (and subid, when the message names one) of a notification sent to a
    probe no running probe owns: one a process left subscribed when it stopped in
    the middle of a probe. None when the message names no node."""
    for event in message.iterfind(f"{{{PUBSUB_EVENT_NS}}}event"):
        for child in event:
            node = child.get("node")
            if node is not None:
                subid = message.find(f"{{{SHIM_NS}}}headers/{{{SHIM_NS}}}header[@name='SubID']")
                return node, None if subid is None else subid.text
    return None
