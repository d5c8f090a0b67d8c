"""/metrics after real traffic: each counter moves by exactly what was done."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from component.app import Herald
from component.pubsub.service import PubsubComponent
from tests.conftest import MULTICAST_JID, PROXY_JID, UPSTREAM_JID, USERS
from tests.harness.client import TestClient
from tests.harness.herald import settings_for
from tests.harness.ports import free_port
from tests.harness.prosody import Prosody

pytestmark = pytest.mark.integration

ADDR = "http://jabber.org/protocol/address"
PUBSUB = "http://jabber.org/protocol/pubsub"
SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def delta(before: dict[str, float], after: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.fixture
async def herald(prosody: Prosody, tmp_path: Path) -> AsyncIterator[tuple[Herald, int]]:
    port = free_port()
    settings = settings_for(
        prosody,
        f"sqlite+aiosqlite:///{tmp_path}/h.db",
        metrics={"listen": f"127.0.0.1:{port}"},
        multicast={"sender_mode": "trusted"},
        pubsub={"rules": [{"node": "metrics-*", "sync": True}]},
    )
    running = Herald(settings)
    await running.start()
    await asyncio.wait_for(running.wait_connected(), 10)
    await asyncio.sleep(0.3)
    yield running, port
    await running.stop()


async def test_counters_move_by_the_traffic(herald: tuple[Herald, int], prosody: Prosody) -> None:
    _, port = herald
    clients = {}
    for name in ("olivia", "alice", "bob", "carol"):
        clients[name] = TestClient(
            f"{name}@localhost/m", USERS[name], plugins=("xep_0030", "xep_0004", "xep_0060")
        )
        await clients[name].start(prosody.c2s_port)
    try:
        owner = clients["olivia"].plugin["xep_0060"]
        await owner.create_node(UPSTREAM_JID, "metrics-node", timeout=5)
        await owner.publish(
            UPSTREAM_JID, "metrics-node", id="1", payload=ET.Element("{urn:x}p"), timeout=5
        )
        before = await asyncio.to_thread(scrape, port)

        # multicast: one message to three local users, one refused
        header = ET.Element(f"{{{ADDR}}}addresses")
        for jid in ("bob@localhost", "carol@localhost", "olivia@localhost"):
            ET.SubElement(header, f"{{{ADDR}}}address", {"type": "to", "jid": jid})
        msg = clients["alice"].make_message(mto=MULTICAST_JID, mbody="hi")
        msg.append(header)
        msg.send()
        clients["alice"].make_message(mto=MULTICAST_JID, mbody="no header").send()
        await asyncio.wait_for(clients["bob"].messages.get(), 5)
        await asyncio.wait_for(clients["alice"].messages.get(), 5)  # the refusal

        # pubsub: a miss, then (once synced) a hit, then an error
        alice_ps = clients["alice"].plugin["xep_0060"]
        await alice_ps.get_items(PROXY_JID, "metrics-node", timeout=5)
        service = next(s for s in herald[0].services if isinstance(s, PubsubComponent))
        # Synced: served from the cache, and the sync's last steps (the gauges) done.
        for _ in range(200):
            node = service.cache.node(UPSTREAM_JID, "metrics-node")
            if (
                node is not None
                and node.serves_from_cache
                and not service.synchroniser.syncing(node)
            ):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("metrics-node was not synced within 10 s")
        await alice_ps.get_items(PROXY_JID, "metrics-node", timeout=5)
        with pytest.raises(IqError):
            await alice_ps.get_items(PROXY_JID, "metrics-no-such-node", max_items=0, timeout=5)

        after = await asyncio.to_thread(scrape, port)
    finally:
        for client in clients.values():
            await client.stop()

    def moved(key: str) -> float:
        return delta(before, after, key)

    assert moved('herald_multicast_stanzas_total{result="delivered",stanza="message"}') == 1
    assert moved('herald_multicast_stanzas_total{result="rejected",stanza="message"}') == 1
    assert moved('herald_multicast_recipients_total{route="local"}') == 3
    assert moved('herald_multicast_recipients_total{route="remote_direct"}') == 0
    assert moved('herald_pubsub_requests_total{kind="items",result="miss"}') == 1
    assert moved('herald_pubsub_requests_total{kind="items",result="hit"}') == 1
    assert moved('herald_pubsub_requests_total{kind="items",result="error"}') == 1
    assert moved('herald_pubsub_sync_runs_total{result="completed"}') == 1
    assert moved('herald_pubsub_upstream_requests_total{outcome="ok"}') >= 3
    assert moved("herald_pubsub_upstream_request_seconds_count") >= 3
    # this Herald's database: no node before, the one synced node and its item after
    assert moved('herald_pubsub_cached_nodes{sync_state="completed"}') == 1
    assert moved("herald_pubsub_cached_items") == 1
    assert after['herald_component_connected{service="multicast"}'] == 1
    assert after['herald_component_connected{service="pubsub"}'] == 1
    assert sum(moved(k) for k in after if k.startswith("herald_db_query_seconds_count")) > 0
    assert any(k.startswith("process_cpu_seconds_total") for k in after)
    assert any(k.startswith("herald_build_info") for k in after)
    # labels never carry JIDs or node names
    labelled = [k for k in after if "{" in k]
    assert not [k for k in labelled if "@" in k or "localhost" in k or "metrics-node" in k]
