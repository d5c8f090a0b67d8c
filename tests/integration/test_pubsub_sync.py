"""Synchronisation outcomes on a real database, with a scripted upstream.

The end-to-end paths run against Prosody in test_pubsub_proxy.py; failures are hard
to provoke there, so here the upstream answers from a script.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from xml.etree import ElementTree as ET

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component.pubsub.cache import Cache
from component.pubsub.item_intake import CacheLimits
from component.pubsub.node_state import NodeState
from component.pubsub.reconcile import RECONCILE_EVERY
from component.pubsub.rules import AnalyserRule, Registry
from component.pubsub.stanzas import NodeEvent, ReceivedItem
from component.pubsub.sync import Synchroniser
from component.pubsub.upstream import UpstreamError
from component.storage import pubsub_leases, pubsub_nodes
from component.storage.records import COMPLETED, ERROR, ItemInput, ItemRecord
from component.xmpp.errors import make_error

pytestmark = pytest.mark.integration

PS = "http://jabber.org/protocol/pubsub"
INFO = "http://jabber.org/protocol/disco#info"
SERVICE, NODE = "pubsub.example.org", "blog"


def reply(xml: str) -> ET.Element:
    return ET.fromstring(f'<iq xmlns="jabber:component:accept" type="result">{xml}</iq>')


def open_meta(**fields: str) -> ET.Element:
    """An open node's disco#info, with more pubsub#* fields (max_items="2", say)."""
    more = "".join(f'<field var="pubsub#{k}"><value>{v}</value></field>' for k, v in fields.items())
    return reply(
        f"""<query xmlns="{INFO}" node="{NODE}"><x xmlns="jabber:x:data" type="result">
          <field var="FORM_TYPE"><value>http://jabber.org/protocol/pubsub#meta-data</value></field>
          <field var="pubsub#access_model"><value>open</value></field>{more}</x></query>"""
    )


class ScriptedUpstream:
    """as_herald() answers from the request's shape; items fail while `broken`."""

    def __init__(self) -> None:
        self.broken = False
        self.fail_next = 0  # items requests that time out, one-off
        self.meta = open_meta()
        self.items = ["a", "b", "c"]
        self.calls: list[str] = []
        self.by_id: list[tuple[int, int]] = []  # per request by id: ids asked, items sent
        self.delay = 0.0  # seconds each items request takes
        self.padding: dict[str, int] = {}  # item id -> characters added to its payload

    async def as_herald(self, iq_type: str, to: str, payload: ET.Element) -> ET.Element:
        child = payload[0] if len(payload) else payload
        name = child.tag.partition("}")[2]
        self.calls.append(name if payload.tag.endswith("pubsub") else payload.tag)
        if payload.tag == f"{{{INFO}}}query":
            return self.meta if payload.get("node") else reply(f'<query xmlns="{INFO}"/>')
        if name == "subscribe":
            return reply(
                f'<pubsub xmlns="{PS}"><subscription node="{NODE}" '
                'subscription="subscribed"/></pubsub>'
            )
        if name == "unsubscribe":
            return reply("")
        await asyncio.sleep(self.delay)
        if self.broken or self.fail_next:
            self.fail_next = max(0, self.fail_next - 1)
            raise UpstreamError(make_error("remote-server-timeout", "scripted", "wait"), "timeout")
        # By id, like Prosody: only the items it still holds.
        wanted = {e.get("id") for e in payload.iter(f"{{{PS}}}item")}
        sent = [i for i in self.items if not wanted or i in wanted]
        if wanted:
            self.by_id.append((len(wanted), len(sent)))
        body = "".join(
            f'<item id="{i}"><entry xmlns="http://www.w3.org/2005/Atom">'
            f"<title>{i}{'x' * self.padding.get(i, 0)}</title>"
            "</entry></item>"
            for i in sent
        )
        return reply(f'<pubsub xmlns="{PS}"><items node="{NODE}">{body}</items></pubsub>')


def synchroniser(
    upstream: ScriptedUpstream,
    cache: Cache,
    registry: Registry | None = None,
    *,
    reconcile_interval: float = RECONCILE_EVERY,
    limits: CacheLimits | None = None,
) -> Synchroniser:
    """A synchroniser over the scripted upstream (no rules unless given)."""
    return Synchroniser(
        upstream,  # type: ignore[arg-type]
        cache,
        Registry.from_config([]) if registry is None else registry,
        "proxy.example.org",
        ET.tostring,  # type: ignore[arg-type]
        reconcile_interval=reconcile_interval,
        limits=limits,
    )


