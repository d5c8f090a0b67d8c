"""The caching proxy on real servers, with the server's own pubsub as upstream.

Each test runs on Prosody 0.12 (mod_privilege grants IQ permissions; pubsub has no RSM)
and on ejabberd 23.01 (XEP-0356 without IQ permission; pubsub with RSM). Where the two
must differ, the test says how: without IQ permission Herald refuses what it would
have to do as the user.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from component import metrics
from component.app import Herald
from component.pubsub.service import PubsubComponent
from component.storage.records import COMPLETED
from tests.conftest import (
    OWNER,
    PROXY_JID,
    SILENT_JID,
    SILENT_SECRET,
    UPSTREAM_JID,
    USERS,
    XmppServer,
)
from tests.harness.client import TestClient
from tests.harness.herald import settings_for
from tests.harness.silent import SilentComponent

pytestmark = pytest.mark.integration

PUBSUB = "http://jabber.org/protocol/pubsub"
RSM = "http://jabber.org/protocol/rsm"
ATOM = "http://www.w3.org/2005/Atom"
_seq = itertools.count()


def entry(title: str) -> ET.Element:
    element = ET.Element(f"{{{ATOM}}}entry")
    ET.SubElement(element, f"{{{ATOM}}}title").text = title
    ET.SubElement(element, f"{{{ATOM}}}content").text = f"body of {title}" + " x" * 80
    return element


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_seq)}-{id(object()) % 10000}"


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 8.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


class Owner:
    """olivia, who owns nodes on the upstream pubsub (the server's own)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.ps = client.plugin["xep_0060"]

    async def create(
        self, node: str, access: str = "open", items: int = 0, max_items: int = 1000, **cfg: str
    ) -> None:
        form = self.client.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(
            var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#node_config"
        )
        form.add_field(var="pubsub#access_model", value=access)
        form.add_field(var="pubsub#max_items", value=str(max_items))
        form.add_field(var="pubsub#notify_config", value="1")
        form.add_field(var="pubsub#notify_retract", value="1")
        form.add_field(var="pubsub#notify_delete", value="1")  # ejabberd's default is off
        for key, value in cfg.items():
            form.add_field(var=f"pubsub#{key}", value=value)
        await self.ps.create_node(UPSTREAM_JID, node, config=form, timeout=5)
        for i in range(items):
            await self.publish(node, f"item-{i:03d}", f"title {i}")

    async def publish(self, node: str, item_id: str, title: str) -> None:
        await self.ps.publish(UPSTREAM_JID, node, id=item_id, payload=entry(title), timeout=5)

    async def configure(self, node: str, **cfg: str) -> None:
        form = self.client.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(
            var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#node_config"
        )
        for key, value in cfg.items():
            form.add_field(var=f"pubsub#{key}", value=value)
        await self.ps.set_node_config(UPSTREAM_JID, node, form, timeout=5)


async def get_items(
    client: TestClient,
    node: str,
    to: str = PROXY_JID,
    max_items: int | None = None,
    rsm: dict[str, str] | None = None,
    ids: tuple[str, ...] = (),
) -> tuple[list[str], ET.Element | None, Any]:
    """Item ids, the RSM <set/> and the reply, for an items request sent to `to`."""
    iq = client.make_iq_get(ito=to)
    pubsub = ET.SubElement(iq.xml, f"{{{PUBSUB}}}pubsub")
    items = ET.SubElement(pubsub, f"{{{PUBSUB}}}items", {"node": node})
    if max_items is not None:
        items.set("max_items", str(max_items))
    for item_id in ids:
        ET.SubElement(items, f"{{{PUBSUB}}}item", {"id": item_id})
    if rsm is not None:
        rsm_el = ET.SubElement(pubsub, f"{{{RSM}}}set")
        for key, value in rsm.items():
            ET.SubElement(rsm_el, f"{{{RSM}}}{key}").text = value
    reply = await iq.send(timeout=5)
    found = reply.xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}items")
    assert found is not None
    got = [i.get("id", "") for i in found.findall(f"{{{PUBSUB}}}item")]
    return got, reply.xml.find(f"{{{PUBSUB}}}pubsub/{{{RSM}}}set"), reply


def proxy_of(herald: Herald) -> PubsubComponent:
    (service,) = [s for s in herald.services if isinstance(s, PubsubComponent)]
    return service


def requests(herald: Herald, kind: str, result: str) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(
        "herald_pubsub_requests_total", {"kind": kind, "result": result}
    )
    return value or 0.0


