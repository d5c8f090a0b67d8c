"""The stanza size a service accepts (pure): measure cheaply, and the refusal to send.

A stanza is measured by the characters of its tag names, attribute names and values,
and text: a lower bound of its size on the wire, walked only until it passes the
limit, so a huge stanza costs no more than the limit to measure. The server's own
limits (Prosody accepts 256 KiB from clients, 512 KiB over s2s) sit above this one.
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

from component.xmpp.answering import error_reply, may_answer


def size_over(xml: ET.Element, limit: int) -> int | None:
    """None when the stanza fits in limit; else the size measured so far (> limit)."""
    size = 0
    for element in xml.iter():
        name = element.tag.rpartition("}")[2]  # a namespace is declared once, if at all
        size += 2 * len(name) + len(element.text or "") + len(element.tail or "")
        for name, value in element.attrib.items():
            size += len(name) + len(value) + 4
        if size > limit:
            return size
    return None


def answers(xml: ET.Element) -> bool:
    """Whether a stanza refused for its size gets an error back.

    Never a result or an error (RFC 6120 §8.2.3), and never a message or presence
    from a server or service (no user part): Prosody closes the stream if we bounce one.
    """
    kind, itype, sender = xml.tag.rpartition("}")[2], xml.get("type", ""), xml.get("from", "")
    # A presence is answered here as a message is: the refusal concerns its size.
    return may_answer("message" if kind == "presence" else kind, itype, sender)


def size_refusal(xml: ET.Element, own_jid: str, limit: int, key: str) -> ET.Element:
    """The error stanza answering xml: not-acceptable, "does not meet criteria defined
    by the recipient" (RFC 6120 §8.3.3.10), as XEP-0033 answers too many recipients.

    Not policy-violation, though RFC 6120 §13.12 names that stream error for oversized
    stanzas: that stanza condition is new in RFC 6120, and RFC 3920-era libraries
    cannot parse it (a slixmpp 1.8 client's IQ raises ValueError and never completes).
    """
    text = f"The stanza is too large: this service accepts at most {limit} bytes ({key})."
    reply = error_reply(xml, "not-acceptable", text)
    if not reply.get("from"):
        reply.set("from", own_jid)
    return reply
