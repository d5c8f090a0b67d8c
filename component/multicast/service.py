"""The multicast component: the domain's XEP-0033 service, at the XMPP edge.

Stanzas come in, become a PlanRequest for the pure planner, and the plan's copies go
out through the sender route the server granted. Errors go back to the sender with the
condition XEP-0033 names and a readable text; a rejected stanza reaches nobody.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any, Literal
from xml.etree import ElementTree as ET

from slixmpp import JID
from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.handler import Callback, CoroutineCallback
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component import metrics
from component.config import MulticastSettings
from component.keyed_locks import KeyedLocks
from component.multicast.addresses import (
    ADDRESSES_TAG,
    AddressError,
    parse_addresses,
)
from component.multicast.carriage import envelope_refusal
from component.multicast.copies import CopyWriter
from component.multicast.disco_edge import ComponentDisco, multicast_disco
from component.multicast.discovery import RemoteDiscovery
from component.multicast.planner import Copy, PlanRequest, plan, remote_domains
from component.multicast.ratelimit import RateLimiter, SenderLimits
from component.multicast.routes import Route, choose_route, overlapping_routes
from component.storage import multicast_repo
from component.xmpp.connection import ServiceComponent
from component.xmpp.disco import disco_reply
from component.xmpp.errors import make_error
from component.xmpp.matching import StanzaMatch
from component.xmpp.namespaces import COMPONENT_NS, DISCO_INFO_NS, DISCO_ITEMS_NS
from component.xmpp.privilege import HostPrivileges, wrap_message

log = logging.getLogger(__name__)

# How long after connecting we hold stanzas while the server's XEP-0356 advertisement
# may still be on its way (Prosody sends it right after the handshake).
PRIVILEGE_SETTLE = 1.0

Kind = Literal["message", "presence"]
FIRST_WRITE = 10
COPIES_PER_WRITE = 50


class StanzaRefused(Exception):
    """A stanza to answer with an error: condition, type and readable text."""

    def __init__(self, condition: str, text: str, etype: str = "modify") -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text
        self.etype = etype


ERROR_TYPES = {
    "bad-request": "modify",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "forbidden": "auth",
    "resource-constraint": "wait",
    "feature-not-implemented": "cancel",
    "service-unavailable": "cancel",
    "internal-server-error": "cancel",
}


class MulticastComponent(ServiceComponent):
    """The XEP-0033 service: plans each addressed stanza and sends the copies."""

    service_name = "multicast"

    def __init__(
        self,
        settings: MulticastSettings,
        host: str,
        port: int,
        sessions: async_sessionmaker[AsyncSession],
        trusted_hosts: frozenset[str] = frozenset(),
        discovery_wait: float = 3.0,
        own_jids: frozenset[str] = frozenset(),
    ) -> None:
        self.settings = settings
        self.max_stanza_bytes = settings.max_stanza_bytes
        # Herald's own services (this one, and e.g. the pubsub proxy): never recipients
        # nor remote multicast services, or a stanza would loop through us.
        self.own_domains = frozenset(
            j.lower().partition("@")[2] or j.lower() for j in {settings.jid, *own_jids}
        )
        self.sessions = sessions
        self.local_domains = frozenset(d.lower() for d in settings.local_domains)
        self.privileges_settled = asyncio.Event()
        # sender -> (its lock, how many of its presences hold or await it)
        self._presence_order: KeyedLocks[str] = KeyedLocks()
        self.rate_limits = SenderLimits(
            RateLimiter(settings.rate_limit, settings.rate_burst),
            RateLimiter(settings.remote_domain_rate_limit, settings.remote_domain_rate_burst),
            self.local_domains,
        )
        super().__init__(
            settings.jid,
            settings.secret.get_secret_value(),
            host,
            port,
            trusted_hosts or frozenset(settings.local_domains),
        )
        self.discovery = RemoteDiscovery(
            ComponentDisco(self),
            sessions,
            ttl=settings.remote_disco_ttl,
            wait=discovery_wait,
            never=frozenset({self.boundjid.bare, *self.own_domains, *self.local_domains}),
        )

    def setup(self) -> None:
        self.own_disco = multicast_disco(self.settings.max_recipients)
        self.add_event_handler("session_start", self._settle_privileges)
        for namespace in (DISCO_INFO_NS, DISCO_ITEMS_NS):
            self.register_handler(
                Callback(
                    f"multicast disco {namespace}",
                    StanzaMatch("iq", f"{{{namespace}}}query"),
                    self._on_disco,
                )
            )
        self.register_handler(
            CoroutineCallback(
                "multicast message",
                StanzaMatch("message"),
                self._on_message,
            )
        )
        self.register_handler(
            CoroutineCallback(
                "multicast presence",
                StanzaMatch("presence"),
                self._on_presence,
            )
        )

    def _on_disco(self, iq: StanzaBase) -> None:
        reply = disco_reply(iq.xml, self.own_disco, self.boundjid.bare)
        if reply is not None:
            self.send_element(reply)

    async def _settle_privileges(self, _event: Any) -> None:
        self.privileges_settled.clear()
        await asyncio.sleep(PRIVILEGE_SETTLE)
        self.privileges_settled.set()

    # -- incoming -------------------------------------------------------------

    def refused_for_size(self, xml: ET.Element) -> None:
        if xml.tag != f"{{{COMPONENT_NS}}}iq" and xml.get("type") != "error":
            kind = xml.tag.rpartition("}")[2]
            metrics.MULTICAST_STANZAS.labels(stanza=kind, result="rejected").inc()

    async def _on_message(self, msg: StanzaBase) -> None:
        if msg["type"] == "error":
            return  # never answer an error with an error
        sender = msg["from"]
        if not sender.user:
            # From a server or service: mod_privilege's advertisement, or noise.
            # Never bounce these: Prosody closes the stream if we do.
            self.take_privileges(sender, msg.xml)
            return
        await self._multicast(msg, "message")

    async def _on_presence(self, pres: StanzaBase) -> None:
        if pres["type"] == "error" or not pres["from"].user:
            return
        # One sender's presences are handled in arrival order: an unavailable that
        # follows a multicast presence must find its recipients already recorded,
        # though the multicast waits on discovery and the database meanwhile.
        async with self._presence_order.hold(str(pres["from"])):
            await self._serve_presence(pres)

    async def _serve_presence(self, pres: StanzaBase) -> None:
        if pres.xml.find(ADDRESSES_TAG) is not None:
            await self._multicast(pres, "presence")
            return
        if pres["type"] == "unavailable":
            await self._broadcast_unavailable(pres)
        # Other presence without <addresses/> (probes, subscriptions) needs no answer.

    def privileges_granted(self, granted: HostPrivileges) -> None:
        self.privileges_settled.set()
        overlap = overlapping_routes(self.settings.sender_mode, granted)
        if overlap is not None:
            log.log(logging.WARNING if overlap[0] else logging.INFO, "multicast: %s", overlap[1])

    # -- the service ------------------------------------------------------------

    async def _multicast(self, stanza: StanzaBase, kind: Kind) -> None:
        try:
            await self._deliver(stanza, kind)
        except StanzaRefused as refused:
            metrics.MULTICAST_STANZAS.labels(stanza=kind, result="rejected").inc()
            log.info(
                "multicast: refused %s from %s: %s (%s)",
                kind,
                stanza["from"],
                refused.condition,
                refused.text,
            )
            self._send_error(stanza, refused)
        except Exception:
            metrics.MULTICAST_STANZAS.labels(stanza=kind, result="rejected").inc()
            log.exception("multicast: failed to deliver a %s from %s", kind, stanza["from"])
            self._send_error(
                stanza,
                StanzaRefused(
                    "internal-server-error",
                    "The multicast service failed; the stanza may not have been delivered.",
                    "cancel",
                ),
            )

    async def _deliver(self, stanza: StanzaBase, kind: Kind) -> None:
        sender = stanza["from"]
        if str(stanza["to"]) != self.boundjid.bare:
            # §3: addressed to the service's bare domain only.
            raise StanzaRefused("item-not-found", f"No such entity: {stanza['to']}.", "cancel")
        element = stanza.xml.find(ADDRESSES_TAG)
        if element is None:
            raise StanzaRefused("bad-request", "No <addresses/> element: nothing to deliver.")
        envelope = envelope_refusal(stanza.xml)
        if envelope is not None:
            raise StanzaRefused("not-acceptable", envelope)
        too_many = self.rate_limits.refusal(sender.bare, time.monotonic())
        if too_many is not None:
            raise StanzaRefused("resource-constraint", too_many, "wait")
        try:
            addresses = parse_addresses(
                element, self.settings.max_addresses, self.settings.max_header_bytes
            )
            request = PlanRequest(
                sender=str(sender),
                kind=kind,
                addresses=addresses,
                local_domains=self.local_domains,
                max_recipients=self.settings.max_recipients,
                own_domains=self.own_domains,
            )
        except AddressError as exc:
            raise StanzaRefused(exc.condition, exc.text) from None

        route = await self._route(kind, sender)
        domains = remote_domains(request)
        if domains:
            support = await self.discovery.lookup(domains, kind)
            request = request.model_copy(update={"remote_support": support})
        delivery = plan(request)
        if delivery.error is not None:
            condition = delivery.error.condition
            raise StanzaRefused(condition, delivery.error.text, ERROR_TYPES[condition])

        writer = CopyWriter(stanza.xml)
        batch: list[str] = []
        per_route: dict[str, int] = {}
        # A small first write gets the server routing at once; later ones are larger.
        write_at = FIRST_WRITE
        for item in delivery.copies:
            batch.append(self._copy_text(writer, stanza, item, route))
            per_route[item.route] = per_route.get(item.route, 0) + len(item.recipients)
            if len(batch) == write_at:
                # Writes of many stanzas at once: slixmpp's send queue costs more per
                # stanza than building one does. Yielding after each lets the server
                # route the first copies while the rest are built.
                self.send_raw("".join(batch))
                batch.clear()
                write_at = COPIES_PER_WRITE
                await asyncio.sleep(0)
        if batch:
            self.send_raw("".join(batch))
        for name, count in per_route.items():
            metrics.MULTICAST_RECIPIENTS.labels(route=name).inc(count)
        metrics.MULTICAST_STANZAS.labels(stanza=kind, result="delivered").inc()
        if kind == "presence":
            await self._track_presence(stanza, delivery.copies)

    async def _route(self, kind: Kind, sender: JID) -> Route:
        if self.settings.sender_mode != "trusted":
            await self.privileges_settled.wait()
        route = choose_route(
            self.settings.sender_mode, kind, sender.domain.lower(), self.privileges
        )
        if route.mode is None:
            raise StanzaRefused(route.condition, route.text, ERROR_TYPES[route.condition])
        return route

    # -- outgoing ---------------------------------------------------------------

    def _copy_text(self, writer: CopyWriter, original: StanzaBase, item: Copy, route: Route) -> str:
        """One copy as XML text, wrapped for XEP-0356 when sending privileged."""
        if route.mode == "privileged":
            assert route.privileges is not None
            # XEP-0356 only forwards a bare-JID sender.
            inner = writer.element(item.to, item.addresses, sender=original["from"].bare)
            envelope = wrap_message(route.privileges, self.boundjid.bare, inner)
            return self.stanza_text(envelope)
        return writer.text(item.to, item.addresses)

    def _send_error(self, stanza: StanzaBase, refused: StanzaRefused) -> None:
        attrs = {"from": self.boundjid.bare, "to": str(stanza["from"]), "type": "error"}
        if stanza["id"]:
            attrs["id"] = stanza["id"]
        reply = ET.Element(f"{{{COMPONENT_NS}}}{stanza.name}", attrs)
        reply.append(make_error(refused.condition, refused.text, refused.etype))
        self.send_element(reply)

    # -- presence (§5) ----------------------------------------------------------

    async def _track_presence(self, pres: StanzaBase, copies: tuple[Copy, ...]) -> None:
        sender = str(pres["from"])
        delivered = [r for c in copies for r in c.recipients]
        now = datetime.now(UTC)
        # The attribute, not slixmpp's pres["type"], which reports <show/> (away, dnd...)
        # as the type: an available presence with a show is still available.
        ptype = pres.xml.get("type", "")
        async with self.sessions() as session:
            if ptype == "unavailable":
                await multicast_repo.remove_presence_recipients(session, sender, delivered)
            elif ptype in ("", "available"):
                await multicast_repo.add_presence_recipients(session, sender, delivered, now)

    async def _broadcast_unavailable(self, pres: StanzaBase) -> None:
        sender = str(pres["from"])
        async with self.sessions() as session:
            recipients = await multicast_repo.take_presence_recipients(session, sender)
        if not recipients:
            return
        route = choose_route(
            self.settings.sender_mode, "presence", pres["from"].domain, self.privileges
        )
        if route.mode != "trusted":
            log.warning("multicast: cannot relay %s's unavailable presence: %s", sender, route.text)
            return
        for recipient in recipients:
            out = ET.Element(
                f"{{{COMPONENT_NS}}}presence",
                {"from": sender, "to": recipient, "type": "unavailable"},
            )
            self.send_element(out)
        log.info("multicast: sent unavailable from %s to %d recipients", sender, len(recipients))