def sample(name: str, **labels: str) -> float | None:
    """A sample of the process-wide registry: compare it with one taken before."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels)


async def start_proxy(server: XmppServer, db_url: str, **pubsub: Any) -> Herald:
    settings = settings_for(
        server,
        db_url,
        multicast={"enabled": False},
        pubsub={
            "rules": [{"node": "blog*", "sync": True, "parser": "atom"}],
            "max_items_per_node": 50,
            **pubsub,
        },
        metrics={"listen": ""},
    )
    herald = Herald(settings)
    await herald.start()
    await asyncio.wait_for(herald.wait_connected(), 10)
    if server.grants_iq_privileges:
        # The privilege advertisement follows the handshake: wait for it, or the
        # first privileged request would be refused.
        async def advertised() -> bool:
            return bool(proxy_of(herald).privileges)

        await until(advertised)
    else:
        await asyncio.sleep(0.3)  # whatever the server advertises has arrived
    return herald


@pytest.fixture
async def clients(server: XmppServer) -> AsyncIterator[dict[str, TestClient]]:
    made = {}
    for name in ("olivia", "alice", "bob"):
        client = TestClient(
            f"{name}@localhost/p{next(_seq)}",
            USERS[name],
            plugins=("xep_0030", "xep_0004", "xep_0060", "xep_0059"),
        )
        await client.start(server.c2s_port)
        made[name] = client
    dave = TestClient(
        f"dave@remote.localhost/p{next(_seq)}",
        USERS["dave@remote.localhost"],
        plugins=("xep_0030", "xep_0004", "xep_0060"),
    )
    await dave.start(server.c2s_port)
    made["dave"] = dave
    yield made
    for client in made.values():
        await client.stop()


async def refused(call: Awaitable[Any]) -> None:
    """The request is refused with forbidden and a reason (no XEP-0356 IQ permission)."""
    with pytest.raises(IqError) as info:
        await call
    assert info.value.iq["error"]["condition"] == "forbidden"
    assert "XEP-0356" in info.value.iq["error"]["text"]


async def reads_pep_as_the_user(olivia: TestClient, server: XmppServer) -> None:
    """olivia's PEP read at olivia\\40localhost@PROXY_JID: served only as the user (PEP
    is never provably open), so refused where the server grants no IQ permission."""
    await olivia.plugin["xep_0060"].publish(
        OWNER, "urn:example:pep", id="pep1", payload=entry("pep"), timeout=5
    )
    pep = get_items(olivia, "urn:example:pep", to=f"olivia\\40localhost@{PROXY_JID}")
    if server.grants_iq_privileges:
        got, _, _ = await pep
        assert got == ["pep1"]
    else:
        await refused(pep)


@pytest.fixture
async def proxy(server: XmppServer, db_url: str) -> AsyncIterator[Herald]:
    herald = await start_proxy(server, db_url)
    yield herald
    await herald.stop()


def fetch_answers(herald: Herald) -> list[int]:
    """From now on, the number of items in each answer upstream gives to a fetch of
    Herald's (an items request with RSM: a reader's miss forwarded is not one)."""
    upstream = proxy_of(herald).upstream
    ask = upstream.as_herald
    sent: list[int] = []

    async def counting(iq_type: str, to: str, payload: ET.Element) -> ET.Element:
        reply = await ask(iq_type, to, payload)
        fetch = payload.find(f"{{{RSM}}}set") is not None
        if fetch and payload.find(f"{{{PUBSUB}}}items") is not None:
            sent.append(len(list(reply.iter(f"{{{PUBSUB}}}item"))))
        return reply

    upstream.as_herald = counting  # type: ignore[method-assign]
    return sent


async def cache_node(herald: Herald, reader: TestClient, node: str, timeout: float = 8.0) -> None:
    """Ask for the node once through the proxy (the miss that starts its sync), then
    wait until Herald serves it from the cache."""
    await get_items(reader, node)
    await until(synced(herald, node), timeout=timeout)


def synced(herald: Herald, node: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        service = proxy_of(herald)
        state = service.cache.node(UPSTREAM_JID, node)
        # Completed is set before the sync's last steps (lease release, gauges): wait
        # for those too, or the next step races them (upkeep skips syncing nodes).
        return (
            state is not None
            and state.sync_state == COMPLETED
            and not service.synchroniser.syncing(state)
        )

    return check


async def test_miss_then_hit(proxy: Herald, clients: dict[str, TestClient]) -> None:
    owner = Owner(clients["olivia"])
    node = unique("blog-mh")
    await owner.create(node, items=5)
    hits, misses = requests(proxy, "items", "hit"), requests(proxy, "items", "miss")
    got, _, _ = await get_items(clients["alice"], node)
    assert got == [f"item-{i:03d}" for i in range(5)]
    assert requests(proxy, "items", "miss") == misses + 1
    await until(synced(proxy, node))
    got, _, reply = await get_items(clients["alice"], node, max_items=2)
    assert got == ["item-003", "item-004"]
    assert requests(proxy, "items", "hit") == hits + 1
    # the payload comes back as it was published
    titles = [t.text for t in reply.xml.iter(f"{{{ATOM}}}title")]
    assert titles == ["title 3", "title 4"]
    # by id, several at once
    got, _, _ = await get_items(clients["alice"], node, ids=("item-001", "item-003", "nope"))
    assert got == ["item-001", "item-003"]


async def test_notifications_keep_the_cache_in_sync(
    proxy: Herald, clients: dict[str, TestClient]
) -> None:
    owner = Owner(clients["olivia"])
    node = unique("blog-sync")
    await owner.create(node, items=3)
    await cache_node(proxy, clients["alice"], node)
    alice = clients["alice"]

    async def ids() -> list[str]:
        return (await get_items(alice, node))[0]

    await owner.publish(node, "new", "fresh")
    await until(lambda: _eq(ids(), ["item-000", "item-001", "item-002", "new"]))
    await owner.ps.retract(UPSTREAM_JID, node, "item-001", notify=True, timeout=5)
    await until(lambda: _eq(ids(), ["item-000", "item-002", "new"]))
    await owner.ps.purge(UPSTREAM_JID, node, timeout=5)
    await until(lambda: _eq(ids(), []))
    assert proxy_of(proxy).cache.node(UPSTREAM_JID, node).serves_from_cache  # type: ignore[union-attr]
    hits = requests(proxy, "items", "hit")
    assert await ids() == []
    assert requests(proxy, "items", "hit") == hits + 1  # served from the cache

    await owner.ps.delete_node(UPSTREAM_JID, node, timeout=5)

    async def gone() -> bool:
        return proxy_of(proxy).cache.node(UPSTREAM_JID, node) is None

    await until(gone)


async def test_items_upstream_drops_silently_leave_the_cache_too(
    proxy: Herald, clients: dict[str, TestClient]
) -> None:
    """Past pubsub#max_items upstream drops the oldest items; Prosody says nothing, and
    neither server publishes the limit. The cache still ends up holding what upstream
    holds."""
    owner = Owner(clients["olivia"])
    node = unique("blog-small")
    await owner.create(node, items=3, max_items=3)
    await cache_node(proxy, clients["alice"], node)
    await owner.publish(node, "new-1", "one")
    await owner.publish(node, "new-2", "two")
    upstream = await owner.ps.get_items(UPSTREAM_JID, node, timeout=5)
    expected = [i["id"] for i in upstream["pubsub"]["items"]]
    assert sorted(expected) == ["item-002", "new-1", "new-2"]
    cache = proxy_of(proxy).cache

    async def cache_matches_upstream() -> bool:
        state = cache.node(UPSTREAM_JID, node)
        if state is None or not state.serves_from_cache:
            return False
        return sorted(i.item_id for i in await cache.items(state)) == sorted(expected)

    await until(cache_matches_upstream)
    hits = requests(proxy, "items", "hit")
    got, _, _ = await get_items(clients["alice"], node)
    assert sorted(got) == sorted(expected)
    assert requests(proxy, "items", "hit") == hits + 1


async def test_a_republished_item_takes_the_place_upstream_gives_it(
    proxy: Herald, clients: dict[str, TestClient]
) -> None:
    """Prosody moves an item published again to the newest place, ejabberd keeps its
    place; answers from the cache follow upstream either way."""
    owner = Owner(clients["olivia"])
    node = unique("blog-edit")
    await owner.create(node, items=3)
    await cache_node(proxy, clients["alice"], node)
    cache = proxy_of(proxy).cache

    async def upstream_order() -> list[str]:
        found = await owner.ps.get_items(UPSTREAM_JID, node, timeout=5)
        return [i["id"] for i in found["pubsub"]["items"]]

    for round_ in range(2):  # the first teaches Herald the service's order
        await owner.publish(node, f"item-00{round_}", f"edited {round_}")
        expected = await upstream_order()

        async def follows_upstream(expected: list[str] = expected) -> bool:
            state = cache.node(UPSTREAM_JID, node)
            assert state is not None
            return [i.item_id for i in await cache.items(state)] == expected

        await until(follows_upstream)
        hits = requests(proxy, "items", "hit")
        got, _, reply = await get_items(clients["alice"], node, max_items=1)
        assert got == expected[-1:]
        assert requests(proxy, "items", "hit") == hits + 1
    titles = [t.text for t in reply.xml.iter(f"{{{ATOM}}}title")]
    assert titles in (["edited 1"], ["title 2"])


async def test_a_sync_reads_no_more_than_the_limit_and_one(
    server: XmppServer, db_url: str, clients: dict[str, TestClient]
) -> None:
    """Prosody 0.12 ignores RSM: a fetch without max_items got every item of the
    node in one reply (a 100,000-item node stalled Prosody for 45 s). Herald keeps the
    newest max_items_per_node, and one more tells it that older ones are left."""
    owner = Owner(clients["olivia"])
    node = unique("blog-huge")
    await owner.create(node, items=30)
    herald = await start_proxy(server, db_url, max_items_per_node=3)
    sent = fetch_answers(herald)
    try:
        await cache_node(herald, clients["alice"], node)
        state = proxy_of(herald).cache.node(UPSTREAM_JID, node)
        assert state is not None
        print(f"items upstream sent for a 30-item node, Herald keeping 3: {sent}")
        assert state.truncated
        assert [i.item_id for i in await proxy_of(herald).cache.items(state)] == [
            "item-027", "item-028", "item-029"
        ]  # fmt: skip
        assert sent == [4]
    finally:
        await herald.stop()


async def test_a_node_beyond_max_items_per_node_is_never_served_short(
    server: XmppServer, db_url: str, clients: dict[str, TestClient]
) -> None:
    """The cache keeps the newest 3 of 5: what those answer is a hit, the rest is read
    upstream, so no reply is missing items."""
    owner = Owner(clients["olivia"])
    node = unique("blog-big")
    await owner.create(node, items=5)
    herald = await start_proxy(server, db_url, max_items_per_node=3)
    try:
        alice = clients["alice"]
        await cache_node(herald, alice, node)
        state = proxy_of(herald).cache.node(UPSTREAM_JID, node)
        assert state is not None
        assert state.truncated
        hits, misses = requests(herald, "items", "hit"), requests(herald, "items", "miss")
        got, _, _ = await get_items(alice, node, max_items=2)
        assert got == ["item-003", "item-004"]
        got, _, _ = await get_items(alice, node, ids=("item-002", "item-004"))
        assert got == ["item-002", "item-004"]
        assert requests(herald, "items", "hit") == hits + 2
        got, _, _ = await get_items(alice, node)
        assert got == [f"item-{i:03d}" for i in range(5)]
        got, rsm, _ = await get_items(alice, node, rsm={"max": "2", "index": "0"})
        assert got == ["item-000", "item-001"]
        assert rsm is not None
        assert rsm.findtext(f"{{{RSM}}}count") == "5"
        got, _, _ = await get_items(alice, node, ids=("item-000",))
        assert got == ["item-000"]
        assert requests(herald, "items", "miss") == misses + 3
        assert requests(herald, "items", "hit") == hits + 2
    finally:
        await herald.stop()


async def test_a_node_with_an_item_over_max_item_bytes_is_served_not_cached(
    proxy: Herald, clients: dict[str, TestClient]
) -> None:
    """Issue 11: with a sync rule matching, any open node was cached, whatever its items'
    size. With the defaults, an item over pubsub.max_item_bytes (64 KiB) keeps its node
    out of the cache: served from upstream, whole, never partly."""
    owner = Owner(clients["olivia"])
    node = unique("blog-huge")
    await owner.create(node, items=1)
    huge = entry("huge")
    huge.find(f"{{{ATOM}}}content").text = "z" * 70_000  # type: ignore[union-attr]
    await owner.ps.publish(UPSTREAM_JID, node, id="huge", payload=huge, timeout=5)
    alice = clients["alice"]
    got, _, _ = await get_items(alice, node)
    assert got == ["item-000", "huge"]
    service = proxy_of(proxy)

    async def given_up() -> bool:
        state = service.cache.node(UPSTREAM_JID, node)
        return state is not None and state.sync_state == "error"

    await until(given_up)
    hits = requests(proxy, "items", "hit")
    got, _, reply = await get_items(alice, node)
    size = max(len(c.text or "") for c in reply.xml.iter(f"{{{ATOM}}}content"))
    print("after the sync gave up:", got, "content chars:", size)
    assert got == ["item-000", "huge"]
    assert size == 70_000
    assert requests(proxy, "items", "hit") == hits  # from upstream, not the cache
    state = service.cache.node(UPSTREAM_JID, node)
    assert state is not None
    assert not state.serves_from_cache


async def test_a_request_over_max_stanza_bytes_is_refused_unforwarded(
    server: XmppServer, db_url: str, clients: dict[str, TestClient]
) -> None:
    owner = Owner(clients["olivia"])
    node = unique("blog-size")
    await owner.create(node, items=1)
    herald = await start_proxy(server, db_url, max_stanza_bytes=4096)
    try:
        big = entry("big")
        big.find(f"{{{ATOM}}}content").text = "z" * 5000  # type: ignore[union-attr]
        with pytest.raises(IqError) as info:
            await (
                clients["olivia"]
                .plugin["xep_0060"]
                .publish(PROXY_JID, node, id="big", payload=big, timeout=5)
            )
        error = info.value.iq["error"]
        print("publish through the proxy:", error["condition"], error["text"])
        assert error["condition"] == "not-acceptable"
        assert "pubsub.max_stanza_bytes" in error["text"]
        got, _, _ = await get_items(clients["alice"], node)  # a small request: served
        assert got == ["item-000"]  # and the big item never reached upstream
    finally:
        await herald.stop()


async def test_a_node_no_longer_open_is_dropped(
    proxy: Herald, clients: dict[str, TestClient]
) -> None:
    """Prosody 0.12 says nothing when a node closes; within seconds the cache stops
    serving it, drops its items, and non-members are refused."""
    owner = Owner(clients["olivia"])
    node = unique("blog-closing")
    await owner.create(node, items=2)
    await cache_node(proxy, clients["alice"], node)
    cache = proxy_of(proxy).cache
    await owner.configure(node, access_model="whitelist")

    async def not_cached() -> bool:
        with contextlib.suppress(IqError):
            await get_items(clients["bob"], node)
        state = cache.node(UPSTREAM_JID, node)
        # it stops being served first, then its items go
        return state is not None and not state.serves_from_cache and not await cache.items(state)

    await until(not_cached, timeout=10)
    state = cache.node(UPSTREAM_JID, node)
    assert state is not None
    assert await cache.items(state) == []
    with pytest.raises(IqError) as info:
        await get_items(clients["bob"], node)
    assert not info.value.iq.xml.findall(f".//{{{PUBSUB}}}item")


async def test_a_miss_read_as_herald_stops_when_the_node_closes(
    proxy: Herald, clients: dict[str, TestClient]
) -> None:
    """A node no rule caches, once seen open, is read upstream as Herald; when it
    closes, non-members are refused within the few seconds that knowledge lasts."""
    from component.pubsub.node_metadata import OPEN_FOR

    owner = Owner(clients["olivia"])
    node = unique("feed-closing")
    await owner.create(node, items=2)
    got, _, _ = await get_items(clients["bob"], node)
    assert got == ["item-000", "item-001"]
    memo = proxy_of(proxy).open_nodes

    async def known_open() -> bool:
        return memo.known((UPSTREAM_JID, node), asyncio.get_running_loop().time()) == "open"

    await until(known_open)
    await owner.configure(node, access_model="whitelist")

    async def refused_to_bob() -> bool:
        try:
            got, _, _ = await get_items(clients["bob"], node)
        except IqError:
            return True
        assert got == ["item-000", "item-001"]  # still open for bob, in the window
        return False

    await until(refused_to_bob, timeout=OPEN_FOR + 3)
    with pytest.raises(IqError) as info:
        await get_items(clients["bob"], node)
    assert not info.value.iq.xml.findall(f".//{{{PUBSUB}}}item")
    assert proxy_of(proxy).cache.node(UPSTREAM_JID, node) is None  # no rule: never cached


async def _eq(value: Awaitable[list[str]], expected: list[str]) -> bool:
    return await value == expected


async def test_catches_up_after_a_restart(
    server: XmppServer, db_url: str, clients: dict[str, TestClient]
) -> None:
    owner = Owner(clients["olivia"])
    node = unique("blog-restart")
    await owner.create(node, items=2)
    herald = await start_proxy(server, db_url)
    try:
        await cache_node(herald, clients["alice"], node)
    finally:
        await herald.stop()
    await owner.publish(node, "while-down", "missed notification")
    await owner.ps.retract(UPSTREAM_JID, node, "item-000", notify=True, timeout=5)
    # The gauges are process-wide and still hold what the first Herald set: clear them,
    # so that only the new Herald's start-up can set them.
    metrics.PUBSUB_CACHED_NODES.labels(sync_state="completed").set(-1)
    herald = await start_proxy(server, db_url)
    try:
        # the gauges reflect the database before any request: the one node
        assert sample("herald_pubsub_cached_nodes", sync_state="completed") == 1

        async def caught_up() -> bool:
            state = proxy_of(herald).cache.node(UPSTREAM_JID, node)
            if state is None or not state.serves_from_cache:
                return False
            items = await proxy_of(herald).cache.items(state)
            return [i.item_id for i in items] == ["item-001", "while-down"]

        await until(caught_up)
        hits = requests(herald, "items", "hit")
        got, _, _ = await get_items(clients["alice"], node)
        assert got == ["item-001", "while-down"]
        assert requests(herald, "items", "hit") == hits + 1
    finally:
        await herald.stop()


async def test_items_of_a_node_that_does_not_exist_are_item_not_found(
    server: XmppServer, proxy: Herald, clients: dict[str, TestClient]
) -> None:
    """As XEP-0060 asks, on both servers: relayed from upstream where Herald reads as
    the user, found by Herald's own check where it may not (ejabberd 23.01)."""
    for node in (unique("blog-none"), unique("feed-none")):
        for _ in range(2):  # and again, once Herald has looked at the node itself
            with pytest.raises(IqError) as info:
                await get_items(clients["alice"], node)
            assert info.value.iq["error"]["condition"] == "item-not-found"
            if not server.grants_iq_privileges:
                assert node in info.value.iq["error"]["text"]  # Herald's own answer


