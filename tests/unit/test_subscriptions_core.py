"""The decisions on subscriptions Herald holds itself (XEP-0060 §6.1-6.3), as tables."""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree import ElementTree as ET

import pytest

from component.pubsub import subscriptions as core
from component.pubsub.subscriptions import Delivery, Refusal, Subscribed
from component.storage.subscriptions_repo import LocalSubscription

T0 = datetime(2026, 12, 7, tzinfo=UTC)
ALICE = "alice@example.org"
FORM = "jabber:x:data"


def held(
    subid: str, jid: str = ALICE, address: str = "pubsub.example.org", **options: str
) -> LocalSubscription:
    return LocalSubscription(
        address, "origin.example.org", "blog", jid, jid.partition("/")[0], subid, options, T0
    )


ONE = [held("s1"), held("b1", "bob@example.org")]
TWO = [held("s1"), held("s2", **{"pubsub#deliver": "0"})]


@pytest.mark.parametrize(
    ("jid", "holds", "options", "expected"),
    [
        (ALICE, [], None, Subscribed("new", {}, new=True)),
        (f"{ALICE}/phone", [], None, Subscribed("new", {}, new=True)),
        (ALICE, ONE, None, Subscribed("s1", {}, new=False)),  # a repeat: the same one
        (ALICE, ONE, {"pubsub#deliver": "0"}, Subscribed("new", {"pubsub#deliver": "0"}, True)),
        (f"{ALICE}/phone", ONE, None, Subscribed("new", {}, new=True)),  # another JID
    ],
    ids=["first", "full-jid", "repeat", "other-options", "other-resource"],
)
def test_subscribe(
    jid: str, holds: list[LocalSubscription], options: core.Options | None, expected: Subscribed
) -> None:
    assert core.subscribe(ALICE, jid, holds, options, "new") == expected


@pytest.mark.parametrize(
    ("jid", "options", "condition", "pubsub"),
    [
        ("bob@example.org", None, "bad-request", "invalid-jid"),  # §6.1.3.1
        (None, None, "bad-request", "jid-required"),
        (ALICE, {"pubsub#digest": "1"}, "feature-not-implemented", "unsupported"),
        # Herald cannot know this JID's presence: show-values would silently not apply
        (ALICE, {"pubsub#show-values": ["chat"]}, "bad-request", "invalid-options"),
        (ALICE, {"pubsub#subscription_type": "nodes"}, "feature-not-implemented", "unsupported"),
    ],
    ids=["jids-differ", "no-jid", "digest", "presence-unknown", "nodes"],
)
def test_subscribe_refusals(
    jid: str | None, options: core.Options | None, condition: str, pubsub: str
) -> None:
    with pytest.raises(Refusal) as info:
        core.subscribe(ALICE, jid, [], options, "new")
    assert (info.value.condition, info.value.pubsub_condition) == (condition, pubsub)
    assert info.value.text


@pytest.mark.parametrize("act", [core.unsubscribe, core.options_of], ids=["unsub", "options"])
@pytest.mark.parametrize(
    ("jid", "subid", "holds", "found"),
    [
        (ALICE, None, ONE, "s1"),
        (ALICE, "s1", ONE, "s1"),
        (ALICE, "s2", TWO, "s2"),
    ],
)
def test_naming_a_subscription(act, jid, subid, holds, found) -> None:  # type: ignore[no-untyped-def]
    assert act(ALICE, jid, subid, holds).subid == found


@pytest.mark.parametrize("act", [core.unsubscribe, core.options_of], ids=["unsub", "options"])
@pytest.mark.parametrize(
    ("jid", "subid", "holds", "condition", "pubsub"),
    [
        (ALICE, None, TWO, "bad-request", "subid-required"),  # §6.2.3.1, §6.3.4.3
        (ALICE, None, [], "unexpected-request", "not-subscribed"),  # §6.2.3.2
        (f"{ALICE}/other", None, ONE, "unexpected-request", "not-subscribed"),
        ("bob@example.org", None, ONE, "forbidden", None),  # §6.2.3.3, §6.3.4.1
        (ALICE, "nope", TWO, "not-acceptable", "invalid-subid"),  # §6.2.3.5
        (None, None, ONE, "bad-request", "jid-required"),
    ],
    ids=["subid-required", "none", "other-resource", "not-theirs", "bad-subid", "no-jid"],
)
def test_naming_refusals(act, jid, subid, holds, condition, pubsub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Refusal) as info:
        act(ALICE, jid, subid, holds)
    assert (info.value.condition, info.value.pubsub_condition) == (condition, pubsub)
    print("refused:", condition, pubsub, "-", info.value.text)


def _form(*fields: tuple[str, list[str]], ftype: str = "submit") -> ET.Element:
    form = ET.Element(f"{{{FORM}}}x", {"type": ftype})
    for var, values in fields:
        field = ET.SubElement(form, f"{{{FORM}}}field", {"var": var})
        for value in values:
            ET.SubElement(field, f"{{{FORM}}}value").text = value
    return form


def test_read_options() -> None:
    assert core.read_options(None) is None
    form = _form(
        ("FORM_TYPE", [core.OPTIONS_FORM_TYPE]),
        ("pubsub#deliver", ["false"]),
        ("pubsub#include_body", ["true"]),
        ("pubsub#show-values", []),
    )
    assert core.read_options(form) == {
        "pubsub#deliver": "0",
        "pubsub#include_body": "1",
        "pubsub#show-values": [],
    }


