"""What the multicast service refuses to carry (issue 11: defence in depth on sending as users).

Recipients without a user part (servers, components) are refused with forbidden before
any discovery; a stanza carrying a XEP-0356 envelope or a top-level <forwarded/> is
refused with not-acceptable, whoever it is addressed to.
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest

from component.config import MulticastSettings
from component.multicast.addresses import Address, AddressList
from component.multicast.carriage import (
    domain_recipient_refusal,
    envelope_refusal,
    is_user_or_room,
)
from component.multicast.planner import PlanRequest, plan, remote_domains
from component.multicast.service import MulticastComponent
from tests.unit.stream import StreamTest

ADDR = "http://jabber.org/protocol/address"
ERR = "urn:ietf:params:xml:ns:xmpp-stanzas"


@pytest.mark.parametrize(
    ("jid", "person"),
    [
        ("bob@example.org", True),
        ("bob@example.org/phone", True),
        ("room@conference.example.org", True),
        ("dave@remote.example", True),
        ("example.org", False),  # the local server
        ("remote.example", False),  # a remote server
        ("pubsub.example.org", False),  # a component
        ("multicast.remote.example", False),  # a remote service
        ("example.org/resource", False),
        ("example.org/with@sign", False),  # the @ is in the resource
    ],
)
def test_only_users_and_rooms_are_recipients(jid: str, person: bool) -> None:
    assert is_user_or_room(jid) is person
    refusal = domain_recipient_refusal([Address(type="to", jid=jid)])  # type: ignore[arg-type]
    assert (refusal is None) is person
    if refusal is not None:
        assert jid in refusal


def _request(*jids: str) -> PlanRequest:
    return PlanRequest(
        sender="alice@example.org/desk",
        kind="message",
        addresses=AddressList(
            addresses=tuple(Address(type="cc", jid=j) for j in jids)  # type: ignore[arg-type]
        ),
        local_domains=frozenset({"example.org"}),
        max_recipients=10,
    )


@pytest.mark.parametrize("target", ["example.org", "remote.example", "pubsub.example.org"])
def test_a_domain_among_recipients_refuses_the_whole_stanza_undiscovered(target: str) -> None:
    request = _request("bob@example.org", "dave@remote.example", target)
    assert remote_domains(request) == frozenset()  # nothing is probed for it
    delivery = plan(request)
    assert delivery.copies == ()
    assert delivery.error is not None
    assert delivery.error.condition == "forbidden"
    assert target in delivery.error.text


def test_a_delivered_domain_address_is_not_a_recipient_any_more() -> None:
    header = AddressList(
        addresses=(
            Address(type="to", jid="bob@example.org"),  # type: ignore[arg-type]
            Address(type="to", jid="remote.example", delivered=True),  # type: ignore[arg-type]
        )
    )
    request = _request("bob@example.org").model_copy(update={"addresses": header})
    assert plan(request).error is None


PRIV2, PRIV1, FWD = "urn:xmpp:privilege:2", "urn:xmpp:privilege:1", "urn:xmpp:forward:0"


@pytest.mark.parametrize(
    ("payload", "refused"),
    [
        ("<body>hi</body>", None),
        (f"<privilege xmlns='{PRIV2}'><forwarded xmlns='{FWD}'/></privilege>", PRIV2),
        (f"<privilege xmlns='{PRIV1}'/>", PRIV1),
        (f"<x xmlns='urn:example'><perm xmlns='{PRIV2}'/></x>", PRIV2),  # nested anywhere
        (f"<forwarded xmlns='{FWD}'><message xmlns='jabber:client'/></forwarded>", "forwarded"),
        # carbons and the like nest <forwarded/>: a server does not unwrap those
        (f"<sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='{FWD}'/></sent>", None),
        ("<privilege xmlns='urn:example:privilege'/>", None),
    ],
)
def test_envelopes_are_not_carried(payload: str, refused: str | None) -> None:
    stanza = ET.fromstring(
        f"<message xmlns='jabber:component:accept'><addresses xmlns='{ADDR}'/>{payload}</message>"
    )
    found = envelope_refusal(stanza)
    assert (found is None) if refused is None else (found is not None and refused in found)


class CarriageStanzaTest(StreamTest):
    def start(self) -> None:
        config = MulticastSettings(
            jid="multicast.example.org",
            secret="s",  # type: ignore[arg-type]
            local_domains=["example.org"],
            sender_mode="trusted",
        )
        self.boot(lambda sessions: MulticastComponent(config, "localhost", 5347, sessions))
        self.xmpp.privileges_settled.set()

    def test_a_privilege_envelope_to_the_server_is_refused_and_sent_nowhere(self) -> None:
        self.start()
        self.deliver(
            f"""<message from="alice@example.org/desk" to="multicast.example.org" id="m1">
              <addresses xmlns="{ADDR}"><address type="to" jid="bob@example.org"/></addresses>
              <privilege xmlns="{PRIV2}"><forwarded xmlns="{FWD}">
                <message xmlns="jabber:client" from="bob@example.org" to="carol@example.org">
                  <body>spoofed</body></message></forwarded></privilege></message>"""
        )
        sent = self.expect(
            '<message from="multicast.example.org" to="alice@example.org/desk" type="error" '
            f'id="m1"><error type="modify"><not-acceptable xmlns="{ERR}"/>'
            f'<text xmlns="{ERR}" xml:lang="en">This multicast service does not carry a stanza '
            f"with a {PRIV2} element: XEP-0356 envelopes are for the server's privileged "
            "entities.</text></error></message>"
        )
        assert sent is not None
        self.expect(None)

    def test_the_server_as_a_recipient_is_refused(self) -> None:
        self.start()
        self.deliver(
            f"""<message from="alice@example.org/desk" to="multicast.example.org" id="m2">
              <addresses xmlns="{ADDR}"><address type="to" jid="bob@example.org"/>
              <address type="bcc" jid="example.org"/></addresses><body>hi</body></message>"""
        )
        sent = self.expect(
            '<message from="multicast.example.org" to="alice@example.org/desk" type="error" '
            f'id="m2"><error type="auth"><forbidden xmlns="{ERR}"/>'
            f'<text xmlns="{ERR}" xml:lang="en">Cannot deliver to example.org: it is a server '
            "or a service, not a user or a room; this multicast service delivers only to "
            "addresses with a user part.</text></error></message>"
        )
        assert sent is not None
        self.expect(None)