async def test_whitelist_node_leaks_nothing(
    server: XmppServer, proxy: Herald, clients: dict[str, TestClient]
) -> None:
    owner = Owner(clients["olivia"])
    node = unique("blog-private")
    await owner.create(node, access="whitelist", items=3)
    for reader in ("bob", "dave"):
        with pytest.raises(IqError) as info:
            await get_items(clients[reader], node)
        assert info.value.iq["type"] == "error"
        assert not info.value.iq.xml.findall(f".//{{{PUBSUB}}}item")
    await asyncio.sleep(0.3)
    state = proxy_of(proxy).cache.node(UPSTREAM_JID, node)
    assert state is None or not state.serves_from_cache
    if state is not None:
        assert await proxy_of(proxy).cache.items(state) == []
    # the owner, reading through the proxy as herself, gets her items; without IQ
    # permission (ejabberd 23.01) Herald cannot read as her, and refuses
    if not server.grants_iq_privileges:
        await refused(get_items(clients["olivia"], node))
        return
    got, _, _ = await get_items(clients["olivia"], node)
    assert got == ["item-000", "item-001", "item-002"]


async def test_writes_go_upstream_as_the_user(
    server: XmppServer, proxy: Herald, clients: dict[str, TestClient]
) -> None:
    owner = Owner(clients["olivia"])
    node = unique("board")
    await owner.create(node, publish_model="publishers")
    # alice may publish; Herald may not: only a request made as alice can succeed
    await owner.ps.modify_affiliations(
        UPSTREAM_JID, node, affiliations=[("alice@localhost", "publisher")], timeout=5
    )
    alice = clients["alice"]
    publish = alice.plugin["xep_0060"].publish(
        PROXY_JID, node, id="from-alice", payload=entry("hello"), timeout=5
    )
    if not server.grants_iq_privileges:
        # ejabberd 23.01: no IQ permission, so no write can go as alice; and none
        # ever goes as Herald
        await refused(publish)
        upstream = await owner.ps.get_items(UPSTREAM_JID, node, timeout=5)
        assert list(upstream["pubsub"]["items"]) == []
        return
    await publish
    upstream = await owner.ps.get_items(UPSTREAM_JID, node, timeout=5)
    items = upstream["pubsub"]["items"]
    assert [i["id"] for i in items] == ["from-alice"]
    # bob has no affiliation: his publish through the proxy fails upstream, as it
    # should, and the condition comes back as upstream gave it
    with pytest.raises(IqError) as info:
        await (
            clients["bob"]
            .plugin["xep_0060"]
            .publish(PROXY_JID, node, id="from-bob", payload=entry("no"), timeout=5)
        )
    assert info.value.iq["error"]["condition"] == "forbidden"
    assert not info.value.iq["error"]["text"]  # not Herald's own refusal
    # a user of a host that grants Herald nothing is refused, never served as Herald
    with pytest.raises(IqError) as info:
        await (
            clients["dave"]
            .plugin["xep_0060"]
            .publish(PROXY_JID, node, id="from-dave", payload=entry("no"), timeout=5)
        )
    assert info.value.iq["error"]["condition"] == "forbidden"
    assert info.value.iq["error"]["text"]


