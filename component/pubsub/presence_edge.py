"""Presence-based delivery at the XMPP edge: what the server tells Herald of its users'
presence, kept per bare JID, and the check the fan-out asks before each copy.

Herald learns presence through the XEP-0356 presence permission (managed_entity, or
roster, which implies it): the server sends Herald each of its users' available and
unavailable presences, and (business rule 1) those current when Herald connects.
Absence of a presence then means "unavailable" only where the server keeps that
rule: Prosody's mod_privilege does (privilege:2, checked); ejabberd 23.01
(privilege:1, checked) sends neither the current presences nor the unavailable of a
connection that drops, so Herald would take a user online before it started for
offline, or one whose connection dropped for online: its users' presence is unknown.

The decisions are in component/pubsub/availability.py; this module feeds them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal
from xml.etree import ElementTree as ET

from slixmpp.jid import JID, InvalidJID
from slixmpp.xmlstream.handler import CoroutineCallback

from component import metrics
from component.pubsub import availability as av
from component.pubsub.access import NodeMeta
from component.storage.subscriptions_repo import LocalSubscription
from component.xmpp.matching import StanzaMatch
from component.xmpp.namespaces import COMPONENT_NS
from component.xmpp.privilege import HostPrivileges

if TYPE_CHECKING:
    from component.pubsub.held import HeldSubscriptions
    from component.xmpp.connection import ServiceComponent

log = logging.getLogger(__name__)

Mode = Literal["node", "always", "never"]
NodeMetaOf = Callable[[str, str], Awaitable[NodeMeta]]

COMPLETE_NAMESPACE = "urn:xmpp:privilege:2"
PRESENCE_GRANTS = frozenset({"managed_entity", "roster"})


class Presences:
    """Users' presence as the server reports it, and the delivery check built on it."""

    def __init__(self, mode: Mode, proxy_jid: str) -> None:
        self.mode = mode
        self.proxy_jid = proxy_jid
        self._told: set[str] = set()  # hosts that report their users' presence in full
        self._seen: dict[str, dict[str, av.Resource]] = {}  # bare JID -> resources
        self._presence_based: dict[tuple[str, str], bool] = {}  # from node metadata

    # -- what the server tells ---------------------------------------------------------

    def granted(self, privileges: HostPrivileges) -> None:
        """A host advertised its privileges: it sends its current presences next."""
        host = privileges.host
        # Forgotten in any case: after a re-advertisement, the server sends them afresh.
        self._seen = {b: r for b, r in self._seen.items() if _host_of(b) != host}
        if privileges.presence in PRESENCE_GRANTS and privileges.namespace == COMPLETE_NAMESPACE:
            self._told.add(host)
        else:
            self._told.discard(host)
            if privileges.presence in PRESENCE_GRANTS:
                log.info(
                    "pubsub: %s grants presence with %s, which does not report current"
                    " presences: its users' presence is unknown to presence-based delivery",
                    host,
                    privileges.namespace,
                )

    def disconnected(self) -> None:
        """Nothing is known until the hosts advertise again."""
        self._told.clear()
        self._seen.clear()

    def on_presence(self, xml: ET.Element) -> None:
        """A presence to the proxy (forwarded by the server, or the user's own)."""
        if xml.get("to", "").partition("/")[0].lower() != self.proxy_jid:
            return  # one directed to a proxied node's address says nothing of the others
        try:
            sender = JID(xml.get("from", ""))
        except InvalidJID:
            return  # the connection's JID check has answered it already
        if not sender.user or not sender.resource or sender.domain not in self._told:
            return  # a server, a bare JID, or a host that does not report presence
        resources = av.observed(
            self._seen.get(sender.bare, {}),
            sender.resource,
            xml.get("type"),
            xml.findtext(f"{{{COMPONENT_NS}}}show"),
            xml.findtext(f"{{{COMPONENT_NS}}}priority"),
        )
        if resources:
            self._seen[sender.bare] = resources
        else:
            self._seen.pop(sender.bare, None)

    # -- what delivery asks ------------------------------------------------------------

    def knows(self, jid: str) -> bool:
        """Whether Herald is told this JID's presence (show-values may apply)."""
        return _host_of(jid.partition("/")[0]) in self._told

    def presence_based(self, service: str, node: str) -> bool:
        """Whether notifications of the node go to available subscribers only."""
        if self.mode != "node":
            return self.mode == "always"
        return self._presence_based.get((service, node), False)

    def withheld(self, sub: LocalSubscription) -> bool:
        """Whether this subscription's copy of a notification is held back (counted)."""
        presence_based = self.presence_based(sub.service, sub.node)
        if not presence_based and not sub.options.get("pubsub#show-values"):
            return False  # the common case, asked once per copy: nothing to look up
        bare = sub.subscriber.partition("/")[0]
        status = av.status_of(
            sub.subscriber, self._seen.get(bare, {}) if self.knows(bare) else None
        )
        reason = av.withheld(sub.options, presence_based, status)
        if reason is None:
            return False
        metrics.PUBSUB_NOTIFICATIONS_WITHHELD.labels(reason=reason).inc()
        return True

    def watching(self, node_meta: NodeMetaOf) -> NodeMetaOf:
        """node_meta, noting what each read says of presence-based delivery (held
        nodes' metadata is read at subscribe time and re-read every minute)."""

        async def read(service: str, node: str) -> NodeMeta:
            meta = await node_meta(service, node)
            if meta.presence_based is None:
                self._presence_based.pop((service, node), None)
            else:
                self._presence_based[(service, node)] = meta.presence_based
            return meta

        return read


def _host_of(bare: str) -> str:
    return bare.partition("@")[2]


def attach(component: ServiceComponent, held: HeldSubscriptions, presences: Presences) -> None:
    """Feed `presences` from the component's stream and let `held` ask it.

    A coroutine handler, as the privilege advertisement's (message_edge): slixmpp runs
    them as tasks in arrival order, so the current presences a server sends right
    after its advertisement are read after it, not dropped as from an unknown host.
    The component calls presences.granted() from its privileges_granted().
    """

    async def on_presence(stanza: Any) -> None:
        presences.on_presence(stanza.xml)

    component.register_handler(
        CoroutineCallback("proxy presence", StanzaMatch("presence"), on_presence)
    )
    component.add_event_handler("disconnected", lambda _reason: presences.disconnected())
    held.withheld = presences.withheld
    held.knows_presence = presences.knows
