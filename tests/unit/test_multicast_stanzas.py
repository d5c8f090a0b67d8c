"""Golden-XML stream tests of the multicast handlers, in the style of slixmpp's SlixTest.

The component runs on slixmpp's test transport: stanzas are fed in as XML text and
what it sends is compared, after C14N canonicalisation, with the exact XML expected.
(SlixTest's own `send()` compares through stanza objects, which silently drops
elements no registered plugin knows, such as <addresses/> and <privilege/>.)
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from xml.etree import ElementTree as ET
from xml.etree.ElementTree import canonicalize

from slixmpp.test import SlixTest
from slixmpp.test import TestTransport as _Transport
from slixmpp.test.mocksocket import TestSocket as _Socket

from component.config import MulticastSettings
from component.multicast.service import MulticastComponent
from component.storage import migrate
from component.storage.engine import create_engine, session_factory

ADDR = "http://jabber.org/protocol/address"
ERR = "urn:ietf:params:xml:ns:xmpp-stanzas"


class MulticastStanzaTest(SlixTest):
    """Feeds stanzas to a MulticastComponent and checks the XML it sends."""

    def start(self, **settings: object) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        # SlixTest drives asyncio.get_event_loop(); pytest-asyncio may have left none set.
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.engine = create_engine(f"sqlite+aiosqlite:///{Path(self.tmp.name) / 'h.db'}")
        loop.run_until_complete(migrate.upgrade(self.engine))
        config = MulticastSettings(
            jid="multicast.example.org",
            secret="s",
            local_domains=["example.org"],
            max_recipients=3,
            **settings,  # type: ignore[arg-type]
        )
        self.mode = "component"
        self.xmpp = MulticastComponent(config, "localhost", 5347, session_factory(self.engine))
        self.xmpp._always_send_everything = True
        self.xmpp.connection_made(_Transport(self.xmpp))
        self.xmpp.session_bind_event.set()
        self.xmpp.default_lang = None
        self.xmpp.peer_default_lang = None
        self.xmpp.data_received(self.xmpp.stream_header)
        self.wait_for_send_queue()
        assert isinstance(self.xmpp.socket, _Socket)
        self.xmpp.socket.next_sent()  # stream header
        self.xmpp.socket.next_sent()  # handshake
        self.xmpp.use_message_ids = False
        self.xmpp.privileges_settled.set()

    def tearDown(self) -> None:
        super().tearDown()
        loop = asyncio.get_event_loop()
        loop.run_until_complete(self.engine.dispose())
        loop.close()
        asyncio.set_event_loop(None)
        self.tmp.cleanup()

    def deliver(self, stanza: str) -> None:
        self.recv(stanza)
        self.wait_(0.05)

    def _next_stanza(self) -> str | None:
        # One write may carry several stanzas (a fan-out is sent in one batch).
        pending: list[str] = self.__dict__.setdefault("pending", [])
        if not pending:
            self.wait_for_send_queue()
            assert isinstance(self.xmpp.socket, _Socket)
            sent = self.xmpp.socket.next_sent(0.2)
            if sent is None:
                return None
            text = sent.decode() if isinstance(sent, bytes) else sent
            wrapper = ET.fromstring(f'<w xmlns="jabber:component:accept">{text}</w>')
            pending.extend(ET.tostring(child, encoding="unicode") for child in wrapper)
        return pending.pop(0)

    def expect(self, xml: str | None) -> None:
        """The next stanza sent is exactly xml (None: nothing more was sent)."""
        sent = self._next_stanza()
        if xml is None:
            assert sent is None, f"unexpected stanza sent: {sent!r}"
            return
        assert sent is not None, "nothing was sent"
        got = canonicalize(sent, strip_text=True, rewrite_prefixes=True)
        # Expected stanzas are written without the stream's default namespace.
        root = xml.replace("\n", "").lstrip()
        tag = root[1 : root.index(" ")]
        root = root.replace(f"<{tag} ", f'<{tag} xmlns="jabber:component:accept" ', 1)
        assert got == canonicalize(root, strip_text=True, rewrite_prefixes=True)

    def test_local_fan_out_marks_delivered_and_strips_bcc(self) -> None:
        self.start(sender_mode="trusted")
        self.deliver(
            f"""<message from="alice@example.org/desk" to="multicast.example.org" id="m1"
                         xml:lang="en">
                  <body>hello</body>
                  <addresses xmlns="{ADDR}">
                    <address type="to" jid="bob@example.org"/>
                    <address type="bcc" jid="carol@example.org"/>
                    <address type="replyto" jid="alice@example.org"/>
                  </addresses>
                </message>"""
        )
        self.expect(
            f"""<message from="alice@example.org/desk" to="bob@example.org" id="m1"
                         xml:lang="en">
                  <body>hello</body>
                  <addresses xmlns="{ADDR}">
                    <address type="to" jid="bob@example.org" delivered="true"/>
                    <address type="replyto" jid="alice@example.org"/>
                  </addresses>
                </message>"""
        )
        self.expect(
            f"""<message from="alice@example.org/desk" to="carol@example.org" id="m1"
                         xml:lang="en">
                  <body>hello</body>
                  <addresses xmlns="{ADDR}">
                    <address type="to" jid="bob@example.org" delivered="true"/>
                    <address type="bcc" jid="carol@example.org"/>
                    <address type="replyto" jid="alice@example.org"/>
                  </addresses>
                </message>"""
        )
        self.expect(None)

    def test_privileged_copy_is_wrapped_in_client_namespace(self) -> None:
        self.start(sender_mode="privileged")
        self.deliver(
            """<message from="example.org" to="multicast.example.org">
                 <privilege xmlns="urn:xmpp:privilege:2">
                   <perm access="message" type="outgoing"/>
                 </privilege>
               </message>"""
        )
        self.expect(None)  # the advertisement is never answered
        self.deliver(
            f"""<message from="alice@example.org/desk" to="multicast.example.org">
                  <body>hi</body>
                  <addresses xmlns="{ADDR}"><address type="to" jid="bob@example.org"/></addresses>
                </message>"""
        )
        self.expect(
            f"""<message from="multicast.example.org" to="example.org">
                  <privilege xmlns="urn:xmpp:privilege:2">
                    <forwarded xmlns="urn:xmpp:forward:0">
                      <message xmlns="jabber:client" from="alice@example.org"
                               to="bob@example.org">
                        <body>hi</body>
                        <addresses xmlns="{ADDR}">
                          <address type="to" jid="bob@example.org" delivered="true"/>
                        </addresses>
                      </message>
                    </forwarded>
                  </privilege>
                </message>"""
        )

    def test_too_many_recipients(self) -> None:
        self.start(sender_mode="trusted")
        many = "".join(f'<address type="to" jid="u{i}@example.org"/>' for i in range(4))
        self.deliver(
            f"""<message from="alice@example.org/desk" to="multicast.example.org" id="x">
                  <addresses xmlns="{ADDR}">{many}</addresses>
                </message>"""
        )
        self.expect(
            f"""<message from="multicast.example.org" to="alice@example.org/desk" id="x"
                         type="error">
                  <error type="modify">
                    <not-acceptable xmlns="{ERR}"/>
                    <text xmlns="{ERR}" xml:lang="en">Too many recipients: 4 to, cc and bcc
 addresses; the limit is 3.</text>
                  </error>
                </message>""".replace("\n addresses", " addresses")
        )
        self.expect(None)

    def test_privileged_presence_is_refused(self) -> None:
        self.start(sender_mode="privileged")
        self.deliver(
            f"""<presence from="alice@example.org/desk" to="multicast.example.org">
                  <addresses xmlns="{ADDR}"><address type="to" jid="bob@example.org"/></addresses>
                </presence>"""
        )
        self.expect(
            f"""<presence from="multicast.example.org" to="alice@example.org/desk" type="error">
                  <error type="cancel">
                    <feature-not-implemented xmlns="{ERR}"/>
                    <text xmlns="{ERR}" xml:lang="en">This multicast service sends through
 XEP-0356 privileged messages, which cannot carry presence; presence multicast is not
 available here.</text>
                  </error>
                </presence>""".replace("\n ", " ")
        )

    def test_error_messages_are_never_answered(self) -> None:
        self.start(sender_mode="trusted")
        self.deliver(
            """<message from="bob@example.org" to="multicast.example.org" type="error">
                 <error type="cancel"><item-not-found
                   xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error>
               </message>"""
        )
        self.expect(None)

    def test_privileges_from_a_foreign_host_are_ignored(self) -> None:
        self.start(sender_mode="privileged")
        self.deliver(
            """<message from="evil.example" to="multicast.example.org">
                 <privilege xmlns="urn:xmpp:privilege:2">
                   <perm access="message" type="outgoing"/>
                 </privilege>
               </message>"""
        )
        self.expect(None)
        assert self.xmpp.privileges == {}