async def test_escaped_addressing(
    server: XmppServer, proxy: Herald, clients: dict[str, TestClient]
) -> None:
    owner = Owner(clients["olivia"])
    node = unique("plain-esc")
    await owner.create(node, items=2)
    # pubsub-origin.localhost@pubsub.localhost proxies that service explicitly
    got, _, reply = await get_items(clients["alice"], node, to=f"{UPSTREAM_JID}@{PROXY_JID}")
    assert got == ["item-000", "item-001"]
    assert reply["from"] == f"{UPSTREAM_JID}@{PROXY_JID}"
    # olivia's PEP, as olivia\40localhost@pubsub.localhost
    await reads_pep_as_the_user(clients["olivia"], server)
    # a bad escaped target is an error, not a crash
    with pytest.raises(IqError) as info:
        await get_items(clients["alice"], node, to=f"bad\\20@{PROXY_JID}")
    assert info.value.iq["error"]["condition"] == "item-not-found"


@pytest.mark.parametrize("cached", [True, False], ids=["hit", "miss"])
async def test_rsm_pages(
    server: XmppServer, proxy: Herald, clients: dict[str, TestClient], cached: bool
) -> None:
    """RSM on a cached node (Herald pages), and on a miss: through Prosody, which ignores
    RSM, Herald pages the answer itself; ejabberd pages its own answer, which Herald
    relays with ejabberd's anchors (timestamps, not item ids)."""
    owner = Owner(clients["olivia"])
    node = unique("blog-rsm" if cached else "plain-rsm")
    await owner.create(node, items=25)
    alice = clients["alice"]
    if cached:
        await cache_node(proxy, alice, node)
    ids = [f"item-{i:03d}" for i in range(25)]
    hits = requests(proxy, "items", "hit")
    got, rsm, _ = await get_items(alice, node, rsm={"max": "10"})
    assert got == ids[:10]
    assert rsm is not None
    assert rsm.findtext(f"{{{RSM}}}count") == "25"
    assert rsm.find(f"{{{RSM}}}first").get("index") == "0"  # type: ignore[union-attr]
    last = rsm.findtext(f"{{{RSM}}}last")
    assert last is not None
    got, rsm, _ = await get_items(alice, node, rsm={"max": "10", "after": last})
    assert got == ids[10:20]
    got, _, _ = await get_items(alice, node, rsm={"max": "10", "before": ""})
    assert got == ids[15:]
    got, rsm, _ = await get_items(alice, node, rsm={"max": "0"})
    assert got == []
    assert rsm is not None
    assert rsm.findtext(f"{{{RSM}}}count") == "25"
    herald_pages = cached or server.name == "prosody"
    if herald_pages:
        got, _, _ = await get_items(alice, node, rsm={"max": "5", "index": "20"})
        assert got == ids[20:]
        with pytest.raises(IqError) as info:
            await get_items(alice, node, rsm={"max": "10", "after": "no-such-item"})
        assert info.value.iq["error"]["condition"] == "item-not-found"
    # the five answered pages above, when Herald serves them from its cache
    assert requests(proxy, "items", "hit") - hits == (5 if cached else 0)


