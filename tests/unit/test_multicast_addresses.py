"""Tests for the XEP-0033 address models, parser and renderer."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from component.multicast.addresses import (
    ADDRESS_TAG,
    ADDRESSES_TAG,
    Address,
    AddressError,
    AddressList,
    AddressType,
    parse_addresses,
    render_addresses,
)

NS = "http://jabber.org/protocol/address"


def header(body: str) -> ET.Element:
    return ET.fromstring(f"<addresses xmlns='{NS}'>{body}</addresses>")


def attributes(elem: ET.Element) -> list[dict[str, str]]:
    return [dict(child.attrib) for child in elem if child.tag == ADDRESS_TAG]


# XEP-0033 §4 examples 1, 2 and 3 (the extension's child element must be ignored).
XEP_EXAMPLES = [
    (
        "<address type='to' jid='hildjj@jabber.org/Work' desc='Joe Hildebrand'/>"
        "<address type='cc' jid='jer@jabber.org/Home' desc='Jeremie Miller'/>",
        [
            Address(type=AddressType.TO, jid="hildjj@jabber.org/Work", desc="Joe Hildebrand"),
            Address(type=AddressType.CC, jid="jer@jabber.org/Home", desc="Jeremie Miller"),
        ],
    ),
    (
        "<address type='bcc' jid='temas@jabber.org'/><address type='bcc' jid='jer@jabber.org'/>",
        [
            Address(type=AddressType.BCC, jid="temas@jabber.org"),
            Address(type=AddressType.BCC, jid="jer@jabber.org"),
        ],
    ),
    (
        "<address type='to' desc='Foo Group'><group xmlns='some:funny:group:ns'>foo</group>"
        "</address><address type='replyroom' jid='jdev@conference.jabber.org'/>",
        [
            Address(type=AddressType.TO, desc="Foo Group"),
            Address(type=AddressType.REPLYROOM, jid="jdev@conference.jabber.org"),
        ],
    ),
]


@pytest.mark.parametrize(("body", "expected"), XEP_EXAMPLES)
def test_parses_xep_examples(body: str, expected: list[Address]) -> None:
    assert parse_addresses(header(body)).addresses == tuple(expected)


ROUND_TRIPS = [
    "<address type='to' jid='to@header1.org' delivered='true'/>",
    "<address type='cc' jid='Romeo@Montague.NET/Orchard' node='n' desc='Romeo'/>",
    "<address type='bcc' jid='bcc@header1.org'/>",
    "<address type='replyto' uri='sip:romeo@montague.net' desc='SIP'/>",
    "<address type='replyroom' jid='room@conference.example.org'/>",
    "<address type='noreply' desc='do not reply'/>",
    "<address type='ofrom' jid='juliet@capulet.lit/balcony'/>",
    "<address type='to' node='only-a-node'/>",
    "<address type='to' jid='a@x.org'/><address type='cc' jid='a@x.org'/>"
    "<address type='replyto' jid='b@y.org'/>",
]


@pytest.mark.parametrize("body", ROUND_TRIPS)
def test_render_parse_round_trip_is_faithful(body: str) -> None:
    original = header(body)
    parsed = parse_addresses(original)
    rendered = render_addresses(parsed)
    assert rendered.tag == ADDRESSES_TAG
    assert attributes(rendered) == attributes(original)
    assert parse_addresses(rendered) == parsed


def test_original_jid_text_is_kept_but_normalised_for_comparison() -> None:
    elem = header("<address type='to' jid='Romeo@Montague.NET/Orchard'/>")
    (address,) = parse_addresses(elem).addresses
    assert address.jid == "Romeo@Montague.NET/Orchard"
    assert address.normalized_jid == "romeo@montague.net/Orchard"
    assert address.domain == "montague.net"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("false", False), ("0", False), (None, False)],
)
def test_delivered_values(value: str | None, expected: bool) -> None:
    attr = "" if value is None else f" delivered='{value}'"
    (address,) = parse_addresses(header(f"<address type='to' jid='a@x.org'{attr}/>")).addresses
    assert address.delivered is expected
    rendered = attributes(render_addresses(AddressList(addresses=(address,))))
    assert rendered[0].get("delivered") == ("true" if expected else None)


def test_unknown_attributes_and_children_are_ignored() -> None:
    elem = header(
        "<address type='to' jid='a@x.org' priority='9' xml:lang='en'><x xmlns='urn:x'/></address>"
        "<foo xmlns='urn:other'/><address xmlns='urn:not-address' type='to' jid='b@x.org'/>"
    )
    assert parse_addresses(elem).addresses == (Address(type=AddressType.TO, jid="a@x.org"),)


def test_empty_header_parses_to_empty_list() -> None:
    assert parse_addresses(header("")).addresses == ()


PARSE_ERRORS = [
    ("<address jid='a@x.org'/>", "bad-request", "no type"),
    ("<address type='foo' jid='a@x.org'/>", "bad-request", "Unknown address type 'foo'"),
    ("<address type='to' jid='a@x.org' uri='sip:a@x.org'/>", "bad-request", "jid and a uri"),
    ("<address type='to' uri='sip:a@x.org' node='n'/>", "bad-request", "uri and a node"),
    ("<address type='to'/>", "bad-request", "needs a jid, uri, node or desc"),
    ("<address type='to' jid='a@x.org' delivered='yes'/>", "bad-request", "delivered"),
    ("<address type='to' jid='a@@x.org'/>", "jid-malformed", "not a valid JID"),
    ("<address type='cc' jid='a b@x.org'/>", "jid-malformed", "not a valid JID"),
    ("<address type='to' jid=''/>", "jid-malformed", "no domain"),
    ("<address type='replyto' jid='@x'/>", "jid-malformed", "not a valid JID"),
]


@pytest.mark.parametrize(("body", "condition", "text"), PARSE_ERRORS)
def test_parse_errors(body: str, condition: str, text: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_addresses(header(body))
    assert info.value.condition == condition
    assert text in info.value.text
    assert str(info.value) == info.value.text


def test_wrong_root_element_is_bad_request() -> None:
    with pytest.raises(AddressError) as info:
        parse_addresses(ET.fromstring("<addresses xmlns='urn:wrong'/>"))
    assert info.value.condition == "bad-request"


def test_direct_construction_raises_address_error() -> None:
    with pytest.raises(AddressError) as info:
        Address(type=AddressType.TO, jid="not a jid@x.org")
    assert info.value.condition == "jid-malformed"
    with pytest.raises(AddressError) as info:
        Address.model_validate({"type": "nope", "jid": "a@x.org"})
    assert info.value.condition == "bad-request"


def test_address_is_frozen() -> None:
    address = Address(type=AddressType.TO, jid="a@x.org")
    with pytest.raises(ValueError, match="frozen"):
        address.delivered = True  # type: ignore[misc]
    assert address.marked_delivered().delivered is True
    assert address.delivered is False


def test_list_helpers() -> None:
    header_list = parse_addresses(
        header(
            "<address type='to' jid='a@x.org'/>"
            "<address type='cc' jid='b@x.org' delivered='true'/>"
            "<address type='bcc' jid='c@x.org'/>"
            "<address type='replyto' jid='d@x.org'/>"
            "<address type='noreply' desc='no'/>"
        )
    )
    assert [a.jid for a in header_list.recipients()] == ["a@x.org", "b@x.org", "c@x.org"]
    assert [a.jid for a in header_list.undelivered()] == ["a@x.org", "c@x.org"]
    assert [a.jid for a in header_list.of_type(AddressType.REPLYTO, AddressType.BCC)] == [
        "c@x.org",
        "d@x.org",
    ]


def test_a_bare_noreply_is_accepted_and_kept() -> None:
    # XEP-0033 §4.6.6: noreply "contains no actual address information"; §4 exempts it.
    parsed = parse_addresses(header("<address type='noreply'/>"))
    assert parsed.addresses == (Address(type=AddressType.NOREPLY),)
    assert attributes(render_addresses(parsed)) == attributes(header("<address type='noreply'/>"))


# -- limits (issue 11): every <address/> counts, and the header's size ------------------


def test_delivered_and_replyto_entries_count_against_max_addresses() -> None:
    # Issue 11: only undelivered to/cc/bcc counted, so thousands of delivered or
    # replyto entries passed, and every copy repeated them.
    body = "<address type='to' jid='bob@example.org'/>" + "".join(
        f"<address type='{kind}' jid='u{n}@example.org' delivered='true'/>"
        if kind == "cc"
        else f"<address type='{kind}' jid='u{n}@example.org'/>"
        for n, kind in enumerate(["cc", "replyto"] * 150)
    )
    with pytest.raises(AddressError) as refused:
        parse_addresses(header(body), max_addresses=200)
    print("refused:", refused.value.condition, refused.value.text)
    assert refused.value.condition == "not-acceptable"
    assert "301 <address/> elements" in refused.value.text
    assert "limit is 200" in refused.value.text
    assert len(parse_addresses(header(body), max_addresses=301).addresses) == 301


def test_a_header_over_max_bytes_is_refused() -> None:
    padded = header(f"<address type='to' jid='bob@example.org' desc='{'x' * 5000}'/>")
    with pytest.raises(AddressError) as refused:
        parse_addresses(padded, max_addresses=200, max_bytes=4096)
    print("refused:", refused.value.text)
    assert refused.value.condition == "not-acceptable"
    assert "limit is 4096" in refused.value.text
    assert parse_addresses(padded, max_addresses=200, max_bytes=8192).addresses


def test_header_size_counts_utf8_bytes() -> None:
    from component.multicast.addresses import header_size

    ascii_size = header_size(header("<address type='to' jid='bob@example.org' desc='ab'/>"))
    wide_size = header_size(header("<address type='to' jid='bob@example.org' desc='éé'/>"))
    assert wide_size == ascii_size + 2


def test_a_deeply_nested_header_is_measured_not_a_recursion_error() -> None:
    # Found by the fuzzer (seed 2785954817): ET.tostring recursed past Python's limit.
    from component.multicast.addresses import header_size

    deep = "<x>" * 5000 + "</x>" * 5000
    size = header_size(header(f"<address type='to' jid='bob@example.org'/>{deep}"))
    assert size > 35_000
