"""The raw material of the fuzzer's stanzas: hostile values and small XML builders (pure)."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

ADDRESS_NS = "http://jabber.org/protocol/address"
PUBSUB_NS = "http://jabber.org/protocol/pubsub"
PUBSUB_OWNER_NS = "http://jabber.org/protocol/pubsub#owner"
DISCO_INFO_NS = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS_NS = "http://jabber.org/protocol/disco#items"
RSM_NS = "http://jabber.org/protocol/rsm"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"

EMOJI = "\U0001f600"
ODD_RESOURCES = [
    "\U0001f600",  # slixmpp's stringprep refuses emoji, Prosody does not
    "\u202eevil\u202c",  # right-to-left override
    "\u05e9\u05dc\u05d5\u05dd",  # Hebrew
    "a" * 1023,  # the longest resource RFC 7622 allows
    "r\u200bz",  # zero-width space
    "e\u0301\u0301\u0301",  # combining marks
    " spaced out ",
    "x/y/z",
    "@at@",
    "\ufb01",  # a ligature NFKC folds
    "\U00010000",
]

BAD_JIDS = [
    "not a@@jid",
    "@localhost",
    "user@",
    "a@b@c",
    "x" * 1100 + "@localhost",
    "bob@" + "d" * 1100,
    "bob@localhost/",
    "/res",
    "bob@[::1]",
    "bob@127.0.0.1",
    "bob@localhost:5222",
    "b\u00f6b@localhost",
    "BOB@LOCALHOST",
    "\u202ebob@localhost",
    "bob@localhost/\U0001f600",
    "bob@-.-",
    "bob@.localhost",
    "bob@localhost.",
    "bo b@localhost",
    'bob"@localhost',
    "\u00a0@localhost",
    "xn--zz@localhost",
    "",
    " ",
]

GARBAGE_NUMBERS = [
    "-1",
    "0",
    "abc",
    "",
    " 5",
    "5 ",
    "1e3",
    "0x10",
    "99999999999999999999999999999",
    "9" * 500,
    "\u0663",  # Arabic-Indic three: int() accepts it
    "\u00b2",  # superscript two: isdigit() accepts it
    "+7",
    "3.5",
    "NaN",
    "-0",
]

SANE_NUMBERS = ["1", "5", "20", "29", "30", "100"]

UNKNOWN_CHILDREN = [
    "<foo xmlns='urn:fuzz:unknown'/>",
    "<bar xmlns='urn:fuzz:unknown'><baz>text</baz></bar>",
    "<addresses xmlns='urn:fuzz:wrong-ns'><address type='to' jid='bob@localhost'/></addresses>",
    "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>junk</value></field></x>",
    "<unknown/>",
]


def attr(value: str) -> str:
    return quoteattr(value)


def nested(depth: int, leaf: str = "leaf") -> str:
    """depth nested elements in a namespace of their own."""
    return "<n xmlns='urn:fuzz:deep'>" * depth + escape(leaf) + "</n>" * depth
