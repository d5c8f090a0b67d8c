"""Golden-XML stream tests of the multicast handlers, in the style of slixmpp's SlixTest
(tests/unit/stream.py runs the component on slixmpp's test transport)."""

from __future__ import annotations

from component.config import MulticastSettings
from component.multicast.service import MulticastComponent
from tests.unit.stream import StreamTest

ADDR = "http://jabber.org/protocol/address"
ERR = "urn:ietf:params:xml:ns:xmpp-stanzas"


def message_permission_from(host: str) -> str:
    """A XEP-0356 advertisement granting outgoing messages, sent by host."""
    return f"""<message from="{host}" to="multicast.example.org">
                 <privilege xmlns="urn:xmpp:privilege:2">
                   <perm access="message" type="outgoing"/>
                 </privilege>
               </message>"""


class MulticastStanzaTest(StreamTest):
    """Feeds stanzas to a MulticastComponent and checks the XML it sends."""

    def start(self, **settings: object) -> None:
        config = MulticastSettings(
            jid="multicast.example.org",
            secret="s",
            local_domains=["example.org"],
            max_recipients=3,
            **settings,  # type: ignore[arg-type]
        )
        self.boot(lambda sessions: MulticastComponent(config, "localhost", 5347, sessions))
        self.xmpp.privileges_settled.set()

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
        self.deliver(message_permission_from("example.org"))
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
        self.deliver(message_permission_from("evil.example"))
        self.expect(None)
        assert self.xmpp.privileges == {}

    def test_an_address_at_our_own_domain_is_refused_not_discovered(self) -> None:
        # Before issue 11 Herald sent itself a disco#info here, found a multicast
        # service (itself) and handed the stanza back to itself, in a loop.
        self.start(sender_mode="trusted")
        self.deliver(
            f"""<message from="alice@example.org/desk" to="multicast.example.org" id="l1">
                  <addresses xmlns="{ADDR}">
                    <address type="to" jid="bob@example.org"/>
                    <address type="cc" jid="x@multicast.example.org"/>
                  </addresses>
                </message>"""
        )
        self.expect(
            f"""<message from="multicast.example.org" to="alice@example.org/desk" id="l1"
                         type="error">
                  <error type="auth">
                    <forbidden xmlns="{ERR}"/>
                    <text xmlns="{ERR}" xml:lang="en">Cannot deliver to
 x@multicast.example.org: multicast.example.org is this server's own service, not a
 recipient.</text>
                  </error>
                </message>""".replace("\n ", " ")
        )
        self.expect(None)

    def test_a_disco_set_is_refused_not_left_unanswered(self) -> None:
        # Issue 11: RFC 6120 §8.2.3, every get/set gets one answer; disco has no set.
        self.start(sender_mode="trusted")
        for iq_id, namespace in (("s1", "info"), ("s2", "items")):
            self.deliver(
                f"""<iq type="set" id="{iq_id}" from="alice@example.org/desk"
                        to="multicast.example.org">
                      <query xmlns="http://jabber.org/protocol/disco#{namespace}"/></iq>"""
            )
            self.expect(
                f"""<iq type="error" id="{iq_id}" from="multicast.example.org"
                     to="alice@example.org/desk"><error type="modify">
                  <bad-request xmlns="{ERR}"/><text xmlns="{ERR}" xml:lang="en">Service
 discovery is queried with type='get'; it has no 'set'.</text></error></iq>""".replace("\n ", " ")
            )
        self.expect(None)

    def test_a_presence_with_show_is_tracked_for_unavailable(self) -> None:
        # Issue 11: slixmpp reports <show>away</show> as type 'away', so such a
        # presence was never recorded and no unavailable followed it (XEP-0033 §5).
        self.start(sender_mode="trusted")
        self.deliver(
            f"""<presence from="alice@example.org/desk" to="multicast.example.org">
                  <show>away</show>
                  <addresses xmlns="{ADDR}"><address type="to" jid="bob@example.org"/></addresses>
                </presence>"""
        )
        self.expect(
            f"""<presence from="alice@example.org/desk" to="bob@example.org">
                  <show>away</show>
                  <addresses xmlns="{ADDR}">
                    <address type="to" jid="bob@example.org" delivered="true"/>
                  </addresses>
                </presence>"""
        )
        self.expect(None)
        self.deliver(
            """<presence from="alice@example.org/desk" to="multicast.example.org"
                         type="unavailable"/>"""
        )
        self.expect(
            """<presence from="alice@example.org/desk" to="bob@example.org"
                         type="unavailable"/>"""
        )
        self.expect(None)

    def test_a_header_of_delivered_entries_is_refused_and_delivered_to_nobody(self) -> None:
        # Issue 11: only undelivered to/cc/bcc counted against a limit.
        self.start(sender_mode="trusted", max_addresses=4)
        done = "".join(
            f'<address type="cc" jid="u{n}@example.org" delivered="true"/>' for n in range(4)
        )
        self.deliver(
            f"""<message from="alice@example.org/desk" to="multicast.example.org" id="m9">
                  <addresses xmlns="{ADDR}">
                    <address type="to" jid="bob@example.org"/>{done}
                  </addresses>
                </message>"""
        )
        self.expect(
            f"""<message from="multicast.example.org" to="alice@example.org/desk" id="m9"
                 type="error"><error type="modify"><not-acceptable xmlns="{ERR}"/>
                 <text xmlns="{ERR}" xml:lang="en">Too many addresses: 5 &lt;address/&gt;
 elements of any type; the limit is 4.</text></error></message>""".replace("\n ", " ")
        )
        self.expect(None)

    def test_a_stanza_over_max_stanza_bytes_is_refused_unread(self) -> None:
        self.start(sender_mode="trusted", max_stanza_bytes=1024)
        big = "x" * 2000
        self.deliver(
            f"""<message from="alice@example.org/desk" to="multicast.example.org" id="m8">
                  <body>{big}</body>
                  <addresses xmlns="{ADDR}"><address type="to" jid="bob@example.org"/></addresses>
                </message>"""
        )
        self.expect(
            f"""<message from="multicast.example.org" to="alice@example.org/desk" id="m8"
                 type="error"><error type="modify"><not-acceptable xmlns="{ERR}"/>
                 <text xmlns="{ERR}" xml:lang="en">The stanza is too large: this service
 accepts at most 1024 bytes (multicast.max_stanza_bytes).</text></error></message>""".replace(
                "\n ", " "
            )
        )
        self.expect(None)
        # results, errors, and a server's messages are dropped, never answered
        self.deliver(
            f'<iq type="result" from="example.org" to="multicast.example.org" id="r1">'
            f'<query xmlns="http://jabber.org/protocol/disco#info"><x>{big}</x></query></iq>'
        )
        self.deliver(
            f'<message type="error" from="bob@example.org" to="multicast.example.org">'
            f"<body>{big}</body></message>"
        )
        self.deliver(
            f'<message from="example.org" to="multicast.example.org"><body>{big}</body></message>'
        )
        self.expect(None)
