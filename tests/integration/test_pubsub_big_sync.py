"""A big node's sync shares the event loop with everything else Herald serves.

A sync of N items serialises, parses, stores and indexes N items. Done in one go, a
100,000-item node froze the loop for seconds (the search bench): every stream, both
services, waited. The work now goes in turns. Measured here in units of work (items
serialised, parsed or indexed) between two turns of the loop, which does not depend
on the machine's speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TypeVar
from xml.etree import ElementTree as ET

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component.pubsub import cache as cache_module
from component.pubsub import sync_upstream
from component.pubsub.cache import Cache
from component.pubsub.item_intake import ItemIntake
from component.pubsub.node_state import NodeState
from component.pubsub.rules import AnalyserRule, Registry
from component.pubsub.stanzas import ReceivedItem, Serializer
from component.pubsub.sync import Synchroniser
from component.storage import migrate, pubsub_item_reads, search_repo
from component.storage.engine import create_engine, session_factory
from component.storage.records import ItemInput
from tests.integration.test_pubsub_sync import NODE, SERVICE, ScriptedUpstream, synchroniser

pytestmark = pytest.mark.integration

T = TypeVar("T")
U = TypeVar("U")

ITEMS = 3000
TURN = 500  # what the work may do between two turns at most, with some slack: 2 x 250


def big_node(
    sessions: async_sessionmaker[AsyncSession],
) -> tuple[ScriptedUpstream, Cache, Synchroniser]:
    """An upstream holding ITEMS Atom entries in NODE, a cache that keeps them all,
    and a synchroniser that parses them."""
    upstream = ScriptedUpstream()
    upstream.items = [f"i{n:05d}" for n in range(ITEMS)]
    cache = Cache(sessions, max_items_per_node=ITEMS)
    registry = Registry.from_config([AnalyserRule(node=NODE, sync=True, parser="atom")])
    return upstream, cache, synchroniser(upstream, cache, registry)


async def test_a_big_sync_gives_the_loop_a_turn_every_few_hundred_items(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    work = [0]
    received, item_input, document = (
        sync_upstream.received_items,
        ItemIntake.item_input,
        search_repo.document,
    )

    def counted_received(items: Iterable[ET.Element], serialize: Serializer) -> list[ReceivedItem]:
        found = received(items, serialize)
        work[0] += len(found)
        return found

    def counted_input(self: ItemIntake, node: NodeState, item: ReceivedItem) -> ItemInput:
        work[0] += 1
        return item_input(self, node, item)

    def counted_document(data: str, parsed: object) -> str:
        work[0] += 1
        return document(data, parsed)  # type: ignore[arg-type]

    monkeypatch.setattr(sync_upstream, "received_items", counted_received)
    monkeypatch.setattr(ItemIntake, "item_input", counted_input)
    monkeypatch.setattr(search_repo, "document", counted_document)

    def counted(function: Callable[[T], U]) -> Callable[[T], U]:
        def count(arg: T) -> U:
            work[0] += 1
            return function(arg)

        return count

    monkeypatch.setattr(pubsub_item_reads, "item_record", counted(pubsub_item_reads.item_record))
    monkeypatch.setattr(cache_module, "held_size", counted(cache_module.held_size))

    upstream, cache, sync = big_node(sessions)
    gaps: list[int] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = work[0]
        while not done.is_set():
            await asyncio.sleep(0)
            gaps.append(work[0] - last)
            last = work[0]

    turns = asyncio.create_task(ticker())
    try:
        await sync.sync(await cache.ensure(SERVICE, NODE, None))
        node = cache.node(SERVICE, NODE)
        assert node is not None
        assert node.serves_from_cache
        # the first read loads the whole node into memory
        assert [i.item_id for i in await cache.items(node)] == upstream.items
    finally:
        done.set()
        await turns
        await sync.close()
    print(
        f"sync of {ITEMS} items: {work[0]} units of work, at most {max(gaps)} between two"
        f" turns of the loop ({len(gaps)} turns)"
    )
    # serialised, parsed, indexed, then read and sized: the counters see it all
    assert work[0] >= 5 * ITEMS
    assert max(gaps) <= TURN


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_big_sync_reads_postgresql_rows_in_proportion_to_its_items(db_url: str) -> None:
    """Writing a node's items in turns must not make each item's write read the
    table: a statement planned while the table was nearly empty (a sequential scan)
    and reused for every row made a 100,000-item sync quadratic (it ran for over 8
    minutes in the search bench). Counted by PostgreSQL itself: rows read from
    pubsub_items over the whole sync, which does not depend on the machine."""
    engine = create_engine(db_url)
    await migrate.upgrade(engine)
    _, cache, sync = big_node(session_factory(engine))
    try:
        await sync.sync(await cache.ensure(SERVICE, NODE, None))
    finally:
        await sync.close()
        await engine.dispose()  # a backend's statistics are written when it exits
    check = create_engine(db_url)
    query = text(
        "SELECT n_tup_ins, seq_tup_read + coalesce(idx_tup_fetch, 0) "
        "FROM pg_stat_user_tables WHERE relname = 'pubsub_items'"
    )
    try:
        for _ in range(100):
            async with check.connect() as conn:
                inserted, read = (await conn.execute(query)).one()
            if inserted >= ITEMS:
                break
            await asyncio.sleep(0.1)
    finally:
        await check.dispose()
    print(f"sync of {ITEMS} items on PostgreSQL: {read} rows of pubsub_items read")
    assert inserted >= ITEMS  # the statistics are in
    assert read < 10 * ITEMS


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_big_sync_leaves_no_pending_entries_in_the_search_index(db_url: str) -> None:
    """The GIN index's fast update kept a big write's entries in a pending list that
    every search then scanned until a cleanup merged it, a search meeting the cleanup
    waiting for it. Measured by pgstattuple: no entry is left pending."""
    engine = create_engine(db_url)
    await migrate.upgrade(engine)
    _, cache, sync = big_node(session_factory(engine))
    try:
        await sync.sync(await cache.ensure(SERVICE, NODE, None))
        async with engine.begin() as conn:
            await conn.execute(text("CREATE EXTENSION IF NOT EXISTS pgstattuple"))
            pages, entries = (
                await conn.execute(
                    text(
                        "SELECT pending_pages, pending_tuples "
                        "FROM pgstatginindex('ix_pubsub_search_document')"
                    )
                )
            ).one()
    finally:
        await sync.close()
        await engine.dispose()
    print(f"sync of {ITEMS} items: {entries} index entries pending in {pages} pages")
    assert (pages, entries) == (0, 0)