async def test_sync_pages_through_an_rsm_upstream(
    server: XmppServer, db_url: str, clients: dict[str, TestClient]
) -> None:
    """ejabberd has RSM: the sync fetches 230 items in pages of 100 (newest first);
    Prosody has none: one request returns them all. Either way the cache holds all."""
    from component.pubsub import fetching

    owner = Owner(clients["olivia"])
    node = unique("blog-big")
    await owner.create(node, items=230)
    herald = await start_proxy(server, db_url, max_items_per_node=1000)
    sent = fetch_answers(herald)
    try:
        await cache_node(herald, clients["alice"], node, timeout=20)
        proxy_service = proxy_of(herald)
        print(f"items in each answer to the sync's fetch: {sent}")
        assert sent == ([100, 100, 30] if server.name == "ejabberd" else [230])
        state = proxy_service.cache.node(UPSTREAM_JID, node)
        assert state is not None
        items = await proxy_service.cache.items(state)
        assert [i.item_id for i in items] == [f"item-{i:03d}" for i in range(230)]
        assert fetching.PAGE < 230
        got, _, _ = await get_items(clients["alice"], node, max_items=3)
        assert got == ["item-227", "item-228", "item-229"]
    finally:
        await herald.stop()


async def test_disco_is_proxied_with_rsm_added(
    proxy: Herald, clients: dict[str, TestClient]
) -> None:
    info = await clients["alice"].plugin["xep_0030"].get_info(jid=PROXY_JID, timeout=5)
    features = info["disco_info"]["features"]
    assert "http://jabber.org/protocol/pubsub#rsm" in features
    assert "http://jabber.org/protocol/pubsub#publish" in features  # upstream's own
    assert ("pubsub", "service") in {(i[0], i[1]) for i in info["disco_info"]["identities"]}


