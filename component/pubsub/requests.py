"""Parsing a pubsub IQ payload into a request the proxy can route (pure).

Only reads of items can be answered from the cache; everything else is forwarded,
so the parser only needs to recognise items retrieval precisely and name the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from component.paging import PagingError, RsmRequest, parse_rsm
from component.storage.records import ItemRecord
from component.xmpp.namespaces import PUBSUB_NS, RSM_NS
from component.xmpp.numbers import count_in


class RequestError(Exception):
    """A malformed pubsub request: a stanza-error condition and a readable text."""

    def __init__(self, condition: str, text: str, pubsub_condition: str | None = None) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text
        self.pubsub_condition = pubsub_condition


@dataclass(frozen=True)
class PubsubRequest:
    """The action a pubsub IQ asks for, and what items retrieval needs."""

    iq_type: str  # get | set
    namespace: str  # PUBSUB_NS or PUBSUB_OWNER_NS
    action: str  # items, publish, retract, subscribe, configure, ...
    node: str | None
    max_items: int | None = None
    item_ids: tuple[str, ...] = ()
    rsm: RsmRequest | None = None

    @property
    def is_items_read(self) -> bool:
        """A retrieval the cache may answer."""
        return self.iq_type == "get" and self.namespace == PUBSUB_NS and self.action == "items"


def parse_request(iq_type: str, pubsub: Element) -> PubsubRequest:
    """Read a <pubsub/> (or pubsub#owner) element; raises RequestError when malformed."""
    namespace = pubsub.tag[1:].partition("}")[0]
    children = list(pubsub)
    if not children:
        raise RequestError("bad-request", "The <pubsub/> element names no action.")
    # XEP-0060 pairs some actions (subscribe+options, publish+publish-options,
    # create+configure); the first child names the request, whatever its namespace,
    # as servers read it. One outside the pubsub namespace is refused: it must not
    # be taken for something else upstream.
    action = children[0]
    if not action.tag.startswith(f"{{{namespace}}}"):
        raise RequestError("bad-request", f"Unknown pubsub action {action.tag!r}.")
    name = action.tag.partition("}")[2]
    node = action.get("node")
    if name != "items":
        return PubsubRequest(iq_type, namespace, name, node)
    if iq_type != "get":
        raise RequestError("bad-request", "Items are retrieved with an IQ of type get.")
    if node is None:
        raise RequestError("bad-request", "Items retrieval needs a node.", "nodeid-required")
    raw = action.get("max_items")
    max_items = count_in(raw, minimum=1)
    if raw is not None and max_items is None:
        raw = raw.strip()
        raise RequestError("bad-request", f"max_items must be a positive integer, not {raw!r}.")
    ids = tuple(item.get("id", "") for item in action.findall(f"{{{PUBSUB_NS}}}item"))
    if any(not i for i in ids):
        raise RequestError("bad-request", "An <item/> in an items request needs an id.")
    try:
        rsm = parse_rsm(pubsub.find(f"{{{RSM_NS}}}set"))
    except PagingError as exc:
        raise RequestError(exc.condition, exc.text) from None
    return PubsubRequest(iq_type, namespace, "items", node, max_items, ids, rsm)


def answered_by_newest(request: PubsubRequest, held: Sequence[ItemRecord]) -> bool:
    """Whether a node's newest items alone answer the request exactly.

    For a truncated node (upstream keeps older items than the cache): the newest N
    by max_items, or items by id when every one is held. All items, and RSM (whose
    counts and pages span the whole node), need upstream.
    """
    if request.item_ids:
        ids = {record.item_id for record in held}
        return all(item_id in ids for item_id in request.item_ids)
    return request.rsm is None and request.max_items is not None and request.max_items <= len(held)


def items_read(
    node: str,
    *,
    max_items: int | None = None,
    item_ids: Sequence[str] = (),
    rsm: RsmRequest | None = None,
) -> PubsubRequest:
    """An items retrieval Herald makes on its own account (sync, probes)."""
    return PubsubRequest("get", PUBSUB_NS, "items", node, max_items, tuple(item_ids), rsm)


def items_payload(request: PubsubRequest) -> Element:
    """A clean <pubsub><items/></pubsub> for the request, to send upstream.

    Rebuilt from the parsed request rather than forwarded: whatever else the client
    put in its element never reaches upstream under Herald's name.
    """
    from xml.etree.ElementTree import SubElement

    pubsub = Element(f"{{{PUBSUB_NS}}}pubsub")
    items = SubElement(pubsub, f"{{{PUBSUB_NS}}}items", {"node": request.node or ""})
    if request.max_items is not None:
        items.set("max_items", str(request.max_items))
    for item_id in request.item_ids:
        SubElement(items, f"{{{PUBSUB_NS}}}item", {"id": item_id})
    rsm = request.rsm
    if rsm is not None:
        rsm_el = SubElement(pubsub, f"{{{RSM_NS}}}set")
        for name, value in (
            ("max", rsm.max),
            ("after", rsm.after),
            ("before", rsm.before),
            ("index", rsm.index),
        ):
            if value is not None:
                SubElement(rsm_el, f"{{{RSM_NS}}}{name}").text = str(value)
    return pubsub
