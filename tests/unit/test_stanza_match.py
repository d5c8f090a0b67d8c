"""StanzaMatch answers what the MatchXPath it replaced answers, on every handler's
criteria and a table of stanzas."""

from __future__ import annotations

import pytest
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.matcher import MatchXPath
from slixmpp.xmlstream.stanzabase import StanzaBase

from component.xmpp.matching import StanzaMatch
from component.xmpp.namespaces import COMPONENT_NS

PUBSUB = "http://jabber.org/protocol/pubsub"
DISCO = "http://jabber.org/protocol/disco#info"
C = COMPONENT_NS

STANZAS = [
    f"<iq xmlns='{C}' type='get'><pubsub xmlns='{PUBSUB}'><items node='n'/></pubsub></iq>",
    f"<iq xmlns='{C}' type='get'><query xmlns='{DISCO}'/></iq>",
    f"<iq xmlns='{C}' type='set'><x xmlns='urn:x'><pubsub xmlns='{PUBSUB}'/></x></iq>",
    f"<iq xmlns='{C}' type='result'/>",
    f"<iq xmlns='jabber:client' type='get'><pubsub xmlns='{PUBSUB}'/></iq>",
    f"<message xmlns='{C}'><event xmlns='{PUBSUB}#event'/></message>",
    f"<message xmlns='{C}'><pubsub xmlns='{PUBSUB}'/></message>",
    f"<presence xmlns='{C}'/>",
    "<presence xmlns='jabber:client'/>",
    f"<handshake xmlns='{C}'/>",
]
CRITERIA = [
    ("iq", f"{{{PUBSUB}}}pubsub"),
    ("iq", f"{{{DISCO}}}query"),
    ("message", None),
    ("presence", None),
]


@pytest.mark.parametrize("criteria", CRITERIA)
def test_stanza_match_agrees_with_match_xpath(criteria: tuple[str, str | None]) -> None:
    kind, child = criteria
    path = f"{{{C}}}{kind}" + (f"/{child}" if child else "")
    cheap, xpath = StanzaMatch(kind, child), MatchXPath(path)
    answers = []
    for text in STANZAS:
        stanza = StanzaBase(xml=ET.fromstring(text))
        answers.append(cheap.match(stanza))
        assert answers[-1] == xpath.match(stanza), text
    assert any(answers)
    assert not all(answers)
