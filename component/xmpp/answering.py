"""Which stanzas Herald answers, and with what, whatever handler (or none) takes them.

RFC 6120 §8.2.3: every IQ get or set gets exactly one reply, and a result or an error
never gets one. A message of type error is never answered either, nor is a stanza from
a server or service (no user part): Prosody closes the stream when a component bounces
what the server itself sent. slixmpp's stanza classes break both rules: an IQ nobody
handles gets feature-not-implemented (RFC 6120 §8.4 names service-unavailable), and a
handler that raises gets an error back even when the stanza was a result. The classes
here replace slixmpp's for every incoming stanza of a ServiceComponent.
"""

from __future__ import annotations

import logging
from typing import Any
from xml.etree import ElementTree as ET

from slixmpp.stanza import Iq, Message, Presence

from component.xmpp.errors import make_error
from component.xmpp.namespaces import COMPONENT_NS

log = logging.getLogger(__name__)

ERROR_TYPES = {
    "bad-request": "modify",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "forbidden": "auth",
    "item-not-found": "cancel",
    "service-unavailable": "cancel",
    "feature-not-implemented": "cancel",
    "internal-server-error": "cancel",
}


def may_answer(kind: str, itype: str, sender: str) -> bool:
    """Whether a stanza may get an error back (the only reply Herald sends unasked)."""
    if kind == "iq":
        return itype in ("get", "set")
    if kind == "message":
        return itype != "error" and "@" in sender
    return False  # presence: a refusal goes back only where the service says so


def payload_problem(xml: ET.Element) -> str | None:
    """Why an IQ get/set is malformed (RFC 6120 §8.2.3: exactly one child), or None."""
    if xml.get("type") not in ("get", "set"):
        return None
    count = len(xml)
    if count == 1:
        return None
    if count == 0:
        return "An IQ of type get or set must carry a payload element; this one has none."
    return f"An IQ of type get or set carries exactly one payload element; this one has {count}."


def error_reply(xml: ET.Element, condition: str, text: str) -> ET.Element:
    """The error reply to a stanza, from whom it was addressed to, with its id."""
    kind = xml.tag.rpartition("}")[2]
    attrs = {"type": "error", "from": xml.get("to", ""), "to": xml.get("from", "")}
    if xml.get("id") is not None:
        attrs["id"] = xml.get("id", "")
    reply = ET.Element(f"{{{COMPONENT_NS}}}{kind}", attrs)
    reply.append(make_error(condition, text, ERROR_TYPES.get(condition, "cancel")))
    return reply


def _payload_name(xml: ET.Element) -> str:
    child = next(iter(xml), None)
    if child is None:
        return "nothing"
    namespace, _, name = child.tag[1:].rpartition("}")
    # Both come from the sender: bounded, so a reply is never much larger than needed.
    return f"<{name[:100]} xmlns='{namespace[:200]}'/>"


class _Answering:
    """What the three stanza classes share: never an answer the rules above forbid."""

    xml: ET.Element
    stream: Any

    def _failed(self, exc: BaseException) -> None:
        xml = self.xml
        kind = xml.tag.rpartition("}")[2]
        # A handler raised: that is Herald's bug, so the traceback is logged, once.
        log.error(
            "failed on a %s %s from %r",
            xml.get("type", "normal"),
            kind,
            xml.get("from", ""),
            exc_info=exc,
        )
        if may_answer(kind, xml.get("type", ""), xml.get("from", "")):
            text = "Herald failed on this stanza; its log says why."
            self.stream.send_element(error_reply(xml, "internal-server-error", text))


class HeraldIq(_Answering, Iq):
    """An incoming IQ: service-unavailable when unhandled, no answer to a result."""

    def unhandled(self) -> None:
        if self.xml.get("type") in ("get", "set"):
            text = f"This service does not handle {_payload_name(self.xml)}."
            self.stream.send_element(error_reply(self.xml, "service-unavailable", text))

    def exception(self, e: Exception) -> None:
        self._failed(e)


class HeraldMessage(_Answering, Message):
    """An incoming message: an error back only to a user's message of another type."""

    def exception(self, e: Exception) -> None:
        self._failed(e)


class HeraldPresence(_Answering, Presence):
    """An incoming presence: never answered when a handler fails."""

    def exception(self, e: Exception) -> None:
        self._failed(e)


ROOT_STANZAS = ((Iq, HeraldIq), (Message, HeraldMessage), (Presence, HeraldPresence))
