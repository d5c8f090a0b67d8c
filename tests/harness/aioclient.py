"""A second, independent client for the interoperability tests: aioxmpp.

The other integration tests talk through slixmpp (tests/harness/client.py); these
check that a client written by other people, with its own parser and its own idea of
which service an event comes from, works through the proxy too.

aioxmpp 0.13 insists on TLS unless told otherwise; the test servers listen on
loopback without it, so the security layer here is aioxmpp's own `make(...)` with
`tls_required` switched off (and certificate checks off, should a server offer
STARTTLS anyway). aioxmpp then authenticates with SCRAM, never PLAIN, without TLS.
For tests only.

aioxmpp 0.13 has no XEP-0313 module: the MAM query, its <fin/> and the result
messages are declared below as XSOs, which is how aioxmpp extends its own stanzas
(it registers every XEP it supports the same way); queries then go through
aioxmpp's ordinary IQ API.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aioxmpp
import aioxmpp.connector
import aioxmpp.forms
import aioxmpp.misc
import aioxmpp.pubsub
import aioxmpp.rsm.xso
import aioxmpp.security_layer
import aioxmpp.xso as xso

MAM = "urn:xmpp:mam:2"


class MamQuery(xso.XSO):  # type: ignore[misc]
    """<query xmlns='urn:xmpp:mam:2'/>, with XEP-0442's node attribute."""

    TAG = (MAM, "query")
    queryid = xso.Attr("queryid", default=None)
    node = xso.Attr("node", default=None)
    form = xso.Child([aioxmpp.forms.Data])
    rsm = xso.Child([aioxmpp.rsm.xso.ResultSetMetadata])
    flip_page = xso.ChildFlag((MAM, "flip-page"))

    def __init__(self, node: str | None = None, queryid: str | None = None) -> None:
        super().__init__()
        self.node = node
        self.queryid = queryid


class MamFin(xso.XSO):  # type: ignore[misc]
    """The <fin/> that ends a query, with its RSM set."""

    TAG = (MAM, "fin")
    complete = xso.Attr("complete", type_=xso.Bool(), default=False)
    rsm = xso.Child([aioxmpp.rsm.xso.ResultSetMetadata])


class MamResult(xso.XSO):  # type: ignore[misc]
    """<result/> in a result message: one archived (here: cached) item."""

    TAG = (MAM, "result")
    queryid = xso.Attr("queryid", default=None)
    id_ = xso.Attr("id")
    forwarded = xso.Child([aioxmpp.misc.Forwarded])


aioxmpp.IQ.as_payload_class(MamQuery)
aioxmpp.IQ.as_payload_class(MamFin)
aioxmpp.Message.xep0313_result = xso.Child([MamResult])


@dataclass
class AioClient:
    """One connected aioxmpp client, with what it received."""

    client: aioxmpp.Client
    pubsub: aioxmpp.PubSubClient
    disco: aioxmpp.DiscoClient
    #: (service JID, node, item id, payload) for each on_item_published, in order
    published: list[tuple[str, str, str, Any]] = field(default_factory=list)
    mam_results: list[MamResult] = field(default_factory=list)

    async def send(self, iq: aioxmpp.IQ) -> Any:
        """An IQ through aioxmpp's own API: the reply's payload, or XMPPError raised."""
        return await self.client.send(iq)


def plaintext_layer(password: str) -> aioxmpp.security_layer.SecurityLayer:
    """aioxmpp's security layer for a loopback test server without TLS."""
    layer = aioxmpp.security_layer.make(password, no_verify=True)
    return layer._replace(tls_required=False)


@contextlib.asynccontextmanager
async def connected(jid: str, password: str, port: int) -> AsyncIterator[AioClient]:
    """An available aioxmpp client at 127.0.0.1:port, for the `with` block."""
    client = aioxmpp.Client(
        aioxmpp.JID.fromstr(jid),
        plaintext_layer(password),
        override_peer=[("127.0.0.1", port, aioxmpp.connector.STARTTLSConnector())],
    )
    made = AioClient(
        client=client,
        pubsub=client.summon(aioxmpp.PubSubClient),
        disco=client.summon(aioxmpp.DiscoClient),
    )

    def on_published(jid: aioxmpp.JID, node: str, item: Any, *, message: Any = None) -> None:
        payload = item.unregistered_payload[0] if len(item.unregistered_payload) else None
        made.published.append((str(jid), node, item.id_, payload))

    def on_message(message: aioxmpp.Message) -> aioxmpp.Message:
        if message.xep0313_result is not None:
            made.mam_results.append(message.xep0313_result)
        return message

    # The callbacks return None: an aioxmpp signal handler that returns true is disconnected.
    made.pubsub.on_item_published.connect(on_published)
    client.stream.app_inbound_message_filter.register(on_message, 0)
    # Available before connecting, as aioxmpp 0.13 recommends (its presence argument to
    # connected() is deprecated): a notification to the bare JID needs a resource that
    # is available, else the server keeps or drops it.
    client.summon(aioxmpp.PresenceServer).set_presence(aioxmpp.PresenceState(available=True))
    async with client.connected():
        yield made
