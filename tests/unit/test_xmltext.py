"""The payload serialiser keeps every namespace, attribute and character."""

from __future__ import annotations

from xml.etree import ElementTree as ET
from xml.etree.ElementTree import canonicalize

import pytest

from component.xmpp.xmltext import serialize

SAMPLES = [
    '<entry xmlns="http://www.w3.org/2005/Atom"><title>a &amp; b &lt;c&gt;</title></entry>',
    '<entry xmlns="http://www.w3.org/2005/Atom" xmlns:thr="http://purl.org/syndication/'
    'thread/1.0"><link rel="replies" thr:count="5" href="x?a=1&amp;b=&quot;2&quot;"/></entry>',
    '<x xmlns="urn:a"><y xmlns="urn:b">t<z/>tail</y>after</x>',
    '<p xmlns="urn:x" xml:lang="fr">é ü 😀</p>',
    '<html xmlns="http://jabber.org/protocol/xhtml-im"><body xmlns="http://www.w3.org/1999/'
    'xhtml"><p>Hi <b>there</b>!</p></body></html>',
]


@pytest.mark.parametrize("sample", SAMPLES)
def test_round_trip_is_canonically_identical(sample: str) -> None:
    text = serialize(ET.fromstring(sample))
    assert canonicalize(text, rewrite_prefixes=True) == canonicalize(sample, rewrite_prefixes=True)


def test_namespaced_attribute_survives() -> None:
    text = serialize(ET.fromstring(SAMPLES[1]))
    link = ET.fromstring(text).find("{http://www.w3.org/2005/Atom}link")
    assert link is not None
    assert link.get("{http://purl.org/syndication/thread/1.0}count") == "5"
    assert text.startswith('<entry xmlns="http://www.w3.org/2005/Atom">')


def test_inherits_the_parent_default_namespace() -> None:
    element = ET.fromstring('<item xmlns="http://jabber.org/protocol/pubsub" id="1"/>')
    assert serialize(element, "http://jabber.org/protocol/pubsub") == '<item id="1"/>'


def test_attribute_values_survive_quotes_and_whitespace() -> None:
    element = ET.Element("{urn:x}a", {"v": 'say "hi" & <go>\n\tnow\r', "w": "it's"})
    parsed = ET.fromstring(serialize(element))
    assert parsed.get("v") == 'say "hi" & <go>\n\tnow\r'
    assert parsed.get("w") == "it's"


def test_text_is_escaped_only_where_needed() -> None:
    element = ET.Element("{urn:x}a")
    element.text = "a < b && c > d ]]>"
    text = serialize(element)
    assert text == '<a xmlns="urn:x">a &lt; b &amp;&amp; c &gt; d ]]&gt;</a>'
    assert ET.fromstring(text).text == element.text


def test_carriage_returns_survive_parsing() -> None:
    element = ET.Element("{urn:x}a", {"v": "x\r\ny"})
    element.text = "line\r\nnext"
    parsed = ET.fromstring(serialize(element))
    assert parsed.text == "line\r\nnext"
    assert parsed.get("v") == "x\r\ny"


def test_deep_nesting_does_not_recurse() -> None:
    """Issue 11 (fuzz seed 1): a payload nested ~1,000 deep hit Python's recursion limit,
    so multicast answered internal-server-error and logged a traceback, and a deep
    pubsub publish failed the same way. The server had parsed it: we must carry it."""
    depth = 5000
    sample = (
        "<n xmlns='urn:deep'>"
        + "<n>t<m xmlns='urn:other' a='1'/>" * depth
        + "leaf"
        + "</n>tail" * depth
        + "</n>"
    )
    text = serialize(ET.fromstring(sample))
    assert canonicalize(text, rewrite_prefixes=True) == canonicalize(sample, rewrite_prefixes=True)