async def test_a_silent_upstream_gets_remote_server_timeout(
    server: XmppServer, db_url: str, clients: dict[str, TestClient]
) -> None:
    silent = SilentComponent(SILENT_JID, SILENT_SECRET, server.port_of(SILENT_JID))
    await silent.start()
    herald = await start_proxy(server, db_url, upstream_timeout=1.0)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(IqError) as info:
            await get_items(clients["alice"], "anything", to=f"{SILENT_JID}@{PROXY_JID}")
        assert info.value.iq["error"]["condition"] == "remote-server-timeout"
        assert info.value.iq["error"]["text"]
        assert loop.time() - started < 3
        # it did reach the upstream, which said nothing: not even to the disco#info that
        # tells Herald whether a host of the local server is a pubsub service
        assert silent.received >= 1
    finally:
        await herald.stop()
        await silent.stop()


async def test_parsed_entries_are_stored_beside_the_raw_xml(
    proxy: Herald, clients: dict[str, TestClient]
) -> None:
    from component.storage import pubsub_item_reads

    owner = Owner(clients["olivia"])
    node = unique("blog-parsed")
    await owner.create(node, items=2)
    await cache_node(proxy, clients["alice"], node)
    cache = proxy_of(proxy).cache
    state = cache.node(UPSTREAM_JID, node)
    assert state is not None
    async with cache.sessions() as session:
        stored = await pubsub_item_reads.get_items_by_ids(session, state.id, ["item-001"])
    assert stored[0].parsed is not None
    assert stored[0].parsed["title"] == "title 1"
    assert stored[0].data.startswith('<entry xmlns="http://www.w3.org/2005/Atom">')


