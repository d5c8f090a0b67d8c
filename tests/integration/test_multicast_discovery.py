"""Remote multicast discovery: order, caching (memory and database), merging, bounded wait.

The disco answers come from a scripted DiscoClient; the real-server path is covered by
test_multicast.py. The database is real (SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component.multicast.addresses import ADDRESS_NS
from component.multicast.disco_edge import _limits
from component.multicast.discovery import DiscoError, DiscoInfo, RemoteDiscovery
from component.multicast.planner import RemoteSupport

pytestmark = pytest.mark.integration


class ScriptedDisco:
    """Answers from a table; counts calls; optional delay."""

    def __init__(
        self,
        info: dict[str, DiscoInfo | DiscoError],
        items: dict[str, list[str]],
        delay: float = 0.0,
    ) -> None:
        self.info_table = info
        self.items_table = items
        self.delay = delay
        self.calls: list[str] = []

    async def info(self, jid: str) -> DiscoInfo:
        self.calls.append(f"info {jid}")
        await asyncio.sleep(self.delay)
        answer = self.info_table.get(jid, DiscoError("item-not-found"))
        if isinstance(answer, DiscoError):
            raise answer
        return answer

    async def items(self, jid: str) -> list[str]:
        self.calls.append(f"items {jid}")
        await asyncio.sleep(self.delay)
        return self.items_table.get(jid, [])


def plain(*features: str, **limits: int) -> DiscoInfo:
    return DiscoInfo(frozenset(features), dict(limits))


WORLD = {
    "direct.example": plain(ADDRESS_NS, message=10),
    "viaitems.example": plain("jabber:iq:version"),
    "mc.viaitems.example": plain(ADDRESS_NS),
    "none.example": plain(),
    "chat.none.example": plain("http://jabber.org/protocol/muc"),
}
ITEMS = {
    "viaitems.example": ["pubsub.viaitems.example", "mc.viaitems.example", "u@viaitems.example"],
    "none.example": ["chat.none.example"],
}


async def test_discovery_order_and_results(sessions: async_sessionmaker[AsyncSession]) -> None:
    disco = ScriptedDisco(WORLD, ITEMS)
    found = await RemoteDiscovery(disco, sessions, ttl=3600).lookup(
        ["direct.example", "viaitems.example", "none.example", "dead.example"], "message"
    )
    assert found == {
        "direct.example": RemoteSupport(service_jid="direct.example", max_per_stanza=10),
        "viaitems.example": RemoteSupport(service_jid="mc.viaitems.example"),
        "none.example": RemoteSupport(service_jid=None),
        "dead.example": RemoteSupport(service_jid=None),  # an IQ error means "no service"
    }
    assert "items direct.example" not in disco.calls  # info on the domain came first
    assert "info u@viaitems.example" not in disco.calls  # only domain items are probed


async def test_cache_survives_a_restart_and_expires(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    first = ScriptedDisco(WORLD, ITEMS)
    await RemoteDiscovery(first, sessions, ttl=600, clock=lambda: now).lookup(
        ["viaitems.example", "none.example"], "message"
    )
    # a new instance (a restarted Herald) answers both from the database
    second = ScriptedDisco(WORLD, ITEMS)
    restarted = RemoteDiscovery(second, sessions, ttl=600, clock=lambda: now)
    found = await restarted.lookup(["viaitems.example", "none.example"], "message")
    assert found["viaitems.example"].service_jid == "mc.viaitems.example"
    assert found["none.example"].service_jid is None
    assert second.calls == []
    # past the TTL it asks again
    later = RemoteDiscovery(second, sessions, ttl=600, clock=lambda: now + timedelta(seconds=601))
    await later.lookup(["none.example"], "message")
    assert second.calls[0] == "info none.example"


async def test_concurrent_lookups_share_one_disco(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    disco = ScriptedDisco(WORLD, ITEMS, delay=0.05)
    discovery = RemoteDiscovery(disco, sessions, ttl=600)
    results = await asyncio.gather(
        *(discovery.lookup(["direct.example"], "message") for _ in range(10))
    )
    assert all(r["direct.example"].service_jid == "direct.example" for r in results)
    assert disco.calls == ["info direct.example"]


async def test_a_slow_remote_does_not_hold_delivery(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    disco = ScriptedDisco(WORLD, ITEMS, delay=0.5)
    discovery = RemoteDiscovery(disco, sessions, ttl=600, wait=0.1)
    started = asyncio.get_running_loop().time()
    assert await discovery.lookup(["direct.example"], "message") == {}
    assert asyncio.get_running_loop().time() - started < 0.4
    await asyncio.sleep(0.6)  # the disco finished in the background and was cached
    found = await discovery.lookup(["direct.example"], "message")
    assert found["direct.example"].service_jid == "direct.example"
    assert disco.calls == ["info direct.example"]


async def test_timeouts_are_cached_briefly(sessions: async_sessionmaker[AsyncSession]) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    disco = ScriptedDisco({"slow.example": DiscoError("no answer", timeout=True)}, {})
    discovery = RemoteDiscovery(disco, sessions, ttl=86400, clock=lambda: now)
    await discovery.lookup(["slow.example"], "message")
    later = RemoteDiscovery(disco, sessions, ttl=86400, clock=lambda: now + timedelta(hours=1))
    await later.lookup(["slow.example"], "message")
    assert disco.calls == ["info slow.example", "info slow.example"]


def test_limits_form_parsing() -> None:
    from xml.etree import ElementTree as ET

    query = ET.fromstring(
        f"""<query xmlns="http://jabber.org/protocol/disco#info">
              <x xmlns="jabber:x:data" type="result">
                <field var="FORM_TYPE" type="hidden"><value>urn:other</value></field>
                <field var="message"><value>99</value></field>
              </x>
              <x xmlns="jabber:x:data" type="result">
                <field var="FORM_TYPE" type="hidden"><value>{ADDRESS_NS}</value></field>
                <field var="message"><value>20</value></field>
                <field var="presence"><value>infinite</value></field>
              </x>
            </query>"""
    )
    assert _limits(query) == {"message": 20}
    odd = ET.fromstring(
        f"""<query xmlns="http://jabber.org/protocol/disco#info">
              <x xmlns="jabber:x:data" type="result">
                <field var="FORM_TYPE" type="hidden"><value>{ADDRESS_NS}</value></field>
                <field var="message"><value>\u00b2</value></field>
                <field var="presence"><value>{"9" * 5000}</value></field>
              </x></query>"""
    )
    assert _limits(odd) == {}  # hostile values are ignored, never a crash


async def test_only_the_domains_own_services_count(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    world = {
        "evil.example": plain(),
        "multicast.victim.example": plain(ADDRESS_NS),
        "multicast.localhost": plain(ADDRESS_NS),
        "mc.evil.example.attacker": plain(ADDRESS_NS),
    }
    items = {
        "evil.example": [
            "multicast.victim.example",  # a third party
            "multicast.localhost",  # Herald itself: a loop
            "mc.evil.example.attacker",  # not a subdomain, despite the prefix
            *[f"s{i}.evil.example" for i in range(50)],
        ]
    }
    disco = ScriptedDisco(world, items)
    discovery = RemoteDiscovery(disco, sessions, ttl=60, never=frozenset({"multicast.localhost"}))
    found = await discovery.lookup(["evil.example"], "message")
    assert found["evil.example"].service_jid is None
    probed = [c for c in disco.calls if c.startswith("info ") and c != "info evil.example"]
    assert len(probed) == 20  # capped, and only subdomains
    assert all(c.endswith(".evil.example") for c in probed)