def runs(result: str) -> float:
    return REGISTRY.get_sample_value("herald_pubsub_sync_runs_total", {"result": result}) or 0


async def test_failed_sync_is_never_half_cached_and_is_retried(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    upstream = ScriptedUpstream()
    cache = Cache(sessions, max_items_per_node=2)
    registry = Registry.from_config([AnalyserRule(node="blog", sync=True, parser="atom")])
    sync = synchroniser(upstream, cache, registry)
    node = await cache.ensure(SERVICE, NODE, "rule-1")

    await sync.sync(node)
    node = cache.node(SERVICE, NODE)  # type: ignore[assignment]
    assert node.sync_state == COMPLETED
    assert [i.item_id for i in await cache.items(node)] == ["b", "c"]  # newest 2 kept
    parsed = (await cache.items(node))[0].parsed
    assert parsed is not None
    assert parsed["title"] == "b"  # the rule's atom parser ran

    # A later sync fails midway: the node is dropped from the cache, not left stale
    upstream.broken = True
    failed = runs("failed")
    await cache.upsert_items(node, [ItemInput("stale", "<x xmlns='urn:x'/>")])
    await sync.sync(node)
    node = cache.node(SERVICE, NODE)  # type: ignore[assignment]
    assert node.sync_state == ERROR
    assert not node.serves_from_cache
    assert await cache.items(node) == []
    assert runs("failed") == failed + 1
    async with sessions() as session:
        record = await pubsub_nodes.get_node_by_id(session, node.id)
        assert record is not None
        assert record.sync_attempts == 1
        assert record.next_sync_at is not None
        assert record.next_sync_at > datetime.now(UTC)
        assert record.sync_owner is None  # the lease was released
        due_later = await pubsub_nodes.due_for_sync(session, record.next_sync_at)
    assert [r.id for r in due_later] == [node.id]  # picked up again once due

    # The retry succeeds
    upstream.broken = False
    upstream.items = ["c", "d"]
    completed = runs("completed")
    await sync.sync(node)
    node = cache.node(SERVICE, NODE)  # type: ignore[assignment]
    assert node.serves_from_cache
    assert [i.item_id for i in await cache.items(node)] == ["c", "d"]
    assert runs("completed") == completed + 1
    async with sessions() as session:
        record = await pubsub_nodes.get_node_by_id(session, node.id)
    assert record is not None
    assert record.sync_attempts == 0


async def test_a_held_lease_blocks_a_second_sync(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    from datetime import timedelta

    upstream = ScriptedUpstream()
    cache = Cache(sessions, max_items_per_node=10)
    registry = Registry.from_config([])
    sync = synchroniser(upstream, cache, registry)
    node = await cache.ensure(SERVICE, NODE, None)
    # another Herald process holds the lease
    assert await pubsub_leases.try_acquire_sync(
        sessions, node.id, "other-process", datetime.now(UTC), timedelta(minutes=5)
    )
    await sync.sync(node)
    assert upstream.calls == []  # it did nothing
    assert cache.node(SERVICE, NODE).sync_state != COMPLETED  # type: ignore[union-attr]


def dead_pid() -> int:
    """The pid of a process that has just exited (and was reaped)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def test_a_lease_left_by_a_dead_process_is_taken_over_at_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Killed during a resync, a Herald leaves its lease behind on a node the database
    still calls completed. After the restart that node is not served as it was, and
    its sync takes the dead process's lease at once instead of waiting it out."""
    import socket
    from datetime import timedelta

    upstream = ScriptedUpstream()
    cache = Cache(sessions, max_items_per_node=10)
    sync = synchroniser(upstream, cache)
    node = await cache.ensure(SERVICE, NODE, None)
    await sync.sync(node)
    await cache.upsert_items(cache.node(SERVICE, NODE), [ItemInput("stale", "<x xmlns='urn:x'/>")])  # type: ignore[arg-type]
    dead = f"{socket.gethostname()}:{dead_pid()}:0badc0de"
    assert await pubsub_leases.try_acquire_sync(
        sessions, node.id, dead, datetime.now(UTC), timedelta(minutes=5)
    )

    restarted = Cache(sessions, max_items_per_node=10)
    await restarted.load()
    node = restarted.node(SERVICE, NODE)  # type: ignore[assignment]
    assert node.sync_state == COMPLETED
    assert not node.serves_from_cache  # completed in the database is not enough
    await synchroniser(upstream, restarted).sync(node)
    node = restarted.node(SERVICE, NODE)  # type: ignore[assignment]
    assert node.serves_from_cache
    assert [i.item_id for i in await restarted.items(node)] == ["a", "b", "c"]
    async with sessions() as session:
        record = await pubsub_nodes.get_node_by_id(session, node.id)
    assert record is not None
    assert record.sync_owner is None


async def test_the_lease_and_the_state_change_together(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """While a sync holds the lease, the database already says in-progress: a crash
    at any point after taking the lease leaves a node no restart trusts."""
    upstream = ScriptedUpstream()
    upstream.delay = 0.3
    cache = Cache(sessions, max_items_per_node=10)
    sync = synchroniser(upstream, cache)
    node = await cache.ensure(SERVICE, NODE, None)
    await sync.sync(node)
    running = asyncio.create_task(sync.sync(cache.node(SERVICE, NODE)))  # type: ignore[arg-type]
    seen: list[str] = []
    while not running.done():
        async with sessions() as session:
            record = await pubsub_nodes.get_node_by_id(session, node.id)
        assert record is not None
        if record.sync_owner is not None and record.sync_state not in seen[-1:]:
            seen.append(record.sync_state)
        await asyncio.sleep(0.002)
    await running
    print(f"states seen while the lease was held, in order: {seen}")
    # completed is set before the lease is given back, never the other way round
    assert seen[0] == "in-progress"
    assert set(seen) <= {"in-progress", "completed"}


async def test_a_sync_longer_than_its_lease_keeps_it(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from component.pubsub import node_sync

    # Renewed every 0.4 s, so a loaded machine's stall under 0.8 s cannot lose it;
    # the sync outlasts the lease more than twice over.
    monkeypatch.setattr(node_sync, "LEASE", timedelta(seconds=1.2))
    upstream = ScriptedUpstream()
    upstream.delay = 3.0
    cache = Cache(sessions, max_items_per_node=10)
    sync = synchroniser(upstream, cache)
    node = await cache.ensure(SERVICE, NODE, None)
    running = asyncio.create_task(sync.sync(node))
    taken = tries = 0
    while not running.done():
        await asyncio.sleep(0.1)
        async with sessions() as session:
            record = await pubsub_nodes.get_node_by_id(session, node.id)
        if record is None or record.sync_state == COMPLETED:
            break  # done: the lease is given back next
        tries += 1
        now = datetime.now(UTC)
        if await pubsub_leases.try_acquire_sync(
            sessions, node.id, "other", now, timedelta(seconds=1)
        ):
            taken += 1
            await pubsub_leases.release_sync(sessions, node.id, "other")
    await running
    print(f"another process took a 1.2 s lease during a 3 s sync: {taken} of {tries} tries")
    assert taken == 0
    assert cache.node(SERVICE, NODE).serves_from_cache  # type: ignore[union-attr]


async def test_a_sync_that_ends_after_the_node_closed_does_not_revive_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The node is found closed while its fetch runs: the sync must not then mark it
    completed and shareable from the metadata it read before."""
    from component.pubsub.access import NodeMeta

    upstream = ScriptedUpstream()
    upstream.delay = 0.3
    cache = Cache(sessions, max_items_per_node=10)
    sync = synchroniser(upstream, cache)
    node = await cache.ensure(SERVICE, NODE, None)
    running = asyncio.create_task(sync.sync(node))
    await asyncio.sleep(0.1)  # fetching
    await sync.stop_caching(cache.node(SERVICE, NODE), NodeMeta(True, "whitelist"))  # type: ignore[arg-type]
    await running
    node = cache.node(SERVICE, NODE)  # type: ignore[assignment]
    print(f"after the race: {node.sync_state}, shareable={node.shareable}")
    assert not node.serves_from_cache
    assert node.sync_state != COMPLETED
    assert await cache.items(node) == []


async def settles(
    held: Callable[[], Awaitable[list[str]]], expected: list[str], tries: int
) -> None:
    """Wait (tries x 10 ms at most) for held() to be expected, then assert it is."""
    for _ in range(tries):
        if await held() == expected:
            break
        await asyncio.sleep(0.01)
    assert await held() == expected


def items_event(*ids: str) -> NodeEvent:
    published = tuple(
        ReceivedItem(i, f"<x xmlns='urn:x'>{i}</x>", "urn:x", None, None) for i in ids
    )
    return NodeEvent("items", NODE, published)


async def test_a_node_larger_than_the_limit_is_marked_truncated(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    upstream = ScriptedUpstream()
    cache = Cache(sessions, max_items_per_node=2)
    sync = synchroniser(upstream, cache)
    node = await cache.ensure(SERVICE, NODE, None)
    await sync.sync(node)
    node = cache.node(SERVICE, NODE)  # type: ignore[assignment]
    assert node.serves_from_cache
    assert node.truncated
    assert [i.item_id for i in await cache.items(node)] == ["b", "c"]
    await sync.apply(SERVICE, items_event("d"))
    node = cache.node(SERVICE, NODE)  # type: ignore[assignment]
    assert node.truncated
    assert [i.item_id for i in await cache.items(node)] == ["c", "d"]
    await sync.apply(SERVICE, NodeEvent("purge", NODE))
    assert not cache.node(SERVICE, NODE).truncated  # type: ignore[union-attr]

    # a node that fits is not truncated; outgrowing the limit later makes it so
    upstream.items = ["a", "b"]
    await sync.sync(cache.node(SERVICE, NODE))  # type: ignore[arg-type]
    assert not cache.node(SERVICE, NODE).truncated  # type: ignore[union-attr]
    await sync.apply(SERVICE, items_event("c"))
    assert cache.node(SERVICE, NODE).truncated  # type: ignore[union-attr]
    await sync.close()  # the probes the publications started


async def test_upstream_max_items_is_mirrored_not_truncation(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Upstream drops its oldest item past pubsub#max_items without a notification;
    the cache drops it too, and still holds all that upstream does."""
    upstream = ScriptedUpstream()
    upstream.meta = open_meta(max_items="2")
    upstream.items = ["a", "b"]
    cache = Cache(sessions, max_items_per_node=10)
    sync = synchroniser(upstream, cache)
    await sync.sync(await cache.ensure(SERVICE, NODE, None))
    node = cache.node(SERVICE, NODE)
    assert node is not None
    assert node.serves_from_cache
    assert node.upstream_max_items == 2
    await sync.apply(SERVICE, items_event("c"))
    node = cache.node(SERVICE, NODE)
    assert node is not None
    assert not node.truncated
    assert [i.item_id for i in await cache.items(node)] == ["b", "c"]


async def test_a_node_whose_items_expire_is_not_cached(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    upstream = ScriptedUpstream()
    upstream.meta = open_meta(item_expire="3600")
    cache = Cache(sessions, max_items_per_node=10)
    sync = synchroniser(upstream, cache)
    await sync.sync(await cache.ensure(SERVICE, NODE, None))
    node = cache.node(SERVICE, NODE)
    assert node is not None
    assert not node.serves_from_cache
    assert await cache.items(node) == []
    assert "items" not in upstream.calls  # never fetched


async def test_a_probe_reads_the_oldest_items_of_a_cold_node_not_all_of_them(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The eviction probe took the oldest cached items from cache.items(), and the
    drop that follows read the node again the same way: for a node not in memory,
    every item (payloads included), kept in memory, pushing out the nodes clients
    read, to use one or a few of them."""
    from component.pubsub import eviction

    monkeypatch.setattr(eviction, "PROBE_DELAY", 0.01)
    upstream = ScriptedUpstream()
    upstream.items = [f"i{n:03d}" for n in range(200)]
    cache = Cache(sessions, max_items_per_node=1000)
    sync = synchroniser(upstream, cache)
    try:
        await sync.sync(await cache.ensure(SERVICE, NODE, None))
        node = cache.node(SERVICE, NODE)
        assert node is not None
        assert not cache.hot(node)  # nobody read it
        whole: list[str] = []  # nodes read whole from here on
        read_whole = cache.items

        async def items(state: NodeState) -> list[ItemRecord]:
            whole.append(state.name)
            return await read_whole(state)

        monkeypatch.setattr(cache, "items", items)
        # upstream keeps 200: it drops the oldest for the new one, without a word
        upstream.items = [*upstream.items[1:], "new"]
        upstream.by_id.clear()
        await sync.apply(SERVICE, items_event("new"))
        for _ in range(300):  # the probe, then the drop, in the background
            if upstream.by_id and not await cache.held(node, ["i000"]):
                break
            await asyncio.sleep(0.01)
        print("probe of a cold node, (ids asked, items sent):", upstream.by_id)
        print("nodes read whole meanwhile:", whole)
        assert upstream.by_id == [(1, 0)]  # the oldest, which upstream no longer has
        assert not await cache.held(node, ["i000"])  # dropped
        assert whole == []
        node = cache.node(SERVICE, NODE)
        assert node is not None
        assert not cache.hot(node)
        assert [i.item_id for i in await read_whole(node)] == upstream.items
    finally:
        await sync.wait_idle()
        await sync.close()


async def test_items_upstream_dropped_silently_are_dropped_from_the_cache(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    from component.pubsub import eviction

    monkeypatch.setattr(eviction, "PROBE_DELAY", 0.01)
    upstream = ScriptedUpstream()
    cache = Cache(sessions, max_items_per_node=10)
    sync = synchroniser(upstream, cache)
    try:
        await sync.sync(await cache.ensure(SERVICE, NODE, None))
        # upstream holds 3 at most, and drops "a" for "d" without a word
        upstream.items = ["b", "c", "d"]
        calls = len(upstream.calls)
        await sync.apply(SERVICE, items_event("d"))

        async def held() -> list[str]:
            node = cache.node(SERVICE, NODE)
            assert node is not None
            return [i.item_id for i in await cache.items(node)]

        await settles(held, ["b", "c", "d"], tries=100)
        assert upstream.calls[calls:] == ["items"]  # one probe, no re-fetch
        assert cache.node(SERVICE, NODE).serves_from_cache  # type: ignore[union-attr]

        # a burst larger than one request asks: further rounds, oldest first
        monkeypatch.setattr(eviction, "MAX_PROBED", 1)
        upstream.items = ["d", "e", "f"]
        calls = len(upstream.calls)
        await sync.apply(SERVICE, items_event("e", "f"))
        await settles(held, ["d", "e", "f"], tries=100)
        assert upstream.calls[calls:] == ["items", "items"]

        # below upstream's limit (nothing dropped), a probe costs upstream one item:
        # the oldest is still there, so nothing newer went
        monkeypatch.setattr(eviction, "MAX_PROBED", 50)
        upstream.items = ["d", "e", "f", "p1", "p2", "p3", "p4"]
        upstream.by_id.clear()
        await sync.apply(SERVICE, items_event("p1", "p2", "p3", "p4"))
        await settles(held, upstream.items, tries=100)
        for _ in range(100):
            if upstream.by_id:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # no further round
        print("probe below the limit, (ids asked, items sent upstream):", upstream.by_id)
        assert upstream.by_id == [(1, 1)]

        # a probe that fails has the node fetched again: nothing dropped stays
        upstream.items = ["e", "f", "g"]
        upstream.fail_next = 1
        calls = len(upstream.calls)
        await sync.apply(SERVICE, items_event("g"))
        await settles(held, ["e", "f", "g"], tries=200)
        assert "subscribe" in upstream.calls[calls:]  # a full sync ran
    finally:
        await sync.wait_idle()
        await sync.close()


async def test_notifications_held_back_by_a_sync_are_applied_before_it_is_served(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publication notified while the node's fetch runs is held back, then applied
    on top of what was fetched. The node was served from the cache before that
    application was written: a read then was answered without the item, which
    Herald had already received."""
    upstream = ScriptedUpstream()
    upstream.delay = 0.3
    cache = Cache(sessions, max_items_per_node=10)
    sync = synchroniser(upstream, cache)
    gate = asyncio.Event()
    writing = asyncio.Event()
    upsert = cache.upsert_items

    async def held_upsert(
        node: NodeState, items: list[ItemInput], moved: tuple[str, ...] = ()
    ) -> NodeState:
        writing.set()
        await gate.wait()  # the held-back publication's write, as a slow database
        return await upsert(node, items, moved)

    monkeypatch.setattr(cache, "upsert_items", held_upsert)
    running = asyncio.create_task(sync.sync(await cache.ensure(SERVICE, NODE, None)))
    await asyncio.sleep(0.1)  # fetching
    await sync.apply(SERVICE, items_event("d"))  # received: held back
    await asyncio.wait_for(writing.wait(), 5)
    node = cache.node(SERVICE, NODE)
    assert node is not None
    served_without_it = node.serves_from_cache and "d" not in [
        i.item_id for i in await cache.items(node)
    ]
    gate.set()
    await running
    node = cache.node(SERVICE, NODE)
    assert node is not None
    print(f"while the held-back publication was written: served without it {served_without_it}")
    assert not served_without_it
    assert node.serves_from_cache
    assert [i.item_id for i in await cache.items(node)] == ["a", "b", "c", "d"]
    await sync.close()
