"""Administrator changes racing a running sync, on a real database with a scripted
upstream (test_pubsub_sync.py's): what a running Herald does when the request log
says a node it is syncing was purged, or must be fetched again."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component.cache_admin import operations as ops
from component.pubsub.admin_watch import AdminWatch
from component.pubsub.cache import Cache
from component.storage import pubsub_item_reads, pubsub_nodes
from component.storage.records import COMPLETED
from tests.integration.test_pubsub_proxy import until
from tests.integration.test_pubsub_sync import (
    NODE,
    SERVICE,
    ScriptedUpstream,
    runs,
    synchroniser,
)

pytestmark = pytest.mark.integration


async def fetching(upstream: ScriptedUpstream) -> None:
    """Wait until the sync has subscribed and its items request is in flight."""

    async def asked() -> bool:
        return "items" in upstream.calls

    await until(asked, timeout=5)


async def test_a_purge_during_a_sync_stops_it_and_unsubscribes_after_its_subscribe(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    upstream = ScriptedUpstream()
    upstream.delay = 0.3  # each items request
    cache = Cache(sessions, max_items_per_node=50)
    sync = synchroniser(upstream, cache)
    watch = AdminWatch(cache, sync)
    await watch.skip_past()
    node = await cache.ensure(SERVICE, NODE, "rule")
    sync.schedule(node)
    await fetching(upstream)

    purged = await ops.purge(sessions, ops.PurgeFilter(node=NODE), datetime.now(UTC))
    assert [s.node.name for s in purged] == [NODE]
    assert await watch.poll() == 1
    assert cache.node(SERVICE, NODE) is None  # no answer from memory from here on
    completed = runs("completed")
    await sync.wait_idle()  # its sync was cancelled: it ends without completing

    async def unsubscribed() -> bool:
        return "unsubscribe" in upstream.calls

    await until(unsubscribed, timeout=5)
    await asyncio.sleep(upstream.delay + 0.2)  # anything the sync would still have sent
    print(f"upstream requests, in order: {upstream.calls}")
    assert upstream.calls[upstream.calls.index("subscribe") :] == [
        "subscribe",
        "items",
        "unsubscribe",
    ]
    async with sessions() as session:
        assert await pubsub_nodes.get_node(session, SERVICE, NODE) is None  # not written back
        assert await pubsub_item_reads.count_items(session) == 0
    assert runs("completed") == completed
    await watch.close()
    await sync.close()


async def test_a_resync_during_a_sync_is_followed_by_another_fetch(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    upstream = ScriptedUpstream()
    upstream.delay = 0.2
    cache = Cache(sessions, max_items_per_node=50)
    sync = synchroniser(upstream, cache)
    watch = AdminWatch(cache, sync)
    await watch.skip_past()
    node = await cache.ensure(SERVICE, NODE, "rule")
    sync.schedule(node)
    await fetching(upstream)

    await ops.request_resync(sessions, SERVICE, NODE, datetime.now(UTC))
    assert await watch.poll() == 1
    await sync.wait_idle()
    fetches = upstream.calls.count("items")
    print(f"items fetches: {fetches} (one running when the resync was asked, then one more)")
    assert fetches == 2
    state = cache.node(SERVICE, NODE)
    assert state is not None
    assert state.sync_state == COMPLETED
    assert state.serves_from_cache
    await watch.close()
    await sync.close()


async def test_a_resync_unconfirms_the_node_until_fetched_again(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    upstream = ScriptedUpstream()
    cache = Cache(sessions, max_items_per_node=50)
    sync = synchroniser(upstream, cache)
    watch = AdminWatch(cache, sync)
    await watch.skip_past()
    node = await cache.ensure(SERVICE, NODE, "rule")
    await sync.sync(node)
    assert cache.node(SERVICE, NODE).serves_from_cache  # type: ignore[union-attr]
    upstream.delay = 0.2

    await ops.request_resync(sessions, SERVICE, NODE, datetime.now(UTC))
    assert await watch.poll() == 1
    assert not cache.node(SERVICE, NODE).serves_from_cache  # type: ignore[union-attr]
    await sync.wait_idle()
    assert cache.node(SERVICE, NODE).serves_from_cache  # type: ignore[union-attr]
    assert await watch.poll() == 0  # each request is applied once
    await watch.close()
    await sync.close()
