"""Feeding presence-based delivery from presence stanzas (component/pubsub/presence_edge.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from xml.etree import ElementTree as ET

from component.pubsub.access import NodeMeta
from component.pubsub.presence_edge import Presences
from component.storage.subscriptions_repo import LocalSubscription
from component.xmpp.privilege import HostPrivileges

PROXY = "pubsub.example.org"
P2 = "urn:xmpp:privilege:2"


def presence(
    frm: str, ptype: str | None = None, show: str | None = None, to: str = PROXY
) -> ET.Element:
    xml = ET.Element("{jabber:component:accept}presence", {"from": frm, "to": to})
    if ptype:
        xml.set("type", ptype)
    if show:
        ET.SubElement(xml, "{jabber:component:accept}show").text = show
    return xml


def sub(jid: str, node: str = "n", **options: object) -> LocalSubscription:
    return LocalSubscription(
        PROXY, "origin", node, jid, jid.partition("/")[0], "s", dict(options), datetime.now(UTC)
    )


def told(mode: str = "always") -> Presences:
    presences = Presences(mode, PROXY)  # type: ignore[arg-type]
    presences.granted(HostPrivileges("example.org", P2, presence="managed_entity"))
    return presences


def test_a_host_that_reports_presence_in_full() -> None:
    p = told()
    assert p.knows("alice@example.org")
    assert p.knows("alice@example.org/x")
    assert not p.knows("bob@remote.org")
    assert p.withheld(sub("alice@example.org"))  # not seen since the grant: offline
    assert not p.withheld(sub("bob@remote.org"))  # unknown: delivered
    p.on_presence(presence("alice@example.org/phone", show="away"))
    assert not p.withheld(sub("alice@example.org"))
    assert p.withheld(sub("alice@example.org", **{"pubsub#show-values": ["chat"]}))
    assert not p.withheld(sub("alice@example.org/phone", **{"pubsub#show-values": ["away"]}))
    p.on_presence(presence("alice@example.org/phone", "unavailable"))
    assert p.withheld(sub("alice@example.org"))


def test_what_is_not_counted() -> None:
    p = told()
    p.on_presence(presence("alice@example.org/a", to=f"node\\40x@{PROXY}"))  # a node's address
    p.on_presence(presence("example.org"))  # the server itself
    p.on_presence(presence("bob@remote.org/r"))  # a host that grants nothing
    p.on_presence(presence("alice@example.org/a", "probe"))
    assert p.withheld(sub("alice@example.org"))
    assert not p.knows("bob@remote.org")


def test_old_privileges_or_none_leave_presence_unknown() -> None:
    p = Presences("always", PROXY)
    p.granted(HostPrivileges("example.org", "urn:xmpp:privilege:1", presence="managed_entity"))
    p.on_presence(presence("alice@example.org/a", "unavailable"))
    assert not p.knows("alice@example.org")
    assert not p.withheld(sub("alice@example.org"))


def test_a_new_grant_or_a_disconnect_forgets() -> None:
    p = told()
    p.on_presence(presence("alice@example.org/a"))
    assert not p.withheld(sub("alice@example.org"))
    p.granted(HostPrivileges("example.org", P2, presence="managed_entity"))
    assert p.withheld(sub("alice@example.org"))  # the server sends them again
    p.on_presence(presence("alice@example.org/a"))
    p.disconnected()
    assert not p.knows("alice@example.org")


def test_modes_and_node_metadata() -> None:
    p = told("node")

    async def meta(service: str, node: str) -> NodeMeta:
        return NodeMeta(True, "open", presence_based=node == "pbd")

    read = p.watching(meta)
    asyncio.run(read("origin", "pbd"))
    asyncio.run(read("origin", "plain"))
    assert p.presence_based("origin", "pbd")
    assert not p.presence_based("origin", "plain")
    assert p.withheld(sub("alice@example.org", "pbd"))
    assert not p.withheld(sub("alice@example.org", "plain"))
    assert not told("never").withheld(sub("alice@example.org"))
