"""The multicast component: the domain's XEP-0033 service."""

from __future__ import annotations

from component.xmpp.connection import ServiceComponent

ADDRESS_NS = "http://jabber.org/protocol/address"


class MulticastComponent(ServiceComponent):
    """Announces service/multicast; delivery handlers are added on top of this."""

    service_name = "multicast"

    def setup(self) -> None:
        disco = self.plugin["xep_0030"]
        disco.add_identity(category="service", itype="multicast", name="Herald multicast")
        disco.add_feature(ADDRESS_NS)
