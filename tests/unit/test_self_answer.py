"""Herald answers for itself (issue 11): the pure rules, and both services on the stream.

Every IQ get or set gets exactly one reply; a result or an error never gets one; disco
results nobody asked for are not kept anywhere.
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from component.config import MulticastSettings, PubsubSettings
from component.multicast.disco_edge import multicast_disco
from component.multicast.service import MulticastComponent
from component.pubsub.rules import Registry
from component.pubsub.service import PubsubComponent
from component.xmpp.answering import may_answer, payload_problem
from component.xmpp.disco import disco_reply
from tests.unit.stream import StreamTest

ERR = "urn:ietf:params:xml:ns:xmpp-stanzas"
INFO = "http://jabber.org/protocol/disco#info"
ITEMS = "http://jabber.org/protocol/disco#items"
ACCEPT = "jabber:component:accept"
UNKNOWN = "urn:example:unknown"


@pytest.mark.parametrize(
    ("kind", "itype", "sender", "answer"),
    [
        ("iq", "get", "alice@example.org/d", True),
        ("iq", "set", "example.org", True),  # a server's request is answered too
        ("iq", "result", "alice@example.org/d", False),
        ("iq", "error", "alice@example.org/d", False),
        ("iq", "", "alice@example.org/d", False),
        ("message", "", "alice@example.org/d", True),
        ("message", "chat", "alice@example.org/d", True),
        ("message", "error", "alice@example.org/d", False),
        ("message", "normal", "example.org", False),  # never bounce the server
        ("presence", "", "alice@example.org/d", False),
        ("presence", "error", "alice@example.org/d", False),
    ],
)
def test_who_may_get_an_error_back(kind: str, itype: str, sender: str, answer: bool) -> None:
    assert may_answer(kind, itype, sender) is answer


@pytest.mark.parametrize(
    ("xml", "problem"),
    [
        (f'<iq type="get"><x xmlns="{UNKNOWN}"/></iq>', None),
        ('<iq type="get"/>', "none"),
        ('<iq type="set"/>', "none"),
        (f'<iq type="set"><x xmlns="{UNKNOWN}"/><y xmlns="{UNKNOWN}"/></iq>', "has 2"),
        ('<iq type="result"/>', None),  # results may be empty, and are never answered
        (f'<iq type="error"><q xmlns="{INFO}"/><error/></iq>', None),
    ],
)
def test_an_iq_get_or_set_carries_exactly_one_payload(xml: str, problem: str | None) -> None:
    found = payload_problem(ET.fromstring(xml))
    assert (found is None) if problem is None else (found is not None and problem in found)


def _iq(itype: str, payload: str, to: str = "multicast.example.org") -> ET.Element:
    return ET.fromstring(
        f'<iq xmlns="{ACCEPT}" type="{itype}" id="i" from="alice@example.org/d" to="{to}">'
        f"{payload}</iq>"
    )


@pytest.mark.parametrize(
    ("itype", "payload", "to", "outcome"),
    [
        ("get", f'<query xmlns="{INFO}"/>', "multicast.example.org", "result"),
        ("get", f'<query xmlns="{INFO}"/>', "multicast.example.org/r", "result"),
        ("get", f'<query xmlns="{ITEMS}"/>', "multicast.example.org", "result"),
        ("get", f'<query xmlns="{INFO}" node="n"/>', "multicast.example.org", "item-not-found"),
        ("get", f'<query xmlns="{ITEMS}" node="n"/>', "multicast.example.org", "item-not-found"),
        ("get", f'<query xmlns="{INFO}"/>', "u@multicast.example.org", "service-unavailable"),
        ("set", f'<query xmlns="{INFO}"/>', "multicast.example.org", "bad-request"),
        ("set", f'<query xmlns="{ITEMS}"/>', "multicast.example.org", "bad-request"),
        ("result", f'<query xmlns="{INFO}"><feature var="x"/></query>', "multicast.example.org",
         None),
        ("error", f'<query xmlns="{INFO}"/><error/>', "multicast.example.org", None),
    ],
)  # fmt: skip
def test_own_disco_answers(itype: str, payload: str, to: str, outcome: str | None) -> None:
    reply = disco_reply(_iq(itype, payload, to), multicast_disco(3), "multicast.example.org")
    if outcome is None:
        assert reply is None
        return
    assert reply is not None
    assert (reply.get("from"), reply.get("to"), reply.get("id")) == (to, "alice@example.org/d", "i")
    if outcome == "result":
        assert reply.get("type") == "result"
    else:
        assert reply.get("type") == "error"
        assert reply.find(f"{{{ACCEPT}}}error/{{{ERR}}}{outcome}") is not None


DISCO_INFO = f"""<iq type="result" id="d1" from="multicast.example.org" to="alice@example.org/d">
  <query xmlns="{INFO}">
    <identity category="service" type="multicast" name="Herald multicast"/>
    <feature var="http://jabber.org/protocol/address"/>
    <feature var="{INFO}"/><feature var="{ITEMS}"/>
    <x xmlns="jabber:x:data" type="result">
      <field var="FORM_TYPE" type="hidden"><value>http://jabber.org/protocol/address</value></field>
      <field var="message"><value>3</value></field>
      <field var="presence"><value>3</value></field>
    </x></query></iq>"""


def error_iq(iq_id: str, frm: str, condition: str, etype: str, text: str) -> str:
    """The exact error reply expected, to alice."""
    return (
        f'<iq type="error" id="{iq_id}" from="{frm}" to="alice@example.org/d">'
        f'<error type="{etype}"><{condition} xmlns="{ERR}"/>'
        f'<text xmlns="{ERR}" xml:lang="en">{text}</text></error></iq>'
    )


class MulticastAnswersTest(StreamTest):
    def start(self) -> None:
        config = MulticastSettings(
            jid="multicast.example.org",
            secret="s",  # type: ignore[arg-type]
            local_domains=["example.org"],
            max_recipients=3,
            sender_mode="trusted",
        )
        self.boot(lambda sessions: MulticastComponent(config, "localhost", 5347, sessions))
        self.xmpp.privileges_settled.set()

    def test_disco_info_is_answered_by_herald(self) -> None:
        self.start()
        assert "xep_0030" not in self.xmpp.plugin
        self.deliver(
            f'<iq type="get" id="d1" from="alice@example.org/d" to="multicast.example.org">'
            f'<query xmlns="{INFO}"/></iq>'
        )
        self.expect(DISCO_INFO)
        self.expect(None)

    def test_unsolicited_results_are_neither_answered_nor_kept(self) -> None:
        self.start()
        for n in range(50):
            self.deliver(
                f'<iq type="result" id="u{n}" from="evil@example.net/x" '
                f'to="multicast.example.org"><query xmlns="{INFO}" node="n{n}">'
                f'<feature var="urn:x:{n}"/></query></iq>'
            )
        self.expect(None)
        # Nothing holds them: no disco plugin, and no handler that stores anything.
        assert "xep_0030" not in self.xmpp.plugin

    def test_two_payloads_get_one_bad_request(self) -> None:
        self.start()
        self.deliver(
            f'<iq type="get" id="t" from="alice@example.org/d" to="multicast.example.org">'
            f'<query xmlns="{INFO}"/><query xmlns="{ITEMS}"/></iq>'
        )
        self.expect(
            error_iq(
                "t",
                "multicast.example.org",
                "bad-request",
                "modify",
                "An IQ of type get or set carries exactly one payload element; this one has 2.",
            )
        )
        self.expect(None)

    def test_no_payload_gets_bad_request(self) -> None:
        self.start()
        self.deliver(
            '<iq type="set" id="t" from="alice@example.org/d" to="multicast.example.org"/>'
        )
        sent = self.expect(
            error_iq(
                "t",
                "multicast.example.org",
                "bad-request",
                "modify",
                "An IQ of type get or set must carry a payload element; this one has none.",
            )
        )
        assert sent is not None
        self.expect(None)

    def test_an_unknown_payload_gets_service_unavailable(self) -> None:
        self.start()
        self.deliver(
            '<iq type="get" id="t" from="alice@example.org/d" to="multicast.example.org">'
            '<ping xmlns="urn:xmpp:ping"/></iq>'
        )
        self.expect(
            error_iq(
                "t",
                "multicast.example.org",
                "service-unavailable",
                "cancel",
                "This service does not handle &lt;ping xmlns='urn:xmpp:ping'/&gt;.",
            )
        )
        self.expect(None)

    def test_a_failing_handler_never_answers_a_result(self) -> None:
        self.start()

        def explode(_stanza: object) -> None:
            raise RuntimeError("a bug")

        self.xmpp.register_handler(
            Callback("bug", MatchXPath(f"{{{ACCEPT}}}iq/{{{UNKNOWN}}}x"), explode)
        )
        for itype in ("result", "error"):
            self.deliver(
                f'<iq type="{itype}" id="r" from="alice@example.org/d" '
                f'to="multicast.example.org"><x xmlns="{UNKNOWN}"/></iq>'
            )
            self.expect(None)
        self.deliver(
            f'<iq type="get" id="g" from="alice@example.org/d" '
            f'to="multicast.example.org"><x xmlns="{UNKNOWN}"/></iq>'
        )
        self.expect(
            error_iq(
                "g",
                "multicast.example.org",
                "internal-server-error",
                "cancel",
                "Herald failed on this stanza; its log says why.",
            )
        )
        self.expect(None)


class PubsubAnswersTest(StreamTest):
    def start(self) -> None:
        settings = PubsubSettings(
            jid="pubsub.example.org",
            secret="s",  # type: ignore[arg-type]
            upstream="pubsub-origin.example.org",
        )
        self.boot(
            lambda sessions: PubsubComponent(
                settings,
                "localhost",
                5347,
                sessions,
                Registry.from_config(settings.rules),
                trusted_hosts=frozenset({"example.org"}),
            )
        )

    def test_pubsub_and_disco_in_one_iq_get_one_bad_request(self) -> None:
        self.start()
        assert "xep_0030" not in self.xmpp.plugin
        self.deliver(
            f'<iq type="get" id="t" from="alice@example.org/d" to="pubsub.example.org">'
            f'<query xmlns="{INFO}"/><pubsub xmlns="http://jabber.org/protocol/pubsub">'
            f'<items node="n"/></pubsub></iq>'
        )
        sent = self.expect(
            error_iq(
                "t",
                "pubsub.example.org",
                "bad-request",
                "modify",
                "An IQ of type get or set carries exactly one payload element; this one has 2.",
            )
        )
        assert sent is not None
        self.expect(None)

    def test_results_and_errors_are_never_answered(self) -> None:
        self.start()
        for itype, payload in (
            ("result", f'<query xmlns="{INFO}"><feature var="x"/></query>'),
            ("result", ""),
            ("error", '<error type="cancel"/>'),
            ("result", f'<x xmlns="{UNKNOWN}"/>'),
        ):
            self.deliver(
                f'<iq type="{itype}" id="r" from="alice@example.org/d" '
                f'to="pubsub.example.org">{payload}</iq>'
            )
        self.expect(None)
