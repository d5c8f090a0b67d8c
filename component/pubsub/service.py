"""The pubsub component: a caching proxy in front of XEP-0060 services."""

from __future__ import annotations

from component.xmpp.connection import ServiceComponent

PUBSUB_NS = "http://jabber.org/protocol/pubsub"


class PubsubComponent(ServiceComponent):
    """Announces pubsub/service; the proxy handlers are added on top of this."""

    service_name = "pubsub"

    def __init__(self, jid: str, secret: str, host: str, port: int, upstream: str) -> None:
        self.upstream = upstream
        super().__init__(jid, secret, host, port)

    def setup(self) -> None:
        disco = self.plugin["xep_0030"]
        disco.add_identity(category="pubsub", itype="service", name="Herald pubsub cache")
        disco.add_feature(PUBSUB_NS)
