"""Parsing a pubsub IQ payload into a request the proxy can route (pure).

Only reads of items can be answered from the cache; everything else is forwarded,
so the parser only needs to recognise items retrieval precisely and name the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from component.pubsub.paging import PagingError, RsmRequest, parse_rsm

PUBSUB_NS = "http://jabber.org/protocol/pubsub"
OWNER_NS = "http://jabber.org/protocol/pubsub#owner"
RSM_NS = "http://jabber.org/protocol/rsm"


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
    namespace: str  # PUBSUB_NS or OWNER_NS
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
    actions = [child for child in pubsub if child.tag.startswith(f"{{{namespace}}}")]
    if not actions:
        raise RequestError("bad-request", "The <pubsub/> element names no action.")
    # XEP-0060 pairs some actions (subscribe+options, publish+publish-options,
    # create+configure); the first child names the request.
    action = actions[0]
    name = action.tag.partition("}")[2]
    node = action.get("node")
    if name != "items":
        return PubsubRequest(iq_type, namespace, name, node)
    if iq_type != "get":
        raise RequestError("bad-request", "Items are retrieved with an IQ of type get.")
    if node is None:
        raise RequestError("bad-request", "Items retrieval needs a node.", "nodeid-required")
    max_items = None
    raw = action.get("max_items")
    if raw is not None:
        if not raw.strip().isdigit() or int(raw) < 1:
            raise RequestError("bad-request", f"max_items must be a positive integer, not {raw!r}.")
        max_items = int(raw)
    ids = tuple(item.get("id", "") for item in action.findall(f"{{{PUBSUB_NS}}}item"))
    if any(not i for i in ids):
        raise RequestError("bad-request", "An <item/> in an items request needs an id.")
    try:
        rsm = parse_rsm(pubsub.find(f"{{{RSM_NS}}}set"))
    except PagingError as exc:
        raise RequestError(exc.condition, exc.text) from None
    return PubsubRequest(iq_type, namespace, "items", node, max_items, ids, rsm)
