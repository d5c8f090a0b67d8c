"""Service discovery (XEP-0030) done by Herald itself, without slixmpp's xep_0030.

slixmpp's plugin stores every disco#info result it receives, asked for or not, in a
dictionary that is never pruned. Here a service describes itself once (`OwnDisco`),
answers queries from that description (`disco_reply`, pure), and reads the answers to
its own queries from the reply it awaited; nothing else received is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree import ElementTree as ET

from component.xmpp.answering import error_reply
from component.xmpp.namespaces import COMPONENT_NS, DISCO_INFO_NS, DISCO_ITEMS_NS

INFO_QUERY = f"{{{DISCO_INFO_NS}}}query"
ITEMS_QUERY = f"{{{DISCO_ITEMS_NS}}}query"


@dataclass(frozen=True)
class Identity:
    """One <identity/> of a disco#info answer."""

    category: str
    type: str
    name: str


@dataclass(frozen=True)
class OwnDisco:
    """What a service says about itself: identities, features, XEP-0128 forms; no items."""

    identities: tuple[Identity, ...]
    features: tuple[str, ...]
    forms: tuple[ET.Element, ...] = ()

    def info(self) -> ET.Element:
        """The disco#info <query/> of the service's JID."""
        query = ET.Element(INFO_QUERY)
        for identity in self.identities:
            ET.SubElement(
                query,
                f"{{{DISCO_INFO_NS}}}identity",
                {"category": identity.category, "type": identity.type, "name": identity.name},
            )
        for feature in sorted({DISCO_INFO_NS, DISCO_ITEMS_NS, *self.features}):
            ET.SubElement(query, f"{{{DISCO_INFO_NS}}}feature", {"var": feature})
        query.extend(self.forms)
        return query


def disco_reply(iq: ET.Element, own: OwnDisco, service_jid: str) -> ET.Element | None:
    """The one reply to a disco IQ sent to service_jid; None for a result or an error."""
    itype = iq.get("type")
    if itype not in ("get", "set"):
        return None  # never stored, never answered (RFC 6120 §8.2.3)
    query = next(iter(iq), None)
    if query is None or query.tag not in (INFO_QUERY, ITEMS_QUERY):
        return error_reply(iq, "bad-request", "Not a service discovery query.")
    if itype == "set":
        return error_reply(
            iq, "bad-request", "Service discovery is queried with type='get'; it has no 'set'."
        )
    to = iq.get("to", "")
    if to.partition("/")[0].lower() != service_jid:
        # Nobody lives at an address with a user part on this service (RFC 6120 §10.5.3.1).
        return error_reply(iq, "service-unavailable", f"There is no entity at {to}.")
    node = query.get("node")
    if node is not None:
        return error_reply(iq, "item-not-found", f"This service has no disco node {node!r}.")
    answer = own.info() if query.tag == INFO_QUERY else ET.Element(ITEMS_QUERY)
    reply = ET.Element(
        f"{{{COMPONENT_NS}}}iq",
        {"type": "result", "id": iq.get("id", ""), "from": to, "to": iq.get("from", "")},
    )
    reply.append(answer)
    return reply


@dataclass(frozen=True)
class InfoAnswer:
    """The parts of someone else's disco#info answer a caller reads."""

    features: frozenset[str]
    query: ET.Element


def read_info(reply: ET.Element) -> InfoAnswer:
    """The features (and the query, for its forms) of a disco#info result <iq/>."""
    query = reply.find(INFO_QUERY)
    if query is None:
        query = ET.Element(INFO_QUERY)
    features = frozenset(
        f.get("var", "") for f in query.findall(f"{{{DISCO_INFO_NS}}}feature") if f.get("var")
    )
    return InfoAnswer(features, query)


def read_items(reply: ET.Element) -> list[str]:
    """The item JIDs of a disco#items result <iq/>."""
    query = reply.find(ITEMS_QUERY)
    if query is None:
        return []
    return [i.get("jid", "") for i in query.findall(f"{{{DISCO_ITEMS_NS}}}item") if i.get("jid")]
