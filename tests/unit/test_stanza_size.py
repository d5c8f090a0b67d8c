"""The stanza size limit's pure pieces (component/xmpp/stanzasize.py)."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from component.xmpp.stanzasize import answers, size_over, size_refusal

C = "jabber:component:accept"


def stanza(xml: str) -> ET.Element:
    return ET.fromstring(
        xml.replace("<iq ", f"<iq xmlns='{C}' ", 1)
        .replace("<message ", f"<message xmlns='{C}' ", 1)
        .replace("<presence ", f"<presence xmlns='{C}' ", 1)
    )


def test_size_is_a_lower_bound_of_the_serialized_size() -> None:
    xml = stanza(f"<message from='a@x' to='m.x' id='1'><body>{'é' * 300}</body></message>")
    wire = len(ET.tostring(xml, encoding="unicode"))
    assert size_over(xml, wire) is None  # never over what it takes on the wire
    measured = size_over(xml, 100)
    assert measured is not None
    assert 100 < measured <= wire


def test_measuring_stops_at_the_limit() -> None:
    body = "".join(f"<a n='{n}'>{'x' * 100}</a>" for n in range(10_000))
    xml = stanza(f"<message from='a@x' to='m.x'><body>{body}</body></message>")
    measured = size_over(xml, 1000)
    print("measured before stopping:", measured)
    assert measured is not None
    assert measured < 1300  # one child past the limit, not the whole megabyte


def test_who_gets_an_answer() -> None:
    assert answers(stanza("<iq type='get' from='a@x/r' to='p.x' id='1'/>"))
    assert answers(stanza("<iq type='set' from='x' to='p.x' id='1'/>"))  # an iq always
    assert not answers(stanza("<iq type='result' from='a@x/r' to='p.x' id='1'/>"))
    assert not answers(stanza("<iq type='error' from='a@x/r' to='p.x' id='1'/>"))
    assert answers(stanza("<message from='a@x/r' to='m.x'/>"))
    assert answers(stanza("<presence from='a@x/r' to='m.x'/>"))
    assert not answers(stanza("<message type='error' from='a@x/r' to='m.x'/>"))
    assert not answers(stanza("<message from='x' to='m.x'/>"))  # a server: never bounced


def test_the_refusal_is_not_acceptable_with_a_text() -> None:
    reply = size_refusal(
        stanza("<iq type='set' from='a@x/r' to='e@p.x' id='7'/>"),
        "p.x",
        4096,
        "pubsub.max_stanza_bytes",
    )
    assert reply.attrib == {"type": "error", "from": "e@p.x", "to": "a@x/r", "id": "7"}
    error = reply.find(f"{{{C}}}error")
    assert error is not None
    assert error.get("type") == "modify"
    conditions = [child.tag.rpartition("}")[2] for child in error]
    assert conditions == ["not-acceptable", "text"]
    assert "at most 4096 bytes (pubsub.max_stanza_bytes)" in (error[1].text or "")
