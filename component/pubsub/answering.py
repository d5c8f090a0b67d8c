"""Answers to items reads: from the cache, or an upstream answer Herald pages itself."""

from __future__ import annotations

from collections.abc import Callable
from xml.etree import ElementTree as ET

from slixmpp.xmlstream import StanzaBase

from component.paging import PagingError, paginate
from component.pubsub.node_state import NodeState
from component.pubsub.refused import Refused
from component.pubsub.requests import PubsubRequest
from component.pubsub.stanzas import items_result
from component.storage.records import ItemRecord
from component.xmpp.errors import make_error
from component.xmpp.namespaces import PUBSUB_NS, RSM_NS


def page_upstream(children: list[ET.Element], request: PubsubRequest) -> list[ET.Element]:
    """Apply RSM ourselves when upstream ignored it (Prosody 0.12 does)."""
    pubsub = next((c for c in children if c.tag == f"{{{PUBSUB_NS}}}pubsub"), None)
    if pubsub is None or pubsub.find(f"{{{RSM_NS}}}set") is not None:
        return children
    items = pubsub.find(f"{{{PUBSUB_NS}}}items")
    if items is None:
        return children
    elements = [e for e in items if e.tag == f"{{{PUBSUB_NS}}}item"]
    try:
        page = paginate(elements, lambda e: e.get("id", ""), request.rsm, request.max_items)
    except PagingError as exc:
        raise Refused(make_error(exc.condition, exc.text, "cancel")) from None
    from component.paging import render_rsm

    for element in elements:
        items.remove(element)
    items.extend(page.items)
    pubsub.append(render_rsm(page))
    return children


def answer_from_cache(
    send_raw: Callable[[str], None],
    iq: StanzaBase,
    node: NodeState,
    request: PubsubRequest,
    items: list[ItemRecord],
) -> None:
    """Send the items result for a read the cache answers, paged as it asked."""
    if request.item_ids:
        wanted = set(request.item_ids)
        selected: list[ItemRecord] = [r for r in items if r.item_id in wanted]
        page = None
    else:
        try:
            found = paginate(items, _item_id, request.rsm, request.max_items)
        except PagingError as exc:
            raise Refused(make_error(exc.condition, exc.text, "cancel")) from None
        selected = list(found.items)
        page = found if request.rsm is not None else None
    send_raw(items_result(iq["id"], str(iq["to"]), str(iq["from"]), node.name, selected, page))


def _item_id(record: ItemRecord) -> str:
    return record.item_id
