"""Stanzas whose JIDs the server accepted but slixmpp's stricter stringprep rejects.

Prosody accepts a resource such as an emoji (unassigned in Unicode 3.2, which Python's
stringprep knows); slixmpp raises InvalidJID as soon as a handler reads it. Herald must
log one INFO line, never answer a result or an error (RFC 6120 §8.2.3), and answer a
get or set, or a message, with jid-malformed.
"""

from __future__ import annotations

import logging

from component.config import MulticastSettings
from component.multicast.service import MulticastComponent
from tests.unit.stream import StreamTest

ERR = "urn:ietf:params:xml:ns:xmpp-stanzas"
DISCO = "http://jabber.org/protocol/disco#info"
ODD = "\U0001f600"  # Prosody accepts it in a resource; slixmpp does not


class UnparsableJidTest(StreamTest):
    def start(self) -> None:
        config = MulticastSettings(
            jid="multicast.example.org",
            secret="s",  # type: ignore[arg-type]
            local_domains=["example.org"],
            sender_mode="trusted",
        )
        self.boot(lambda sessions: MulticastComponent(config, "localhost", 5347, sessions))
        self.xmpp.privileges_settled.set()

    def feed(self, stanza: str) -> list[logging.LogRecord]:
        with self.assertLogs(level="DEBUG") as logs:
            logging.getLogger("component").info("feeding")  # assertLogs needs one record
            self.deliver(stanza)
        records = [r for r in logs.records if r.levelno >= logging.INFO]
        assert not [r for r in records if r.levelno >= logging.WARNING], [
            r.getMessage() for r in records if r.levelno >= logging.WARNING
        ]
        return records

    def test_results_and_errors_are_never_answered(self) -> None:
        self.start()
        for itype in ("result", "error"):
            for to, frm in (
                (f"multicast.example.org/{ODD}", "alice@example.org/desk"),
                ("multicast.example.org", f"alice@example.org/{ODD}"),
            ):
                records = self.feed(
                    f'<iq type="{itype}" id="r" from="{frm}" to="{to}">'
                    f'<query xmlns="{DISCO}"/></iq>'
                )
                assert any("cannot parse" in r.getMessage() for r in records)
                self.expect(None)
        records = self.feed(
            f'<message type="error" id="e" from="alice@example.org/{ODD}" '
            f'to="multicast.example.org"><error type="cancel"/></message>'
        )
        self.expect(None)

    def test_a_get_or_set_gets_jid_malformed(self) -> None:
        self.start()
        for itype in ("get", "set"):
            self.feed(
                f'<iq type="{itype}" id="q" from="alice@example.org/desk" '
                f'to="multicast.example.org/{ODD}"><query xmlns="{DISCO}"/></iq>'
            )
            self.expect(
                f"""<iq type="error" id="q" from="multicast.example.org/{ODD}"
                     to="alice@example.org/desk"><error type="modify">
                  <jid-malformed xmlns="{ERR}"/><text xmlns="{ERR}" xml:lang="en">Herald
 cannot handle the address 'multicast.example.org/{ODD}': resource doesn't pass
 resourceprep validation.</text></error></iq>""".replace("\n ", " ")
            )
            self.expect(None)

    def test_a_message_from_such_a_resource_gets_jid_malformed(self) -> None:
        self.start()
        self.feed(
            f'<message id="m" from="alice@example.org/{ODD}" to="multicast.example.org">'
            "<body>hi</body></message>"
        )
        self.expect(
            f"""<message type="error" id="m" from="multicast.example.org"
                 to="alice@example.org/{ODD}"><error type="modify">
              <jid-malformed xmlns="{ERR}"/><text xmlns="{ERR}" xml:lang="en">Herald
 cannot handle the address 'alice@example.org/{ODD}': resource doesn't pass
 resourceprep validation.</text></error></message>""".replace("\n ", " ")
        )
        self.expect(None)