@pytest.mark.parametrize(
    "body",
    [
        # a second action smuggled behind a foreign-namespace first child
        f'<pubsub xmlns="{PUBSUB}"><items xmlns="urn:x" node="{{secret}}"/>'
        '<items node="{open}"/></pubsub>',
        # two payloads in one IQ
        f'<pubsub xmlns="{PUBSUB}"><items node="{{open}}"/></pubsub>'
        '<query xmlns="http://jabber.org/protocol/disco#info"/>',
        '<query xmlns="http://jabber.org/protocol/muc#admin"/>'
        '<query xmlns="http://jabber.org/protocol/disco#info"/>',
    ],
    ids=["foreign-first-child", "pubsub-and-disco", "disco-behind-other"],
)
async def test_smuggled_requests_are_refused(
    proxy: Herald, clients: dict[str, TestClient], body: str
) -> None:
    owner = Owner(clients["olivia"])
    secret, public = unique("blog-secret"), unique("blog-public")
    await owner.create(secret, access="whitelist", items=1)
    await owner.create(public, items=1)
    iq = clients["bob"].make_iq_get(ito=PROXY_JID)
    for child in ET.fromstring(f"<w>{body.format(secret=secret, open=public)}</w>"):
        iq.xml.append(child)
    with pytest.raises(IqError) as info:
        await iq.send(timeout=5)
    assert info.value.iq["error"]["condition"] == "bad-request"
    assert not info.value.iq.xml.findall(f".//{{{PUBSUB}}}item")


