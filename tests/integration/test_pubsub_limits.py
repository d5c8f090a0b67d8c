"""Issue 11, pubsub limits: what an upstream (or whoever may create nodes on it) can
make Herald hold. A scripted upstream on a real database (SQLite and PostgreSQL);
the end-to-end refusal on Prosody is in test_pubsub_proxy.py."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component.pubsub.cache import Cache
from component.pubsub.item_intake import CacheLimits
from component.pubsub.stanzas import NodeEvent, ReceivedItem
from component.storage.records import COMPLETED, ERROR, ItemInput
from tests.integration.test_pubsub_sync import NODE, SERVICE, ScriptedUpstream, runs, synchroniser

pytestmark = pytest.mark.integration


async def test_a_node_holding_an_item_over_max_item_bytes_is_not_cached(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    upstream = ScriptedUpstream()
    upstream.padding = {"b": 5000}
    cache = Cache(sessions, max_items_per_node=10)
    sync = synchroniser(upstream, cache, limits=CacheLimits(max_item_bytes=4096))
    failed = runs("failed")
    await sync.sync(await cache.ensure(SERVICE, NODE, None))
    node = cache.node(SERVICE, NODE)
    assert node is not None
    print("state:", node.sync_state, "failed runs:", runs("failed") - failed)
    # Not cached without item b (that would answer differently from upstream): the
    # node is served from upstream, and nothing of it is kept.
    assert node.sync_state == ERROR
    assert not node.serves_from_cache
    assert await cache.items(node) == []
    assert runs("failed") - failed == 1

    upstream.padding = {}
    await sync.sync(node)
    node = cache.node(SERVICE, NODE)
    assert node is not None
    assert node.serves_from_cache


async def test_a_notification_over_max_item_bytes_takes_the_node_out_of_service(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    upstream = ScriptedUpstream()
    cache = Cache(sessions, max_items_per_node=10)
    sync = synchroniser(upstream, cache, limits=CacheLimits(max_item_bytes=4096))
    await sync.sync(await cache.ensure(SERVICE, NODE, None))
    node = cache.node(SERVICE, NODE)
    assert node is not None
    assert node.serves_from_cache
    # upstream now holds a big item d; its notification arrives
    upstream.items = ["a", "b", "c", "d"]
    upstream.padding = {"d": 5000}
    big = ReceivedItem("d", f"<entry xmlns='urn:x'>{'x' * 5000}</entry>", "urn:x", None, None)
    await sync.apply(SERVICE, NodeEvent("items", NODE, (big,)))
    node = cache.node(SERVICE, NODE)
    assert node is not None
    assert not node.serves_from_cache  # at once: never answered without item d
    await sync.wait_idle()  # the re-fetch it started finds d too large as well
    node = cache.node(SERVICE, NODE)
    assert node is not None
    print("after the big notification:", node.sync_state)
    assert node.sync_state == ERROR
    assert await cache.items(node) == []


async def test_nodes_past_max_nodes_per_service_are_passed_through(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    upstream = ScriptedUpstream()
    cache = Cache(sessions, max_items_per_node=10)
    sync = synchroniser(upstream, cache, limits=CacheLimits(max_nodes_per_service=3))
    for n in range(5):
        await sync.consider(SERVICE, f"attacker-{n}", None)
    await sync.consider("pubsub.other.org", "blog", None)
    await sync.wait_idle()
    cached = sorted(n.name for n in cache.nodes() if n.service == SERVICE)
    print("cached on the service:", cached)
    assert cached == ["attacker-0", "attacker-1", "attacker-2"]
    assert cache.count_on(SERVICE) == 3
    assert cache.node("pubsub.other.org", "blog") is not None  # another service: own cap
    # a node dropped frees its place
    dropped = cache.node(SERVICE, "attacker-0")
    assert dropped is not None
    await cache.delete(dropped)
    assert cache.count_on(SERVICE) == 2


async def test_the_in_memory_cache_is_bounded_in_bytes(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Issue 11: the memory copy was bounded by item count, so a few huge items took
    any amount of memory. Three nodes of ~40 KB each under a 100 KB budget."""
    cache = Cache(sessions, max_items_per_node=10, memory_bytes=100_000)
    nodes = []
    for name in ("n1", "n2", "n3"):
        node = await cache.ensure(SERVICE, name, None)
        payload = f"<x xmlns='urn:x'>{'y' * 20_000}</x>"
        node = await cache.upsert_items(node, [ItemInput("i1", payload), ItemInput("i2", payload)])
        node = await cache.set_state(node, confirm=True, sync_state=COMPLETED, shareable=True)
        nodes.append(node)
    for node in nodes:
        assert len(await cache.items(node)) == 2  # read: loaded into memory
    print("held bytes:", cache.held_bytes, "of", cache.memory_bytes)
    assert 0 < cache.held_bytes <= 100_000
    assert [cache.hot(n) for n in nodes] == [False, True, True]  # least recently used out
    # read again from the database: still correct
    assert [i.item_id for i in await cache.items(nodes[0])] == ["i1", "i2"]
    assert [cache.hot(n) for n in nodes] == [True, False, True]
    # a node larger than the whole budget is served from the database, not held
    big = await cache.ensure(SERVICE, "big", None)
    huge = f"<x xmlns='urn:x'>{'z' * 120_000}</x>"
    big = await cache.upsert_items(big, [ItemInput("h", huge)])
    assert len(await cache.items(big)) == 1
    assert not cache.hot(big)
    assert cache.held_bytes <= 100_000
