"""`herald cache sync|purge|reset` against a running Herald (real Prosody, SQLite and
PostgreSQL): the running process picks each change up within seconds, with no restart."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from component.app import Herald
from component.storage import pubsub_item_reads, pubsub_item_writes, pubsub_nodes
from tests.conftest import PROXY_JID, UPSTREAM_JID, USERS
from tests.harness.client import TestClient
from tests.harness.prosody import Prosody
from tests.integration.test_cache_cli import herald as herald_cli
from tests.integration.test_pubsub_proxy import (
    Owner,
    cache_node,
    get_items,
    proxy_of,
    requests,
    sample,
    start_proxy,
    unique,
)

pytestmark = pytest.mark.integration
_seq = itertools.count()


@pytest.fixture
async def users(prosody: Prosody) -> AsyncIterator[dict[str, TestClient]]:
    made = {}
    for name in ("olivia", "alice"):
        client = TestClient(
            f"{name}@localhost/live{next(_seq)}",
            USERS[name],
            plugins=("xep_0030", "xep_0004", "xep_0060"),
        )
        await client.start(prosody.c2s_port)
        made[name] = client
    yield made
    for client in made.values():
        await client.stop()


@pytest.fixture
async def running(
    prosody: Prosody, db_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Herald, Path]]:
    """A running Herald, and a configuration file for `herald cache` on its database."""
    herald = await start_proxy(prosody, db_url)
    config = tmp_path / "herald.toml"
    config.write_text(f'[database]\nurl = "{db_url}"\n')
    yield herald, config
    await herald.stop()


async def seconds_until(check: object, timeout: float = 10.0) -> float:
    """Seconds until check() holds (polled every 20 ms); fails after timeout."""
    started = time.monotonic()
    while not await check():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise AssertionError("not picked up in time")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_a_running_herald_resyncs_a_node_after_herald_cache_sync(
    running: tuple[Herald, Path], users: dict[str, TestClient]
) -> None:
    herald, config = running
    owner = Owner(users["olivia"])
    node = unique("blog-resync")
    await owner.create(node, items=3)
    await cache_node(herald, users["alice"], node)
    service = proxy_of(herald)
    state = service.cache.node(UPSTREAM_JID, node)
    assert state is not None
    # The database copy drifts (say, a disk restored from a backup): one item lost.
    async with service.cache.sessions.begin() as session:
        await pubsub_item_writes.retract_items(session, state.id, ["item-001"])
        before = await pubsub_nodes.get_node_by_id(session, state.id)
    assert before is not None
    completed = sample("herald_pubsub_sync_runs_total", result="completed") or 0

    started = time.monotonic()
    code, _out, err = await herald_cli(config, "cache", "sync", UPSTREAM_JID, node)
    assert code == 0, err
    cli = time.monotonic() - started

    async def resynced() -> bool:
        async with service.cache.sessions() as session:
            now = await pubsub_nodes.get_node_by_id(session, state.id)
            held = await pubsub_item_reads.item_ids(session, state.id)
        assert now is not None
        assert now.last_synced is not None
        assert before.last_synced is not None
        return now.last_synced > before.last_synced and len(held) == 3

    took = await seconds_until(resynced)
    print(
        f"herald cache sync: re-synced by the running Herald {took:.2f} s after the CLI "
        f"exited (the CLI ran {cli:.2f} s; poll interval 1 s)"
    )
    assert took < 5
    assert (sample("herald_pubsub_sync_runs_total", result="completed") or 0) == completed + 1
    assert (await get_items(users["alice"], node))[0] == [f"item-{i:03d}" for i in range(3)]


async def test_a_running_herald_stops_serving_purged_nodes(
    running: tuple[Herald, Path], users: dict[str, TestClient]
) -> None:
    herald, config = running
    owner = Owner(users["olivia"])
    purged, kept = unique("blog-purged"), unique("blog-kept")
    for node in (purged, kept):
        await owner.create(node, items=2)
        await cache_node(herald, users["alice"], node)
    service = proxy_of(herald)

    async def subscribers(node: str) -> list[str]:
        reply = await owner.ps.get_node_subscriptions(UPSTREAM_JID, node, timeout=5)
        return [s["jid"].bare for s in reply["pubsub_owner"]["subscriptions"]]

    assert PROXY_JID in await subscribers(purged)
    hits = requests(herald, "items", "hit")
    await get_items(users["alice"], purged)
    assert requests(herald, "items", "hit") == hits + 1  # served from the cache (memory)

    code, _, err = await herald_cli(
        config, "cache", "purge", "--service", UPSTREAM_JID, "--node", purged
    )
    assert code == 0, err

    async def dropped() -> bool:
        return service.cache.node(UPSTREAM_JID, purged) is None

    took = await seconds_until(dropped)
    print(f"herald cache purge: the running Herald dropped the node {took:.2f} s after the CLI")
    assert took < 5
    hits, misses = requests(herald, "items", "hit"), requests(herald, "items", "miss")
    got, _, _ = await get_items(users["alice"], purged)
    assert got == ["item-000", "item-001"]  # from upstream
    assert requests(herald, "items", "hit") == hits
    assert requests(herald, "items", "miss") == misses + 1

    async def unsubscribed() -> bool:
        return PROXY_JID not in await subscribers(purged)

    await seconds_until(unsubscribed)
    assert service.cache.node(UPSTREAM_JID, kept) is not None  # the other node stays
    assert PROXY_JID in await subscribers(kept)

    code, _out, err = await herald_cli(config, "cache", "reset", "--yes")
    assert code == 0, err

    async def emptied() -> bool:
        return service.cache.nodes() == []

    took = await seconds_until(emptied)
    print(f"herald cache reset: the running Herald held no node {took:.2f} s after the CLI")
    assert took < 5

    # The gauges follow the database (one Herald runs in this process now); they are
    # refreshed just after memory is emptied, so they may lag it by a query.
    async def gauges_zero() -> bool:
        return (
            sample("herald_pubsub_cached_items"),
            sample("herald_pubsub_cached_nodes", sync_state="completed"),
        ) == (0, 0)

    await seconds_until(gauges_zero, timeout=3)
    hits = requests(herald, "items", "hit")
    assert (await get_items(users["alice"], kept))[0] == ["item-000", "item-001"]
    assert requests(herald, "items", "hit") == hits
