"""The XEP-0050 cache commands end to end, through a real Prosody: alice is in
pubsub.admins, bob is not."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from xml.etree import ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from component.app import Herald
from component.cache_admin import operations as ops
from tests.conftest import PROXY_JID, UPSTREAM_JID, USERS
from tests.harness.client import TestClient
from tests.harness.prosody import Prosody
from tests.integration.test_pubsub_proxy import (
    Owner,
    cache_node,
    proxy_of,
    sample,
    start_proxy,
    unique,
)

pytestmark = pytest.mark.integration

COMMANDS = "http://jabber.org/protocol/commands"
DATA = "jabber:x:data"
_seq = itertools.count()


@pytest.fixture
async def users(prosody: Prosody) -> AsyncIterator[dict[str, TestClient]]:
    made = {}
    for name in ("olivia", "alice", "bob"):
        client = TestClient(
            f"{name}@localhost/adhoc{next(_seq)}",
            USERS[name],
            plugins=("xep_0030", "xep_0004", "xep_0060"),
        )
        await client.start(prosody.c2s_port)
        made[name] = client
    yield made
    for client in made.values():
        await client.stop()


@pytest.fixture
async def herald(prosody: Prosody, db_url: str) -> AsyncIterator[Herald]:
    running = await start_proxy(prosody, db_url, admins=["Alice@localhost"])
    yield running
    await running.stop()


async def command(
    client: TestClient,
    node: str,
    action: str | None = None,
    sessionid: str | None = None,
    form: dict[str, str] | None = None,
) -> ET.Element:
    """Send one command step to the proxy; the <command/> answered."""
    iq = client.make_iq_set(ito=PROXY_JID)
    element = ET.SubElement(iq.xml, f"{{{COMMANDS}}}command", {"node": node})
    if action is not None:
        element.set("action", action)
    if sessionid is not None:
        element.set("sessionid", sessionid)
    if form is not None:
        x = ET.SubElement(element, f"{{{DATA}}}x", {"type": "submit"})
        for var, value in form.items():
            field = ET.SubElement(x, f"{{{DATA}}}field", {"var": var})
            ET.SubElement(field, f"{{{DATA}}}value").text = value
    reply = await iq.send(timeout=5)
    found = reply.xml.find(f"{{{COMMANDS}}}command")
    assert found is not None
    return found


async def refused(call: object) -> tuple[str, str, list[str]]:
    """The error condition, its type and the application conditions of a refusal."""
    with pytest.raises(IqError) as info:
        await call  # type: ignore[misc]
    error = info.value.iq.xml.find("{jabber:client}error")
    assert error is not None
    specific = [c.tag.partition("}")[2] for c in error if c.tag.startswith(f"{{{COMMANDS}}}")]
    return info.value.iq["error"]["condition"], error.get("type", ""), specific


def fields(element: ET.Element) -> dict[str, list[str]]:
    x = element.find(f"{{{DATA}}}x")
    assert x is not None
    return {
        f.get("var", ""): [v.text or "" for v in f.findall(f"{{{DATA}}}value")]
        for f in x.findall(f"{{{DATA}}}field")
    }


async def test_admins_only_see_and_run_the_commands(
    herald: Herald, users: dict[str, TestClient]
) -> None:
    alice, bob = users["alice"], users["bob"]
    listed = {}
    for name, client in (("alice", alice), ("bob", bob)):
        items = await client.plugin["xep_0030"].get_items(PROXY_JID, node=COMMANDS, timeout=5)
        listed[name] = sorted(i[1] for i in items["disco_items"]["items"])
        info = await client.plugin["xep_0030"].get_info(PROXY_JID, timeout=5)
        listed[name + " feature"] = COMMANDS in info["disco_info"]["features"]
    print(f"command lists: {listed}")
    assert listed == {
        "alice": ["purge", "resync", "stats"],
        "alice feature": True,
        "bob": [],
        "bob feature": False,
    }

    owner = Owner(users["olivia"])
    node = unique("blog-adhoc")
    await owner.create(node, items=2)
    await cache_node(herald, alice, node)
    for step in (
        command(bob, "stats"),
        command(bob, "purge", form={"node": node}),
        command(bob, "resync", form={"node": node}),
    ):
        assert await refused(step) == ("forbidden", "auth", [])
    assert proxy_of(herald).cache.node(UPSTREAM_JID, node) is not None  # bob purged nothing

    stats = await command(alice, "stats")
    assert stats.get("status") == "completed"
    expected = await ops.stats(proxy_of(herald).cache.sessions)
    got = fields(stats)
    assert got["nodes"] == [str(sum(sum(s.nodes.values()) for s in expected))]
    assert got["items"] == [str(sum(s.items for s in expected))]
    assert got["nodes-completed"] == ["1"]
    assert any(line.startswith(f"{UPSTREAM_JID}: 1 nodes, 2 items") for line in got["services"])

    assert await refused(command(alice, "reboot")) == ("item-not-found", "cancel", [])
    assert await refused(command(alice, "stats", action="next")) == (
        "bad-request",
        "modify",
        ["bad-action"],
    )


async def test_resync_and_purge_forms(herald: Herald, users: dict[str, TestClient]) -> None:
    alice = users["alice"]
    owner = Owner(users["olivia"])
    node = unique("blog-forms")
    await owner.create(node, items=2)
    await cache_node(herald, alice, node)
    cache = proxy_of(herald).cache

    first = await command(alice, "resync")
    sessionid = first.get("sessionid")
    assert (first.get("status"), sessionid is not None) == ("executing", True)
    assert fields(first)["service"] == [UPSTREAM_JID]  # the bare proxy JID's service
    assert "node" in fields(first)
    completed = sample("herald_pubsub_sync_runs_total", result="completed") or 0
    asked = time.monotonic()
    done = await command(alice, "resync", "complete", sessionid, {"node": node})
    assert done.get("status") == "completed"
    while (sample("herald_pubsub_sync_runs_total", result="completed") or 0) == completed:
        assert time.monotonic() - asked < 5, "not re-synced"
        await asyncio.sleep(0.02)
    print(f"ad-hoc resync: re-synced {time.monotonic() - asked:.2f} s after the submission")
    # a session is used once
    again = command(alice, "resync", "complete", sessionid, {"node": node})
    assert await refused(again) == ("bad-request", "modify", ["bad-sessionid"])
    missing = command(alice, "resync", form={"node": "no-such-node"})
    assert (await refused(missing))[0] == "item-not-found"

    first = await command(alice, "purge")
    canceled = await command(alice, "purge", "cancel", first.get("sessionid"))
    assert canceled.get("status") == "canceled"
    assert cache.node(UPSTREAM_JID, node) is not None

    first = await command(alice, "purge")
    empty = command(alice, "purge", "complete", first.get("sessionid"), {"node": ""})
    assert await refused(empty) == ("bad-request", "modify", ["bad-payload"])
    first = await command(alice, "purge")
    done = await command(
        alice, "purge", "complete", first.get("sessionid"), {"node": "blog-forms*"}
    )
    assert done.get("status") == "completed"
    note = done.find(f"{{{COMMANDS}}}note")
    assert note is not None
    assert note.text == "Purged 1 nodes (2 items)."
    assert fields(done)["purged"] == [f"{UPSTREAM_JID} {node} (2 items)"]
    # applied in this process before the answer: not served from memory any more
    assert cache.node(UPSTREAM_JID, node) is None
