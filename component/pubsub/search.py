"""Searching a cached node (XEP-0442 over XEP-0313), pure: query, form and results.

A ``<query xmlns='urn:xmpp:mam:2' node='N'/>`` of type set searches; of type get it
asks for the form. Fields: ``start``/``end`` (the item's time: its place in the node,
the publication time upstream ordered it by), ``{urn:xmpp:fulltext:0}fulltext``
(XEP-0431: the text content of the item's payload), ``{urn:herald:parsed:0}KEY``
for each key of the parsed JSON, and ``with`` (XEP-0313: in an archive that is not a
user's, the item's publisher; a bare JID matches its full JIDs too). Only a publisher
upstream showed anyone is stored, and results carry it already: ``with`` reveals
nothing more, and items stored without one never match it. The archive id of a
result is the item id: unique in the node, the id clients already hold, and what RSM
pages by in items reads too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final
from xml.etree.ElementTree import Element, SubElement

from slixmpp.jid import JID, InvalidJID

from component.paging import Page, PagingError, RsmRequest, parse_rsm, render_rsm
from component.pubsub.stanzas import item_xml
from component.search_text import terms
from component.storage.records import ItemRecord
from component.xmpp.namespaces import (
    DATA_FORMS_NS,
    DELAY_NS,
    DISCO_INFO_NS,
    FORWARD_NS,
    PUBSUB_EVENT_NS,
    RSM_NS,
)
from component.xmpp.xmltext import quote_attr

MAM_NS: Final = "urn:xmpp:mam:2"
FULLTEXT_NS: Final = "urn:xmpp:fulltext:0"
PARSED_NS: Final = "urn:herald:parsed:0"
FULLTEXT_FIELD: Final = f"{{{FULLTEXT_NS}}}fulltext"
PAGE_LIMIT: Final = 100  # results per page when the client asks for none, or more
_X = f"{{{DATA_FORMS_NS}}}"


class SearchError(Exception):
    """A query that cannot be run; ``condition`` is the stanza error to return."""

    def __init__(self, condition: str, text: str, etype: str = "modify") -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text
        self.etype = etype


@dataclass(frozen=True)
class SearchQuery:
    """A parsed query: the form request (``form``) or a search with its paging."""

    node: str
    queryid: str | None = None
    form: bool = False
    start: datetime | None = None
    end: datetime | None = None
    fulltext: str | None = None
    parsed: tuple[tuple[str, str], ...] = ()
    publisher: str | None = None  # the 'with' field, normalised
    rsm: RsmRequest = field(default_factory=lambda: RsmRequest(max=PAGE_LIMIT))
    flip: bool = False

    @property
    def terms(self) -> tuple[str, ...]:
        """Every index term an item must hold (fulltext and parsed fields)."""
        found = [] if self.fulltext is None else terms(self.fulltext)
        for key, value in self.parsed:
            found.extend(terms(value, key))
        return tuple(found)


def parse_query(query: Element, iq_type: str) -> SearchQuery:
    """Read a MAM query; raises SearchError with the XEP-0313 error for a bad one."""
    node = query.get("node")
    if not node:
        raise SearchError(
            "feature-not-implemented",
            "Herald searches pubsub nodes (XEP-0442): give the query a 'node' attribute.",
            "cancel",
        )
    queryid = query.get("queryid")
    if iq_type == "get":
        return SearchQuery(node, queryid, form=True)
    fields = _form_fields(query.find(f"{_X}x"))
    found = SearchQuery(node, queryid, rsm=_rsm(query.find(f"{{{RSM_NS}}}set")))
    for var, values in fields.items():
        value = " ".join(values).strip()
        if var == "start":
            found = replace(found, start=_time(var, value))
        elif var == "end":
            found = replace(found, end=_time(var, value))
        elif var == FULLTEXT_FIELD:
            found = replace(found, fulltext=_words(var, value))
        elif var == "with":
            found = replace(found, publisher=_jid(value))
        elif var.startswith(f"{{{PARSED_NS}}}") and len(var) > len(PARSED_NS) + 2:
            key = var[len(PARSED_NS) + 2 :]
            found = replace(found, parsed=(*found.parsed, (key, _words(var, value))))
        else:
            raise SearchError(
                "feature-not-implemented",
                f"Herald does not support the field {var[:80]!r}; ask for the form "
                "(a query of type get) to see the fields it supports.",
                "cancel",
            )
    if found.start is not None and found.end is not None and found.start > found.end:
        raise SearchError("bad-request", "'start' is later than 'end'.")
    return replace(found, flip=query.find(f"{{{MAM_NS}}}flip-page") is not None)


def _form_fields(form: Element | None) -> dict[str, list[str]]:
    if form is None:
        return {}
    if form.get("type", "submit") != "submit":
        raise SearchError("bad-request", "The query's data form must be of type 'submit'.")
    fields: dict[str, list[str]] = {}
    for entry in form.findall(f"{_X}field"):
        var = entry.get("var")
        if not var:
            raise SearchError("bad-request", "A field of the query form has no 'var'.")
        if var in fields:
            raise SearchError("bad-request", f"The field {var[:80]!r} appears twice.")
        fields[var] = [value.text or "" for value in entry.findall(f"{_X}value")]
    form_type = fields.pop("FORM_TYPE", [MAM_NS])
    if form_type != [MAM_NS]:
        raise SearchError("bad-request", f"The query form's FORM_TYPE must be {MAM_NS}.")
    return fields


def _rsm(element: Element | None) -> RsmRequest:
    try:
        asked = parse_rsm(element) or RsmRequest()
    except PagingError as exc:
        raise SearchError(exc.condition, exc.text) from None
    if asked.max is None or asked.max > PAGE_LIMIT:
        return replace(asked, max=PAGE_LIMIT)
    return asked


def _time(var: str, value: str) -> datetime:
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        stamp = None
    if stamp is None or stamp.tzinfo is None:
        raise SearchError(
            "bad-request",
            f"'{var}' must be a XEP-0082 DateTime with its zone, like 2026-12-07T10:00:00Z.",
        )
    return stamp.astimezone(UTC)


def _jid(value: str) -> str:
    try:
        jid = JID(value)
    except InvalidJID:
        jid = None
    if jid is None or not jid.domain:
        raise SearchError("bad-request", "'with' must be a JID, like juliet@capulet.lit.")
    return str(jid)


def _words(var: str, value: str) -> str:
    if not terms(value):
        raise SearchError("bad-request", f"{var[:80]!r} holds no word to search for.")
    return value


def complete(query: SearchQuery, page: Page[ItemRecord]) -> bool:
    """Whether the page reaches the end of the results in the direction of paging."""
    if page.first_index is None:
        return True
    if query.rsm.before is not None:
        return page.first_index == 0
    return page.first_index + len(page.items) == page.count


def form_element(node: str, parsed_keys: Iterable[str]) -> Element:
    """The answer to a form request: the fields this node can be searched by."""
    query = Element(f"{{{MAM_NS}}}query", {"node": node})
    form = SubElement(query, f"{_X}x", {"type": "form"})
    form_type = SubElement(form, f"{_X}field", {"var": "FORM_TYPE", "type": "hidden"})
    SubElement(form_type, f"{_X}value").text = MAM_NS
    SubElement(form, f"{_X}field", {"var": "with", "type": "jid-single"})
    for var in ("start", "end", FULLTEXT_FIELD):
        SubElement(form, f"{_X}field", {"var": var, "type": "text-single"})
    for key in parsed_keys:
        SubElement(form, f"{_X}field", {"var": f"{{{PARSED_NS}}}{key}", "type": "text-single"})
    return query


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def result_messages(
    query: SearchQuery, ifrom: str, ito: str, items: Sequence[ItemRecord]
) -> list[str]:
    """One <message/> per item, each wrapping the item's notification (XEP-0442)."""
    queryid = "" if query.queryid is None else f" queryid={quote_attr(query.queryid)}"
    ordered = list(reversed(items)) if query.flip else list(items)
    return [
        f"<message from={quote_attr(ifrom)} to={quote_attr(ito)}>"
        f'<result xmlns="{MAM_NS}"{queryid} id={quote_attr(item.item_id)}>'
        f'<forwarded xmlns="{FORWARD_NS}">'
        f'<delay xmlns="{DELAY_NS}" stamp="{_stamp(item.created)}"/>'
        f'<message xmlns="jabber:client"><event xmlns="{PUBSUB_EVENT_NS}">'
        f"<items node={quote_attr(query.node)}>{item_xml(item)}</items></event></message>"
        "</forwarded></result></message>"
        for item in ordered
    ]


def fin_element(query: SearchQuery, page: Page[ItemRecord]) -> Element:
    """The <fin/> of the IQ result: complete, and the RSM first/last/count."""
    fin = Element(f"{{{MAM_NS}}}fin", {"complete": "true" if complete(query, page) else "false"})
    fin.append(render_rsm(page))
    return fin


def add_search_features(answer: Element) -> None:
    """Advertise search in a node's disco#info answer (where the node is searchable)."""
    for feature in (MAM_NS, FULLTEXT_NS):
        if answer.find(f"{{{DISCO_INFO_NS}}}feature[@var='{feature}']") is None:
            SubElement(answer, f"{{{DISCO_INFO_NS}}}feature", {"var": feature})