@pytest.mark.parametrize(
    "form",
    [
        _form(("FORM_TYPE", ["urn:other"])),
        _form(("pubsub#colour", ["red"])),
        _form(("pubsub#deliver", ["maybe"])),
        _form(("pubsub#deliver", ["1", "0"])),
        _form(("pubsub#deliver", ["1"]), ftype="cancel"),
        ET.Element("{urn:other}x"),
    ],
    ids=["form-type", "unknown-field", "not-boolean", "two-values", "not-submit", "not-a-form"],
)
def test_invalid_options(form: ET.Element) -> None:
    with pytest.raises(Refusal) as info:
        core.read_options(form)
    assert (info.value.condition, info.value.pubsub_condition) == ("bad-request", "invalid-options")


def test_show_values_are_accepted_where_presence_is_known() -> None:
    shows = {"pubsub#show-values": ["chat", "online"]}
    assert core.subscribe(ALICE, ALICE, [], shows, "new", presence_known=True) == Subscribed(
        "new", shows, new=True
    )
    core.check_supported(shows, presence_known=True)
    core.check_supported({"pubsub#show-values": []})  # empty: no filter, always fine
    with pytest.raises(Refusal) as info:
        core.check_supported(shows)
    assert "presence" in info.value.text


def test_unknown_show_values_are_invalid_options() -> None:
    form = _form(("FORM_TYPE", [core.OPTIONS_FORM_TYPE]), ("pubsub#show-values", ["busy"]))
    with pytest.raises(Refusal) as info:
        core.read_options(form)
    assert (info.value.condition, info.value.pubsub_condition) == ("bad-request", "invalid-options")


def test_deliveries_skip_withheld_subscriptions() -> None:
    subs = [held("a1"), held("a2"), held("b1", "bob@example.org"), held("c1", "carol@example.org")]

    def withheld(sub: LocalSubscription) -> bool:
        return sub.subid in ("a2", "c1")

    assert core.deliveries(subs, withheld) == [
        Delivery("pubsub.example.org", ALICE, ("a1",)),  # still several: subids named
        Delivery("pubsub.example.org", "bob@example.org", ()),
    ]


def test_deliveries_group_by_address_and_jid_and_skip_deliver_off() -> None:
    subs = [
        held("a1"),
        held("a2"),  # alice twice at the bare address: one message, both subids
        held("e1", address="origin\\40x@pubsub.example.org"),
        held("p1", f"{ALICE}/phone", **{"pubsub#deliver": "0"}),
        held("b1", "bob@example.org", **{"pubsub#deliver": "0"}),
        held("b2", "bob@example.org"),
    ]
    assert core.deliveries(subs) == [
        Delivery("pubsub.example.org", ALICE, ("a1", "a2")),
        Delivery("origin\\40x@pubsub.example.org", ALICE, ()),
        Delivery("pubsub.example.org", "bob@example.org", ("b2",)),
    ]


def test_options_form_shows_current_values() -> None:
    form = core.options_form({"pubsub#deliver": "0"})
    values = {
        f.get("var"): [v.text for v in f.findall(f"{{{FORM}}}value")]
        for f in form.findall(f"{{{FORM}}}field")
    }
    assert values["FORM_TYPE"] == [core.OPTIONS_FORM_TYPE]
    assert values["pubsub#deliver"] == ["0"]
    assert values["pubsub#digest"] == ["0"]
    assert values["pubsub#show-values"] == []
    shows = core.options_form({"pubsub#show-values": ["away", "xa"]})
    (field,) = [
        f for f in shows.findall(f"{{{FORM}}}field") if f.get("var") == "pubsub#show-values"
    ]
    assert field.get("type") == "list-multi"
    assert [v.text for v in field.findall(f"{{{FORM}}}value")] == ["away", "xa"]
    offered = [o.findtext(f"{{{FORM}}}value") for o in field.findall(f"{{{FORM}}}option")]
    assert sorted(offered) == ["away", "chat", "dnd", "online", "xa"]


def test_notification_golden_xml() -> None:
    inner = '<items node="blog"><item id="1"><p xmlns="urn:x">a &amp; b</p></item></items>'
    one = core.notification_text(Delivery("pubsub.example.org", ALICE, ()), inner)
    assert one == (
        '<message from="pubsub.example.org" to="alice@example.org">'
        '<event xmlns="http://jabber.org/protocol/pubsub#event">'
        '<items node="blog"><item id="1"><p xmlns="urn:x">a &amp; b</p></item></items>'
        "</event></message>"
    )
    two = core.notification_text(Delivery("o\\40x@pubsub.example.org", ALICE, ("a<", "b")), inner)
    assert two.startswith('<message from="o\\40x@pubsub.example.org" to="alice@example.org">')
    assert two.endswith(
        '</event><headers xmlns="http://jabber.org/protocol/shim">'
        '<header name="SubID">a&lt;</header><header name="SubID">b</header></headers></message>'
    )
    ET.fromstring(two)  # well-formed


def test_ended_golden_xml() -> None:
    text = core.ended_text(held("s&1", f"{ALICE}/phone"))
    assert text == (
        '<message from="pubsub.example.org" to="alice@example.org/phone">'
        '<event xmlns="http://jabber.org/protocol/pubsub#event">'
        '<subscription node="blog" jid="alice@example.org/phone" subid="s&amp;1"'
        ' subscription="none"/></event></message>'
    )
