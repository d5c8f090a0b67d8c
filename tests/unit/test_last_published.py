"""The last published item sent to a new held subscriber (XEP-0060 §6.1.7): who gets
it, with which SubID, and what of the probe's messages is passed on."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest

from component.pubsub import last_published as core
from component.pubsub.subscriptions import Delivery, notification_text
from tests.unit.test_subscriptions_core import ALICE, held

EVENT = "http://jabber.org/protocol/pubsub#event"
PROXY = "pubsub.example.org"


@pytest.mark.parametrize(
    ("subs", "expected"),
    [
        ([held("s1")], ()),
        ([held("s1"), held("s2")], ("s1",)),  # several: the one that asked is named
        ([held("s1"), held("b1", "bob@example.org")], ()),  # another JID's do not count
        ([held("s1"), held("s2", f"{ALICE}/phone")], ()),  # nor another resource's
        ([held("s1"), held("e1", address=f"origin.example.org@{PROXY}")], ()),  # address
    ],
    ids=["alone", "two-of-hers", "bob", "other-resource", "other-address"],
)
def test_the_new_subscription_is_named_only_among_several(
    subs: list, expected: tuple[str, ...]
) -> None:
    assert core.delivery_for(subs[0], subs) == Delivery(PROXY, ALICE, expected)


def _message(body: str) -> ET.Element:
    return ET.fromstring(f"<message xmlns='jabber:component:accept'>{body}</message>")


def test_the_nodes_first_items_are_passed_on_with_their_stamp() -> None:
    items = f"<event xmlns='{EVENT}'><items node='blog'><item id='a'/></items></event>"
    other = f"<event xmlns='{EVENT}'><items node='news'><item id='n'/></items></event>"
    notice = f"<event xmlns='{EVENT}'><subscription node='blog' subscription='none'/></event>"
    stamp = "<delay xmlns='urn:xmpp:delay' stamp='2026-12-07T10:00:00Z'/>"
    got = core.passed_on(
        "blog", [_message(other), _message(notice), _message(items + stamp), _message(items)]
    )
    assert got is not None
    assert (got[0].get("node"), got[0][0].get("id"), got[1] is not None) == ("blog", "a", True)
    # the first only: a later one is a publication made meanwhile (fanned out anyway)
    later = core.passed_on("blog", [_message(items), _message(items + stamp)])
    assert later is not None
    assert later[1] is None
    assert core.passed_on("blog", [_message(other), _message(notice)]) is None
    assert core.passed_on("blog", []) is None  # never, or an empty node: nothing


def test_the_stamp_follows_the_headers() -> None:
    text = notification_text(Delivery(PROXY, ALICE, ("s2",)), "<items node='blog'/>", "<d/>")
    message = ET.fromstring(text.replace("<message ", "<message xmlns='jabber:client' ", 1))
    assert [c.tag.partition("}")[2] for c in message] == ["event", "headers", "d"]


def test_probe_resources() -> None:
    assert core.is_probe(f"{core.PROBE_PREFIX}0123abcd")
    assert not core.is_probe("")
    assert not core.is_probe("phone")


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        (
            f"<message xmlns='jabber:component:accept'><event xmlns='{EVENT}'>"
            "<items node='n1'><item id='a'/></items></event></message>",
            ("n1", None),
        ),
        (
            f"<message xmlns='jabber:component:accept'><event xmlns='{EVENT}'>"
            "<purge node='n2'/></event><headers xmlns='http://jabber.org/protocol/shim'>"
            "<header name='SubID'>s9</header></headers></message>",
            ("n2", "s9"),
        ),
        ("<message xmlns='jabber:component:accept'><body>hi</body></message>", None),
        (f"<message xmlns='jabber:component:accept'><event xmlns='{EVENT}'/></message>", None),
    ],
    ids=["items", "purge-with-subid", "no-event", "no-node"],
)
def test_a_stray_probe_is_named_by_the_notification_upstream_sends_it(
    xml: str, expected: tuple[str, str | None] | None
) -> None:
    """What the upkeep needs to end a probe an earlier process left subscribed."""
    assert core.stray_subscription(ET.fromstring(xml)) == expected