async def test_idle_nodes_are_unsubscribed_and_dropped(
    proxy: Herald, clients: dict[str, TestClient]
) -> None:
    from datetime import timedelta

    owner = Owner(clients["olivia"])
    node = unique("blog-idle")
    await owner.create(node, items=2)
    await cache_node(proxy, clients["alice"], node)
    service = proxy_of(proxy)

    async def subscribers() -> list[str]:
        reply = await owner.ps.get_node_subscriptions(UPSTREAM_JID, node, timeout=5)
        return [s["jid"].bare for s in reply["pubsub_owner"]["subscriptions"]]

    assert PROXY_JID in await subscribers()
    # the gauge is process-wide: it must go from this node's 2 items to 0
    items_before = sample("herald_pubsub_cached_items")
    # one upkeep round with an idle limit of zero: every node is idle
    await service.synchroniser.upkeep(timedelta(0))
    assert service.cache.node(UPSTREAM_JID, node) is None
    assert PROXY_JID not in await subscribers()
    assert (items_before, sample("herald_pubsub_cached_items")) == (2, 0)


def _disco_items(reply: Any) -> list[tuple[str | None, str | None]]:
    query = reply.xml.find("{http://jabber.org/protocol/disco#items}query")
    assert query is not None
    return [(i.get("jid"), i.get("node")) for i in query]


@pytest.mark.parametrize("escaped", [False, True], ids=["bare", "escaped"])
async def test_listings_point_at_the_proxy_address_queried(
    proxy: Herald, clients: dict[str, TestClient], escaped: bool
) -> None:
    """disco#items names the proxy address that was asked, never upstream: a client
    that opens a listed node reads it through the proxy (issue 13)."""
    owner = Owner(clients["olivia"])
    node = unique("plain-list")
    await owner.create(node, items=1)
    address = f"{UPSTREAM_JID}@{PROXY_JID}" if escaped else PROXY_JID
    disco = clients["alice"].plugin["xep_0030"]
    reply = await disco.get_items(jid=address, timeout=5)
    listed = _disco_items(reply)
    print("listed at", address, ":", len(listed), "items, jids", {j for j, _ in listed})
    assert (address, node) in listed
    assert {j for j, _ in listed} == {address}
    info = await disco.get_info(jid=address, timeout=5)
    names = {i[3] for i in info["disco_info"]["identities"] if i[0] == "pubsub"}
    assert names == {"Herald pubsub proxy"}
    features = set(info["disco_info"]["features"])
    for feature in ("rsm", "subscribe", "subscription-options", "publish"):
        assert f"http://jabber.org/protocol/pubsub#{feature}" in features


async def test_local_hosts_that_are_not_pubsub_services_are_never_targets(
    server: XmppServer, db_url: str, clients: dict[str, TestClient]
) -> None:
    """The server's own domain and a local component whose disco#info shows no pubsub
    service are refused as escaped targets, and no pubsub request reaches them; the
    upstream service and an account's PEP (a user part) are still proxied."""
    component = SilentComponent(
        SILENT_JID, SILENT_SECRET, server.port_of(SILENT_JID), identity=("conference", "text")
    )
    await component.start()
    herald = await start_proxy(server, db_url, upstream_timeout=2.0)
    try:
        owner = Owner(clients["olivia"])
        node = unique("plain-local")
        await owner.create(node, items=1)
        alice = clients["alice"]
        for target in ("localhost", SILENT_JID):
            for _ in range(2):  # the second is answered from what the first learnt
                with pytest.raises(IqError) as info:
                    await get_items(alice, node, to=f"{target}@{PROXY_JID}")
                error = info.value.iq["error"]
                print(f"items at {target}@{PROXY_JID}: {error['condition']}: {error['text']}")
                assert error["condition"] == "service-unavailable"
                assert "not a pubsub service" in error["text"]
            # a write (as the user) and a disco query are refused the same way
            writes = alice.plugin["xep_0060"].publish(
                f"{target}@{PROXY_JID}", node, id="x", payload=entry("no"), timeout=5
            )
            with pytest.raises(IqError) as info:
                await writes
            assert info.value.iq["error"]["condition"] == "service-unavailable"
        seen = component.iqs
        print(f"IQs the non-pubsub component received: {len(seen)}")
        assert not [iq for iq in seen if PUBSUB in iq]
        assert len([iq for iq in seen if "disco#info" in iq]) == 1  # learnt once, kept
        # the upstream pubsub service, bare and escaped, is still proxied
        got, _, _ = await get_items(alice, node, to=f"{UPSTREAM_JID}@{PROXY_JID}")
        assert got == ["item-000"]
        await reads_pep_as_the_user(clients["olivia"], server)
    finally:
        await herald.stop()
        await component.stop()
