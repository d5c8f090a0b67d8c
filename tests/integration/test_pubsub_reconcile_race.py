"""A comparison with upstream (component/pubsub/reconcile.py) and notifications at
the same time, on a real database with a scripted upstream (test_pubsub_sync.py's).

Notifications must not wait for upstream's answers to a comparison, and a
comparison must never undo what a notification applied meanwhile.
"""

from __future__ import annotations

import asyncio
from xml.etree import ElementTree as ET

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component.pubsub.cache import Cache
from tests.integration.test_pubsub_group_commit import ids, published, synced
from tests.integration.test_pubsub_sync import PS, SERVICE, ScriptedUpstream, reply, synchroniser

pytestmark = pytest.mark.integration

ITEMS_NS = "http://jabber.org/protocol/disco#items"


class ListingUpstream(ScriptedUpstream):
    """Also answers disco#items on a node (its item ids) and Herald's subscriptions;
    a listing waits for `gate` when one is set, answering what upstream held when
    it was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None
        self.listing = asyncio.Event()  # set once a listing was asked for

    async def as_herald(self, iq_type: str, to: str, payload: ET.Element) -> ET.Element:
        if payload.tag == f"{{{ITEMS_NS}}}query":
            held = list(self.items)
            self.listing.set()
            if self.gate is not None:
                await self.gate.wait()
            body = "".join(f'<item jid="{to}" name="{i}"/>' for i in held)
            return reply(f'<query xmlns="{ITEMS_NS}" node="{payload.get("node")}">{body}</query>')
        child = payload[0] if len(payload) else payload
        if child.tag == f"{{{PS}}}subscriptions":
            return reply(
                f'<pubsub xmlns="{PS}"><subscriptions><subscription node="{child.get("node")}"'
                ' jid="proxy.example.org" subscription="subscribed"/></subscriptions></pubsub>'
            )
        return await super().as_herald(iq_type, to, payload)


async def test_notifications_do_not_wait_for_upstream_answering_a_comparison(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Upstream is slow to list the node's items; a publication notified meanwhile
    is applied (and served) at once, and the comparison does not retract it, though
    upstream's listing predates it."""
    upstream = ListingUpstream()
    cache = Cache(sessions, max_items_per_node=10)
    sync = synchroniser(upstream, cache, reconcile_interval=1.0)
    (node,) = await synced(sync, cache, "blog")
    upstream.gate = asyncio.Event()
    comparing = sync.reconciler.comparing(node)
    await asyncio.wait_for(upstream.listing.wait(), 5)  # upstream is asked: ["a","b","c"]
    upstream.items.append("x")  # published upstream after the listing was made
    applying = asyncio.create_task(sync.apply(SERVICE, published("blog", "x")))
    done, _ = await asyncio.wait({applying}, timeout=2.0)
    waited = "applied" if done else "still waiting after 2 s"
    print(f"a notification during a comparison's upstream question: {waited}")
    upstream.gate.set()
    await comparing
    await applying
    assert done, "the notification waited for upstream to answer a comparison"
    assert await ids(cache, "blog") == ["a", "b", "c", "x"]
    assert cache.node(SERVICE, "blog").serves_from_cache  # type: ignore[union-attr]
    await sync.close()


async def test_a_comparison_still_finds_a_silent_retraction(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """An item upstream no longer lists, written before the question, is dropped;
    the node stays in service."""
    upstream = ListingUpstream()
    cache = Cache(sessions, max_items_per_node=10)
    sync = synchroniser(upstream, cache, reconcile_interval=1.0)
    (node,) = await synced(sync, cache, "blog")
    upstream.items.remove("b")  # retracted upstream, never notified
    await sync.reconciler.comparing(node)
    assert await ids(cache, "blog") == ["a", "c"]
    assert cache.node(SERVICE, "blog").serves_from_cache  # type: ignore[union-attr]
    await sync.close()
