"""Where a proxied request goes, and as whom: target resolution and requester policy.

The target is the service a proxy address names, once the requester may reach it that
way; a request made as the user needs the XEP-0356 permission the user's server granted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

from slixmpp import JID
from slixmpp.xmlstream import StanzaBase

from component.pubsub.policy import requester_refusal, target_refusal
from component.pubsub.refused import Refused
from component.xmpp.errors import make_error
from component.xmpp.escaping import proxied_target
from component.xmpp.privilege import HostPrivileges

if TYPE_CHECKING:
    from component.pubsub.service import PubsubComponent


class Targeting:
    """Resolves a request's target and makes requests upstream as its requester."""

    def __init__(self, component: PubsubComponent) -> None:
        self.component = component

    async def target(self, iq: StanzaBase, reading: bool) -> str:
        """The service the request goes to, once the requester may reach it that way."""
        pubsub = self.component
        to: JID = iq["to"]
        refusal = requester_refusal(iq["from"].domain, pubsub.local_domains, bool(to.user), reading)
        if refusal is not None:
            raise Refused(make_error("forbidden", refusal, "auth"))
        try:
            service = proxied_target(to.user or None, pubsub.upstream_jid, proxy_domain=to.domain)
        except ValueError as exc:
            raise Refused(make_error("item-not-found", f"No such proxied service: {exc}")) from None
        refusal = target_refusal(JID(service).domain, pubsub.own_domains)
        if refusal is not None:
            raise Refused(make_error("forbidden", refusal, "auth"))
        refusal = await pubsub.local_hosts.refusal(service)
        if refusal is not None:
            # RFC 6120 8.3.3.19: the entity addressed does not provide the service
            raise Refused(make_error("service-unavailable", refusal))
        return service

    def privileges_for(self, requester: JID, namespace: str, iq_type: str) -> HostPrivileges | None:
        granted = self.component.privileges.get(requester.domain)
        if granted is not None and granted.can_iq(namespace, iq_type):
            return granted
        return None

    async def as_user(
        self, iq: StanzaBase, namespace: str, service: str, payload: ET.Element
    ) -> ET.Element:
        granted = self.privileges_for(iq["from"], namespace, iq["type"])
        if granted is None:
            raise Refused(
                make_error(
                    "forbidden",
                    "Herald cannot make this request on your behalf: the server grants it "
                    "no XEP-0356 permission for it, and Herald never makes it as itself.",
                    "auth",
                )
            )
        return await self.component.upstream.as_user(
            granted, iq["from"].bare, iq["type"], service, payload
        )
