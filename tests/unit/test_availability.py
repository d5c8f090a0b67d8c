"""Presence-based delivery decisions (component/pubsub/availability.py), golden cases."""

from __future__ import annotations

from typing import Any

import pytest

from component.pubsub import availability as av
from component.pubsub.availability import UNKNOWN, Resource, Status

ALICE = "alice@example.org"


def test_presences_update_the_resources() -> None:
    seen = av.observed({}, "phone", None, "away", "5")
    assert seen == {"phone": Resource("away", 5)}
    seen = av.observed(seen, "desk", None, None, None)
    assert seen == {"phone": Resource("away", 5), "desk": Resource("online", 0)}
    seen2 = av.observed(seen, "phone", None, "dnd", "-1")
    assert seen2["phone"] == Resource("dnd", -1)
    assert seen["phone"] == Resource("away", 5)  # values in, values out
    assert av.observed(seen2, "phone", "unavailable", None, None) == {"desk": Resource()}
    assert av.observed(seen2, "phone", "error", None, None) == {"desk": Resource()}
    for other in ("subscribe", "probe", "unsubscribed"):
        assert av.observed(seen2, "phone", other, None, None) == seen2
    assert av.observed({}, "gone", "unavailable", None, None) == {}


@pytest.mark.parametrize(
    ("text", "show"),
    [(None, "online"), ("", "online"), ("xa", "xa"), (" chat ", "chat"), ("busy", "online")],
)
def test_show_values(text: str | None, show: str) -> None:
    assert av.show_of(text) == show


@pytest.mark.parametrize(
    ("text", "priority"), [(None, 0), ("7", 7), ("-3", -3), ("x", 0), ("900", 127), ("-900", -128)]
)
def test_priorities(text: str | None, priority: int) -> None:
    assert av.priority_of(text) == priority


@pytest.mark.parametrize(
    ("jid", "resources", "status"),
    [
        (ALICE, None, UNKNOWN),
        (f"{ALICE}/phone", None, UNKNOWN),
        (ALICE, {}, Status(True)),
        (
            ALICE,
            {"a": Resource("away"), "b": Resource()},
            Status(True, frozenset({"away", "online"})),
        ),
        # a bare JID's messages skip negative-priority resources (stored offline)
        (ALICE, {"a": Resource("chat", -1)}, Status(True)),
        (
            ALICE,
            {"a": Resource("chat", -1), "b": Resource("xa", 0)},
            Status(True, frozenset({"xa"})),
        ),
        # a full JID is that resource, whatever its priority
        (f"{ALICE}/a", {"a": Resource("chat", -1)}, Status(True, frozenset({"chat"}))),
        (f"{ALICE}/c", {"a": Resource("chat")}, Status(True)),
    ],
    ids=["unknown", "unknown-full", "offline", "two", "negative", "mixed", "full", "full-gone"],
)
def test_status(jid: str, resources: av.Resources | None, status: Status) -> None:
    assert av.status_of(jid, resources) == status


ONLINE = Status(True, frozenset({"online"}))
AWAY = Status(True, frozenset({"away"}))
OFFLINE = Status(True)
SHOWS = {"pubsub#show-values": ["chat", "online"]}


@pytest.mark.parametrize(
    ("options", "presence_based", "status", "reason"),
    [
        ({}, False, OFFLINE, None),  # not presence-based: offline storage is the server's
        ({}, True, OFFLINE, "unavailable"),
        ({}, True, ONLINE, None),
        ({}, True, AWAY, None),
        ({}, True, UNKNOWN, None),  # cannot know: delivered
        (SHOWS, False, ONLINE, None),
        (SHOWS, False, AWAY, "show"),
        (SHOWS, False, OFFLINE, "unavailable"),
        (SHOWS, True, Status(True, frozenset({"away", "chat"})), None),
        (SHOWS, False, UNKNOWN, None),
        ({"pubsub#show-values": []}, False, OFFLINE, None),  # an empty list filters nothing
    ],
    ids=[
        "plain-offline",
        "pbd-offline",
        "pbd-online",
        "pbd-away",
        "pbd-unknown",
        "shows-match",
        "shows-away",
        "shows-offline",
        "shows-one-of-two",
        "shows-unknown",
        "shows-empty",
    ],
)
def test_withheld(
    options: dict[str, Any], presence_based: bool, status: Status, reason: str | None
) -> None:
    assert av.withheld(options, presence_based, status) == reason


@pytest.mark.parametrize(
    ("value", "presence_based"), [(None, None), ("1", True), ("true", True), ("0", False)]
)
def test_node_metadata_may_say_presence_based(
    value: str | None, presence_based: bool | None
) -> None:
    from component.pubsub.access import parse_node_meta
    from tests.unit.test_pubsub_core import meta_query

    fields = {"pubsub#access_model": "open"}
    if value is not None:
        fields["pubsub#presence_based_delivery"] = value
    assert parse_node_meta(meta_query(**fields)).presence_based is presence_based
