"""Pubsub XML in and out of the cache (pure): items to store, results, notifications.

Payloads are stored as serialised text and written back verbatim, so a cached item
reaches the client exactly as Herald stored it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element

from component.paging import Page
from component.pubsub.requests import PubsubRequest
from component.storage.records import ItemRecord
from component.xmpp.namespaces import PUBSUB_EVENT_NS, PUBSUB_NS, PUBSUB_OWNER_NS, RSM_NS
from component.xmpp.xmltext import escape_text, quote_attr

Serializer = Callable[[Element], str]


@dataclass(frozen=True)
class ReceivedItem:
    """An item as received upstream: id, publisher and the payload's XML text."""

    item_id: str
    payload: str
    namespace: str | None  # the payload's namespace, for analysers
    publisher: str | None
    element: Element | None  # the payload element, for parsers


@dataclass(frozen=True)
class NodeEvent:
    """One <event/> notification, reduced to what the cache applies."""

    kind: str  # items | purge | delete | configuration | stale (re-fetch the node)
    node: str
    published: tuple[ReceivedItem, ...] = ()
    retracted: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)


def result_items(reply: Element) -> list[Element]:
    """The <item/> elements of an items result <iq/>."""
    return reply.findall(f"{{{PUBSUB_NS}}}pubsub/{{{PUBSUB_NS}}}items/{{{PUBSUB_NS}}}item")


def received_items(items: Iterable[Element], serialize: Serializer) -> list[ReceivedItem]:
    """The <item/> children of an items result or event, with their payloads."""
    found = []
    for item in items:
        if not item.tag.endswith("}item"):
            continue
        payload = next(iter(item), None)
        found.append(
            ReceivedItem(
                item_id=item.get("id", ""),
                payload="" if payload is None else serialize(payload),
                namespace=None if payload is None else payload.tag[1:].partition("}")[0],
                publisher=item.get("publisher"),
                element=payload,
            )
        )
    return [i for i in found if i.item_id]


def parse_event(event: Element, serialize: Serializer) -> list[NodeEvent]:
    """The notifications in an <event xmlns='...#event'/> element."""
    events: list[NodeEvent] = []
    for child in event:
        kind = child.tag.partition("}")[2]
        node = child.get("node")
        if node is None:
            continue
        if kind == "items":
            retracted = tuple(
                r.get("id", "")
                for r in child.findall(f"{{{PUBSUB_EVENT_NS}}}retract")
                if r.get("id")
            )
            published = tuple(
                received_items(child.findall(f"{{{PUBSUB_EVENT_NS}}}item"), serialize)
            )
            events.append(NodeEvent("items", node, published, retracted))
        elif kind in ("purge", "delete", "configuration"):
            events.append(NodeEvent(kind, node))
    return events


def written_events(request: PubsubRequest, payload: Element, reply: Element) -> list[NodeEvent]:
    """The notifications a write accepted upstream stands for, to apply to the cache.

    A publication is named by id only (an item without payload), so the item is read
    back as upstream stores it; one whose id nobody told us re-fetches the node.
    """
    node = request.node
    if node is None:
        return []
    action = request.action
    if action == "retract":
        gone = tuple(i.get("id", "") for i in payload.iter(f"{{{PUBSUB_NS}}}item") if i.get("id"))
        return [NodeEvent("items", node, retracted=gone)]
    if action == "publish":
        ids = [i.get("id", "") for i in reply.iter(f"{{{PUBSUB_NS}}}item")]
        ids = ids or [i.get("id", "") for i in payload.iter(f"{{{PUBSUB_NS}}}item")]
        if not ids or not all(ids):
            return [NodeEvent("stale", node)]  # upstream chose an id it did not say
        return [NodeEvent("items", node, published=tuple(_named(i) for i in ids))]
    if action in ("purge", "delete"):
        return [NodeEvent(action, node)]
    if action == "configure" and request.namespace == PUBSUB_OWNER_NS:
        return [NodeEvent("configuration", node)]
    return []


def _named(item_id: str) -> ReceivedItem:
    return ReceivedItem(item_id, "", None, None, None)


def item_xml(record: ItemRecord) -> str:
    """One cached <item/>, in the pubsub namespace of its parent."""
    publisher = "" if record.publisher is None else f" publisher={quote_attr(record.publisher)}"
    return f"<item id={quote_attr(record.item_id)}{publisher}>{record.data}</item>"


def rsm_xml(page: Page[ItemRecord]) -> str:
    """The RSM <set/> of a page (first with its index, last, count)."""
    parts = [f'<set xmlns="{RSM_NS}">']
    if page.first is not None:
        parts.append(f'<first index="{page.first_index}">{escape_text(page.first)}</first>')
    if page.last is not None:
        parts.append(f"<last>{escape_text(page.last)}</last>")
    parts.append(f"<count>{page.count}</count></set>")
    return "".join(parts)


def items_result(
    iq_id: str,
    ifrom: str,
    ito: str,
    node: str,
    items: Sequence[ItemRecord],
    page: Page[ItemRecord] | None,
) -> str:
    """A complete <iq type='result'/> answering an items request from the cache.

    The <set/> is included when the request used RSM, as XEP-0059 requires.
    """
    body = "".join(item_xml(r) for r in items)
    rsm = "" if page is None else rsm_xml(page)
    return (
        f'<iq type="result" id={quote_attr(iq_id)} from={quote_attr(ifrom)} to={quote_attr(ito)}>'
        f'<pubsub xmlns="{PUBSUB_NS}"><items node={quote_attr(node)}>{body}</items>{rsm}'
        "</pubsub></iq>"
    )
