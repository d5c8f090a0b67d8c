"""Pure pubsub pieces: access decisions, request parsing, result XML, notifications."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest

from component.paging import Page, RsmRequest
from component.pubsub.access import NodeMeta, parse_node_meta, shareable
from component.pubsub.requests import (
    PubsubRequest,
    RequestError,
    answered_by_newest,
    items_payload,
    items_read,
    parse_request,
)
from component.pubsub.stanzas import items_result, parse_event, result_items
from component.storage.records import ItemRecord
from component.xmpp.xmltext import serialize

PS = "http://jabber.org/protocol/pubsub"
EV = "http://jabber.org/protocol/pubsub#event"


def meta_query(**fields: str) -> ET.Element:
    rows = "".join(f'<field var="{k}"><value>{v}</value></field>' for k, v in fields.items())
    return ET.fromstring(
        f"""<query xmlns="http://jabber.org/protocol/disco#info" node="n">
              <identity category="pubsub" type="leaf"/>
              <x xmlns="jabber:x:data" type="result">
                <field var="FORM_TYPE" type="hidden">
                  <value>http://jabber.org/protocol/pubsub#meta-data</value></field>
                {rows}
              </x></query>"""
    )


H = "{urn:xmpp:pubsub-caching:0}"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"pubsub#access_model": "open"}, True),
        ({"pubsub#access_model": "whitelist"}, False),
        ({"pubsub#access_model": "presence"}, False),
        ({}, False),  # not provably open
        (
            {
                "pubsub#access_model": "open",
                f"{H}consistent-items": "true",
                f"{H}consistent-set": "true",
            },
            True,
        ),
        (
            {
                "pubsub#access_model": "open",
                f"{H}consistent-items": "1",
                f"{H}consistent-set": "false",
            },
            False,
        ),
        (
            {
                "pubsub#access_model": "open",
                f"{H}consistent-items": "false",
                f"{H}consistent-set": "true",
            },
            False,
        ),
        (
            {
                "pubsub#access_model": "open",
                f"{H}persistence": "transient",
                f"{H}consistent-items": "true",
                f"{H}consistent-set": "true",
            },
            False,
        ),
    ],
)
def test_shareable(fields: dict[str, str], expected: bool) -> None:
    assert shareable(parse_node_meta(meta_query(**fields))) is expected


def test_missing_node_is_not_shareable() -> None:
    assert not shareable(NodeMeta(exists=False, access_model="open"))


@pytest.mark.parametrize(
    ("max_items", "item_expire", "limit", "cacheable"),
    [
        (None, None, None, True),
        ("20", None, 20, True),
        ("max", "max", None, True),  # XEP-0060's integer-or-max: no limit
        ("0", "0", None, True),
        ("-3", "x", None, True),  # unreadable: as if not given
        ("10", "3600", 10, False),  # items vanish upstream without a notification
    ],
)
def test_node_limits_from_metadata(
    max_items: str | None, item_expire: str | None, limit: int | None, cacheable: bool
) -> None:
    fields = {"pubsub#access_model": "open"}
    if max_items is not None:
        fields["pubsub#max_items"] = max_items
    if item_expire is not None:
        fields["pubsub#item_expire"] = item_expire
    meta = parse_node_meta(meta_query(**fields))
    assert meta.max_items == limit
    assert meta.cacheable is cacheable


@pytest.mark.parametrize(
    ("inner", "answered"),
    [
        ('<items node="n" max_items="2"/>', True),
        ('<items node="n" max_items="3"/>', True),
        ('<items node="n" max_items="4"/>', False),  # older ones are upstream
        ('<items node="n"/>', False),  # all items
        ('<items node="n"><item id="b"/><item id="c"/></items>', True),
        ('<items node="n"><item id="b"/><item id="old"/></items>', False),
        (
            '<items node="n" max_items="2"/>'
            '<set xmlns="http://jabber.org/protocol/rsm"><max>2</max></set>',
            False,  # RSM counts and pages span the whole node
        ),
    ],
)
def test_what_a_truncated_node_answers(inner: str, answered: bool) -> None:
    request = parse_request("get", pubsub(inner))
    held = [record(i, "<x xmlns='urn:x'/>") for i in ("a", "b", "c")]
    assert answered_by_newest(request, held) is answered


def pubsub(inner: str, ns: str = PS) -> ET.Element:
    return ET.fromstring(f'<pubsub xmlns="{ns}">{inner}</pubsub>')


def test_items_request() -> None:
    req = parse_request(
        "get",
        pubsub(
            '<items node="blog" max_items="5"><item id="a"/><item id="b"/></items>'
            '<set xmlns="http://jabber.org/protocol/rsm"><max>3</max></set>'
        ),
    )
    assert req == PubsubRequest("get", PS, "items", "blog", 5, ("a", "b"), req.rsm)
    assert req.rsm is not None
    assert req.rsm.max == 3
    assert req.is_items_read


@pytest.mark.parametrize(
    ("iq_type", "inner", "condition"),
    [
        ("get", "", "bad-request"),
        ("get", "<items/>", "bad-request"),
        ("get", '<items node="n" max_items="-1"/>', "bad-request"),
        ("get", '<items node="n" max_items="many"/>', "bad-request"),
        ("get", '<items node="n" max_items="\u00b2"/>', "bad-request"),
        ("get", '<items node="n" max_items="' + "9" * 5000 + '"/>', "bad-request"),
        ("get", '<foo xmlns="urn:x" node="n"/><items node="n"/>', "bad-request"),
        ("get", '<items node="n"><item/></items>', "bad-request"),
        ("set", '<items node="n"/>', "bad-request"),
        (
            "get",
            '<items node="n"/><set xmlns="http://jabber.org/protocol/rsm"><max>-4</max></set>',
            "bad-request",
        ),
    ],
)
def test_malformed_requests(iq_type: str, inner: str, condition: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(iq_type, pubsub(inner))
    assert info.value.condition == condition
    assert info.value.text


@pytest.mark.parametrize(
    ("request_", "xml"),
    [
        # the sync's page request: the newest page, then the one before an anchor
        (
            items_read("blog", rsm=RsmRequest(max=100, before="")),
            f'<pubsub xmlns="{PS}"><items node="blog"/>'
            '<set xmlns="http://jabber.org/protocol/rsm"><max>100</max><before/></set></pubsub>',
        ),
        (
            items_read("blog", rsm=RsmRequest(max=100, before="a&b")),
            f'<pubsub xmlns="{PS}"><items node="blog"/>'
            '<set xmlns="http://jabber.org/protocol/rsm"><max>100</max>'
            "<before>a&amp;b</before></set></pubsub>",
        ),
        # the eviction probe, and the republish-order question
        (
            items_read("blog", item_ids=["1", "2"]),
            f'<pubsub xmlns="{PS}"><items node="blog"><item id="1"/><item id="2"/></items>'
            "</pubsub>",
        ),
        (
            items_read("blog", max_items=1),
            f'<pubsub xmlns="{PS}"><items node="blog" max_items="1"/></pubsub>',
        ),
    ],
)
def test_herald_own_items_requests(request_: PubsubRequest, xml: str) -> None:
    assert request_.is_items_read
    assert serialize(items_payload(request_)) == xml
    # and the request, read back, is the same request
    assert parse_request("get", items_payload(request_)) == request_


def test_result_items_are_the_items_of_an_items_result() -> None:
    reply = ET.fromstring(
        f'<iq xmlns="jabber:component:accept" type="result"><pubsub xmlns="{PS}">'
        '<items node="n"><item id="a"/><item id="b"/></items>'
        '<set xmlns="http://jabber.org/protocol/rsm"><count>2</count></set></pubsub></iq>'
    )
    assert [item.get("id") for item in result_items(reply)] == ["a", "b"]
    empty = ET.fromstring('<iq xmlns="jabber:component:accept" type="result"/>')
    assert result_items(empty) == []


def test_other_actions_are_named_for_forwarding() -> None:
    req = parse_request("set", pubsub('<publish node="n"><item id="1"/></publish>'))
    assert (req.action, req.node, req.is_items_read) == ("publish", "n", False)
    owner = parse_request("get", pubsub('<configure node="n"/>', f"{PS}#owner"))
    assert (owner.namespace, owner.action) == (f"{PS}#owner", "configure")


def record(item_id: str, data: str, publisher: str | None = None) -> ItemRecord:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, tzinfo=UTC)
    return ItemRecord(item_id, data, None, publisher, now, now)


def test_items_result_is_byte_faithful_and_escaped() -> None:
    payload = '<entry xmlns="http://www.w3.org/2005/Atom"><title>a &amp; b</title></entry>'
    records = [record("1", payload), record('x"<y', "<p xmlns='urn:x'/>", "alice@example.org")]
    page = Page(
        items=tuple(records), first="1", first_index=0, last='x"<y', count=7, complete=False
    )
    text = items_result("id&1", "pubsub.example.org", "bob@example.org/r", "n&1", records, page)
    assert payload in text  # stored bytes are written verbatim
    tree = ET.fromstring(text)
    assert tree.get("id") == "id&1"
    items = tree.find(f"{{{PS}}}pubsub/{{{PS}}}items")
    assert items is not None
    assert items.get("node") == "n&1"
    assert [i.get("id") for i in items] == ["1", 'x"<y']
    assert items[1].get("publisher") == "alice@example.org"
    rsm = tree.find(f"{{{PS}}}pubsub/{{http://jabber.org/protocol/rsm}}set")
    assert rsm is not None
    assert [(c.tag.split("}")[1], c.text, c.get("index")) for c in rsm] == [
        ("first", "1", "0"),
        ("last", 'x"<y', None),
        ("count", "7", None),
    ]


def test_parse_event() -> None:
    event = ET.fromstring(
        f"""<event xmlns="{EV}">
              <items node="blog">
                <item id="1" publisher="a@x"><entry xmlns="http://www.w3.org/2005/Atom"/></item>
                <retract id="0"/>
              </items>
            </event>"""
    )
    (change,) = parse_event(event, lambda e: ET.tostring(e, encoding="unicode"))
    assert change.kind == "items"
    assert change.node == "blog"
    assert change.retracted == ("0",)
    (item,) = change.published
    assert (item.item_id, item.publisher, item.namespace) == (
        "1",
        "a@x",
        "http://www.w3.org/2005/Atom",
    )
    for kind in ("purge", "delete", "configuration"):
        (change,) = parse_event(
            ET.fromstring(f'<event xmlns="{EV}"><{kind} node="n"/></event>'), str
        )
        assert (change.kind, change.node) == (kind, "n")
    assert parse_event(ET.fromstring(f'<event xmlns="{EV}"><purge/></event>'), str) == []


def test_coalesced_merges_consecutive_publications_only() -> None:
    from component.pubsub.notifications import coalesced
    from component.pubsub.stanzas import NodeEvent, ReceivedItem

    def pub(*ids: str) -> NodeEvent:
        return NodeEvent(
            "items", "n", tuple(ReceivedItem(i, "<x/>", None, None, None) for i in ids)
        )

    retract = NodeEvent("items", "n", retracted=("a",))
    purge = NodeEvent("purge", "n")

    def shape(events: list[NodeEvent]) -> list[tuple[str, list[str], list[str]]]:
        return [(e.kind, [i.item_id for i in e.published], list(e.retracted)) for e in events]

    assert shape(coalesced([pub("a"), pub("b"), pub("c")])) == [("items", ["a", "b", "c"], [])]
    # a retraction, a purge, or the same id again keeps the order of steps
    assert shape(coalesced([pub("a"), retract, pub("a")])) == [
        ("items", ["a"], []),
        ("items", [], ["a"]),
        ("items", ["a"], []),
    ]
    assert shape(coalesced([pub("a"), purge, pub("b")])) == [
        ("items", ["a"], []),
        ("purge", [], []),
        ("items", ["b"], []),
    ]
    assert shape(coalesced([pub("a"), pub("b"), pub("a"), pub("c")])) == [
        ("items", ["a", "b"], []),
        ("items", ["a", "c"], []),
    ]
    assert coalesced([]) == []
