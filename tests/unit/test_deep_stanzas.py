"""Stanzas nested deeper than slixmpp can copy (issue 11, found by the fuzzer).

slixmpp answers an IQ nobody handles through Iq.reply(), which deep-copies the whole
stanza recursively: a ping nested ~500 deep raised RecursionError inside the stream's
data_received, and the component stream dropped and reconnected (6 reconnects in a
3,000-stanza fuzz run). Herald now answers such a get or set not-acceptable before
slixmpp touches it. Other deep stanzas never go through Iq.reply(): a message is
still delivered, results, errors and presences still get no answer.
"""

from __future__ import annotations

import logging
from xml.etree import ElementTree as ET

from component.config import MulticastSettings
from component.multicast.service import MulticastComponent
from component.xmpp.connection import MAX_DEPTH
from tests.unit.stream import StreamTest

ERR = "urn:ietf:params:xml:ns:xmpp-stanzas"


def nested(depth: int) -> str:
    return "<n xmlns='urn:deep'>" * depth + "</n>" * depth


TEXT = f"The stanza is nested more than {MAX_DEPTH} elements deep; Herald does not handle it."


class DeepStanzaTest(StreamTest):
    def start(self) -> None:
        config = MulticastSettings(
            jid="multicast.example.org",
            secret="s",  # type: ignore[arg-type]
            local_domains=["example.org"],
            sender_mode="trusted",
        )
        self.boot(lambda sessions: MulticastComponent(config, "localhost", 5347, sessions))
        self.xmpp.privileges_settled.set()

    def next_sent(self) -> ET.Element:
        sent = self._next_stanza()
        assert sent is not None, "nothing was sent"
        return ET.fromstring(sent)

    def expect_result(self, iq_id: str) -> None:
        reply = self.next_sent()
        assert (reply.get("type"), reply.get("id")) == ("result", iq_id), ET.tostring(reply)

    def feed(self, stanza: str) -> None:
        with self.assertLogs(level="DEBUG") as logs:
            logging.getLogger("component").info("feeding")  # assertLogs needs one record
            self.deliver(stanza)
        loud = [r.getMessage() for r in logs.records if r.levelno >= logging.WARNING]
        assert not loud, loud

    def test_a_deep_unhandled_get_is_refused_and_the_stream_stays(self) -> None:
        self.start()
        for itype in ("get", "set"):
            self.feed(
                f'<iq type="{itype}" id="d" from="alice@example.org/desk" '
                f'to="multicast.example.org"><ping xmlns="urn:xmpp:ping">{nested(600)}</ping>'
                "</iq>"
            )
            self.expect(
                f"""<iq type="error" id="d" from="multicast.example.org"
                     to="alice@example.org/desk"><error type="modify">
                  <not-acceptable xmlns="{ERR}"/><text xmlns="{ERR}"
                  xml:lang="en">{TEXT}</text></error></iq>"""
            )
            self.expect(None)
        # still serving: an ordinary disco#info is answered
        self.feed(
            '<iq type="get" id="i" from="alice@example.org/desk" to="multicast.example.org">'
            '<query xmlns="http://jabber.org/protocol/disco#info"/></iq>'
        )
        self.expect_result("i")

    def test_results_errors_and_presences_get_no_answer(self) -> None:
        self.start()
        for stanza in (
            f'<iq type="result" id="r" from="alice@example.org/desk" '
            f'to="multicast.example.org">{nested(600)}</iq>',
            f'<iq type="error" id="r" from="alice@example.org/desk" '
            f'to="multicast.example.org">{nested(600)}</iq>',
            f'<presence from="alice@example.org/desk" to="multicast.example.org">'
            f"{nested(600)}</presence>",
            f'<message type="error" from="alice@example.org/desk" '
            f'to="multicast.example.org">{nested(600)}</message>',
        ):
            self.feed(stanza)
            self.expect(None)

    def test_a_deep_message_is_still_delivered(self) -> None:
        self.start()
        self.feed(
            '<message id="m" from="alice@example.org/desk" to="multicast.example.org">'
            '<addresses xmlns="http://jabber.org/protocol/address">'
            '<address type="to" jid="bob@example.org"/></addresses>'
            f"{nested(600)}</message>"
        )
        copy = self.next_sent()
        assert (copy.get("to"), copy.get("from")) == ("bob@example.org", "alice@example.org/desk")
        assert len(list(copy.iter())) > 600
        self.expect(None)

    def test_a_get_within_the_limit_is_served(self) -> None:
        self.start()
        self.feed(
            '<iq type="get" id="i" from="alice@example.org/desk" to="multicast.example.org">'
            '<query xmlns="http://jabber.org/protocol/disco#info">'
            f"{nested(MAX_DEPTH - 2)}</query></iq>"
        )
        self.expect_result("i")
