"""Synchronisation outcomes on a real database, with a scripted upstream.

The end-to-end paths run against Prosody in test_pubsub_proxy.py; failures are hard
to provoke there, so here the upstream answers from a script.
"""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree import ElementTree as ET

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component.pubsub.cache import Cache
from component.pubsub.rules import AnalyserRule, Registry
from component.pubsub.sync import Synchroniser
from component.pubsub.upstream import UpstreamError
from component.storage import pubsub_repo as repo
from component.storage.records import COMPLETED, ERROR, ItemInput
from component.xmpp.errors import make_error

pytestmark = pytest.mark.integration

PS = "http://jabber.org/protocol/pubsub"
INFO = "http://jabber.org/protocol/disco#info"
SERVICE, NODE = "pubsub.example.org", "blog"


def reply(xml: str) -> ET.Element:
    return ET.fromstring(f'<iq xmlns="jabber:component:accept" type="result">{xml}</iq>')


OPEN_META = reply(
    f"""<query xmlns="{INFO}" node="{NODE}"><x xmlns="jabber:x:data" type="result">
          <field var="FORM_TYPE"><value>http://jabber.org/protocol/pubsub#meta-data</value></field>
          <field var="pubsub#access_model"><value>open</value></field></x></query>"""
)


class ScriptedUpstream:
    """as_herald() answers from the request's shape; items fail while `broken`."""

    def __init__(self) -> None:
        self.broken = False
        self.items = ["a", "b", "c"]
        self.calls: list[str] = []

    async def as_herald(self, iq_type: str, to: str, payload: ET.Element) -> ET.Element:
        child = payload[0] if len(payload) else payload
        name = child.tag.partition("}")[2]
        self.calls.append(name if payload.tag.endswith("pubsub") else payload.tag)
        if payload.tag == f"{{{INFO}}}query":
            return OPEN_META if payload.get("node") else reply(f'<query xmlns="{INFO}"/>')
        if name == "subscribe":
            return reply(
                f'<pubsub xmlns="{PS}"><subscription node="{NODE}" '
                'subscription="subscribed"/></pubsub>'
            )
        if name == "unsubscribe":
            return reply("")
        if self.broken:
            raise UpstreamError(make_error("remote-server-timeout", "scripted", "wait"), "timeout")
        body = "".join(
            f'<item id="{i}"><entry xmlns="http://www.w3.org/2005/Atom"><title>{i}</title>'
            "</entry></item>"
            for i in self.items
        )
        return reply(f'<pubsub xmlns="{PS}"><items node="{NODE}">{body}</items></pubsub>')


def runs(result: str) -> float:
    return REGISTRY.get_sample_value("herald_pubsub_sync_runs_total", {"result": result}) or 0


async def test_failed_sync_is_never_half_cached_and_is_retried(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    upstream = ScriptedUpstream()
    cache = Cache(sessions, max_items_per_node=2)
    registry = Registry.from_config([AnalyserRule(node="blog", sync=True, parser="atom")])
    sync = Synchroniser(upstream, cache, registry, "proxy.example.org", ET.tostring)  # type: ignore[arg-type]
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
        record = await repo.get_node_by_id(session, node.id)
        assert record is not None
        assert record.sync_attempts == 1
        assert record.next_sync_at is not None
        assert record.next_sync_at > datetime.now(UTC)
        assert record.sync_owner is None  # the lease was released
        due_later = await repo.due_for_sync(session, record.next_sync_at)
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
        record = await repo.get_node_by_id(session, node.id)
    assert record is not None
    assert record.sync_attempts == 0


async def test_a_held_lease_blocks_a_second_sync(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    from datetime import timedelta

    upstream = ScriptedUpstream()
    cache = Cache(sessions, max_items_per_node=10)
    registry = Registry.from_config([])
    sync = Synchroniser(upstream, cache, registry, "proxy.example.org", ET.tostring)  # type: ignore[arg-type]
    node = await cache.ensure(SERVICE, NODE, None)
    # another Herald process holds the lease
    assert await repo.try_acquire_sync(
        sessions, node.id, "other-process", datetime.now(UTC), timedelta(minutes=5)
    )
    await sync.sync(node)
    assert upstream.calls == []  # it did nothing
    assert cache.node(SERVICE, NODE).sync_state != COMPLETED  # type: ignore[union-attr]
