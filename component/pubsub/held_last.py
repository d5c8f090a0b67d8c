"""The last published item for a new held subscriber, at the XMPP edge.

What upstream would send a new direct subscriber (XEP-0060 §6.1.7) is learnt by
subscribing a probe JID of Herald's own and unsubscribing it at once (see
component/pubsub/last_published.py for why, and what is passed on). It runs after
the subscribe result has been sent, so the item follows the result as it does
upstream.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from xml.etree import ElementTree as ET

from component.background import Background
from component.pubsub import last_published as core
from component.pubsub.subscriptions import Delivery, notification_text
from component.pubsub.upstream import Upstream, UpstreamError, set_subscription
from component.xmpp.namespaces import COMPONENT_NS, PUBSUB_EVENT_NS
from component.xmpp.xmltext import serialize

log = logging.getLogger(__name__)

Send = Callable[[str], None]
Leftover = tuple[str, str, str, str | None]  # service, node, probe JID, subid
TIMEOUT = "remote-server-timeout"  # also when Herald is disconnected


class LastItems:
    """Probes upstream for a node's last item and passes it on to a new subscriber."""

    def __init__(self, upstream: Upstream, proxy_jid: str, send: Send) -> None:
        self.upstream = upstream
        self.proxy_jid = proxy_jid
        self.send = send
        self._probes: dict[str, list[ET.Element]] = {}  # resource -> messages it got
        self.leftover: set[Leftover] = set()  # probes still to unsubscribe
        self._background = Background("pubsub: last published items")

    def received(self, resource: str, message: ET.Element) -> bool:
        """Keep a message sent to a probe; False when the resource is no probe's
        (then the message is an ordinary one)."""
        if not core.is_probe(resource):
            return False
        got = self._probes.get(resource)
        if got is not None:
            got.append(message)
            return True
        # No probe of this process: one that came after its probe ended (dropped), or
        # a probe an earlier process left subscribed when it stopped mid-probe, which
        # upstream would go on sending every publication: the upkeep ends it.
        stray = core.stray_subscription(message)
        service = message.get("from")
        if stray is not None and service is not None:
            node, subid = stray
            self.leftover.add((service, node, f"{self.proxy_jid}/{resource}", subid))
        return True

    def send_after_subscribe(self, service: str, node: str, delivery: Delivery) -> None:
        """Pass the node's last item on to a subscriber, if upstream would send one."""
        self._background.start(self._pass_on(service, node, delivery))

    async def _pass_on(self, service: str, node: str, delivery: Delivery) -> None:
        found = core.passed_on(node, await self._probe(service, node))
        if found is None:
            return
        # Not counted as fanned out: no upstream notification is shared here.
        items, delay = found
        trailer = "" if delay is None else serialize(delay, COMPONENT_NS)
        self.send(notification_text(delivery, serialize(items, PUBSUB_EVENT_NS), trailer))

    async def _probe(self, service: str, node: str) -> list[ET.Element]:
        """What upstream sends a new subscriber of the node: the messages a probe JID
        gets between its subscribe and its unsubscribe. Upstream sends them before
        the unsubscribe result (stanzas between two entities stay in order), and
        the handler keeps them before the result wakes this up."""
        resource = f"{core.PROBE_PREFIX}{uuid.uuid4().hex}"
        probe = f"{self.proxy_jid}/{resource}"
        self._probes[resource] = []
        try:
            try:
                sub = await set_subscription(self.upstream, "subscribe", service, node, probe)
            except UpstreamError as exc:
                # The subscriber is subscribed all the same; it misses only the last item.
                log.info("pubsub: last-item probe of %s/%s: %s", service, node, exc.condition)
                if exc.condition == TIMEOUT:  # perhaps made all the same
                    self.leftover.add((service, node, probe, None))
                return []
            subid = None if sub is None else sub.get("subid")
            try:
                await set_subscription(self.upstream, "unsubscribe", service, node, probe, subid)
            except UpstreamError as exc:
                log.info("pubsub: ending probe of %s/%s: %s", service, node, exc.condition)
                self.leftover.add((service, node, probe, subid))
            return self._probes.get(resource, [])
        finally:
            self._probes.pop(resource, None)

    async def upkeep(self) -> None:
        """Unsubscribe the probes whose unsubscribe did not get through (a timeout, a
        lost connection): upstream would send them every notification for good."""
        for left in list(self.leftover):
            service, node, probe, subid = left
            try:
                await set_subscription(self.upstream, "unsubscribe", service, node, probe, subid)
            except UpstreamError as exc:
                if exc.condition == TIMEOUT:
                    continue  # again at the next upkeep
                # Refused (not subscribed, no such node): there is nothing left to end.
            self.leftover.discard(left)

    async def close(self) -> None:
        await self._background.close()
