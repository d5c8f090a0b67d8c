"""The proxy's disco answers: listings lead back to the address asked, Herald's name."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from component.pubsub.discovery import IDENTITY_NAME, as_proxy

ITEMS = "http://jabber.org/protocol/disco#items"
INFO = "http://jabber.org/protocol/disco#info"


def test_listed_nodes_of_the_proxied_service_name_the_address_asked() -> None:
    query = ET.fromstring(
        f"<query xmlns='{ITEMS}'><item jid='Origin.example.org' node='a'/>"
        "<item jid='elsewhere.example.org' node='b'/><item jid='origin.example.org'/></query>"
    )
    (out,) = as_proxy([query], "origin.example.org", "origin.example.org@proxy.example.org")
    assert [(i.get("jid"), i.get("node")) for i in out] == [
        ("origin.example.org@proxy.example.org", "a"),
        ("elsewhere.example.org", "b"),  # another service is not ours to rename
        ("origin.example.org@proxy.example.org", None),
    ]


def test_info_carries_herald_name_and_added_features_once() -> None:
    query = ET.fromstring(
        f"<query xmlns='{INFO}'><identity category='pubsub' type='service' name='Prosody'/>"
        "<identity category='pubsub' type='pep'/>"
        "<feature var='urn:a'/></query>"
    )
    (out,) = as_proxy([query], "origin", "proxy", ["urn:a", "urn:b", "urn:b"])
    assert [(i.get("type"), i.get("name")) for i in out.iter(f"{{{INFO}}}identity")] == [
        ("service", IDENTITY_NAME),
        ("pep", None),
    ]
    assert [f.get("var") for f in out.iter(f"{{{INFO}}}feature")] == ["urn:a", "urn:b"]
