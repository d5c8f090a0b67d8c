"""Notifications for several nodes applied in one transaction (group commit), on a
real database with the scripted upstream of test_pubsub_sync.py."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component.pubsub.cache import Cache
from component.pubsub.node_state import ItemStep, NodeState
from component.pubsub.stanzas import NodeEvent, ReceivedItem
from component.pubsub.sync import Synchroniser
from component.pubsub.unwritten import Unwritten
from component.storage import pubsub_item_reads, pubsub_nodes
from component.storage.records import ItemInput
from tests.integration.test_pubsub_sync import SERVICE, ScriptedUpstream, open_meta, synchroniser

pytestmark = pytest.mark.integration


def published(node: str, *ids: str) -> NodeEvent:
    items = tuple(ReceivedItem(i, f"<x xmlns='urn:x'>{i}</x>", "urn:x", None, None) for i in ids)
    return NodeEvent("items", node, items)


def retracted(node: str, *ids: str) -> NodeEvent:
    return NodeEvent("items", node, (), tuple(ids))


def statements(operation: str) -> float:
    labels = {"operation": operation}
    return REGISTRY.get_sample_value("herald_db_query_seconds_count", labels) or 0.0


async def synced(sync: Synchroniser, cache: Cache, *names: str) -> list[NodeState]:
    nodes = []
    for name in names:
        await sync.sync(await cache.ensure(SERVICE, name, None))
        node = cache.node(SERVICE, name)
        assert node is not None
        assert node.serves_from_cache
        nodes.append(node)
    return nodes


@contextlib.contextmanager
def sent(engine: Engine) -> Iterator[list[tuple[str, object]]]:
    """The statements (and their parameters) the engine sends inside the block."""
    out: list[tuple[str, object]] = []

    def record(*args: object) -> None:
        out.append((str(args[2]), args[3]))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield out
    finally:
        event.remove(engine, "before_cursor_execute", record)


def inserts_of_items(statements: list[tuple[str, object]]) -> list[str]:
    return [s for s, _ in statements if s.startswith("INSERT INTO pubsub_items")]


async def ids(cache: Cache, name: str) -> list[str]:
    node = cache.node(SERVICE, name)
    assert node is not None
    return [item.item_id for item in await cache.items(node)]


async def test_several_nodes_share_one_write_and_keep_their_own_order(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    cache = Cache(sessions, max_items_per_node=4)
    sync = synchroniser(ScriptedUpstream(), cache)
    await synced(sync, cache, "one", "two", "three")
    before = statements("upsert_items_of_nodes")
    await asyncio.gather(
        sync.apply(SERVICE, published("one", "x")),
        sync.apply(SERVICE, published("two", "y", "z")),
        sync.apply(SERVICE, retracted("one", "x", "a")),  # after its publication
        sync.apply(SERVICE, published("one", "w")),
        sync.apply(SERVICE, published("three", "d", "e")),  # past the limit of 4
    )
    writes = statements("upsert_items_of_nodes") - before
    print("group commit: upsert statements for 3 nodes' 5 notifications:", writes)
    assert writes == 2  # the first step of each node, then node one's last one
    assert await ids(cache, "one") == ["b", "c", "w"]
    assert await ids(cache, "two") == ["a", "b", "c", "y", "z"][-4:]
    assert await ids(cache, "three") == ["b", "c", "d", "e"]
    assert cache.node(SERVICE, "three").truncated  # type: ignore[union-attr]
    await sync.close()


async def test_a_node_that_cannot_be_written_leaves_service_alone(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Its failure undoes the group's transaction: the others are applied again on
    their own, and only it is taken out of service (and re-fetched)."""
    cache = Cache(sessions, max_items_per_node=10)
    sync = synchroniser(ScriptedUpstream(), cache)
    await synced(sync, cache, "fine", "gone")
    async with sessions() as session:  # behind the cache's back: its rows refuse items
        await pubsub_nodes.delete_node(session, SERVICE, "gone")
        await session.commit()
    await asyncio.gather(
        sync.apply(SERVICE, published("fine", "x")),
        sync.apply(SERVICE, published("gone", "y")),
        sync.apply(SERVICE, published("fine", "z")),
    )
    assert await ids(cache, "fine") == ["a", "b", "c", "x", "z"]
    assert cache.node(SERVICE, "fine").serves_from_cache  # type: ignore[union-attr]
    gone = cache.node(SERVICE, "gone")
    assert gone is not None
    assert not gone.serves_from_cache  # until a re-fetch (its row is gone: none here)
    await sync.close()


async def test_items_in_memory_stay_there_through_notifications(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A node requested lately is re-read with the write, not on its next request."""
    cache = Cache(sessions, max_items_per_node=10)
    sync = synchroniser(ScriptedUpstream(), cache)
    await synced(sync, cache, "hot", "cold")
    assert await ids(cache, "hot") == ["a", "b", "c"]  # now in memory
    await asyncio.gather(
        sync.apply(SERVICE, published("hot", "x")),
        sync.apply(SERVICE, retracted("hot", "a")),
        sync.apply(SERVICE, published("cold", "y")),
    )
    reads = statements("page_items")
    assert await ids(cache, "hot") == ["b", "c", "x"]
    print("database reads for a request after the notifications:", statements("page_items") - reads)
    assert statements("page_items") == reads
    assert await ids(cache, "cold") == ["a", "b", "c", "y"]
    assert statements("page_items") == reads + 1  # not requested before: read now
    await sync.close()


async def test_a_node_in_memory_is_not_counted_unless_it_may_pass_its_limit(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """What memory holds bounds a hot node's count: a write that keeps it under its
    limit sends no count statement (a round trip); one that may pass it still trims."""
    cache = Cache(sessions, max_items_per_node=5)
    sync = synchroniser(ScriptedUpstream(), cache)
    await synced(sync, cache, "roomy", "full")
    assert await ids(cache, "roomy") == ["a", "b", "c"]  # both in memory now
    assert await ids(cache, "full") == ["a", "b", "c"]
    before = statements("count_items_of_nodes")
    await sync.apply(SERVICE, published("roomy", "x"))
    counted = statements("count_items_of_nodes") - before
    print("count statements for a hot node's write under its limit:", counted)
    assert counted == 0
    assert await ids(cache, "roomy") == ["a", "b", "c", "x"]
    await sync.apply(SERVICE, published("full", "x", "y", "z"))  # 6 > 5: trimmed
    assert statements("count_items_of_nodes") - before == 1
    assert await ids(cache, "full") == ["b", "c", "x", "y", "z"]
    await sync.close()


async def test_a_node_in_memory_tells_republications_without_a_query(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Which published ids a node already holds (a republication) is read from memory
    for a node held there, from the database otherwise: the same answers."""
    cache = Cache(sessions, max_items_per_node=10)
    sync = synchroniser(ScriptedUpstream(), cache)
    hot, cold = await synced(sync, cache, "hot", "cold")
    assert await ids(cache, "hot") == ["a", "b", "c"]  # in memory now
    steps = [
        ItemStep((), tuple(ItemInput(i, f"<x xmlns='urn:x'>{i}</x>", None, None) for i in "cbx"))
    ]
    again_step = [ItemStep(("b",), (ItemInput("b", "<x xmlns='urn:x'>b</x>", None, None),))]
    answers = []
    for node, step in ((hot, steps), (cold, steps), (hot, again_step), (cold, again_step)):
        before = statements("held_ids_of_nodes")
        ((state, again),) = await cache.apply_steps([(node, step)])
        answers.append((again, statements("held_ids_of_nodes") - before))
        assert await ids(cache, state.name)  # read into memory (again)
    print("republished ids and held-id queries, hot then cold:", answers)
    assert answers == [([["b", "c"]], 0), ([["b", "c"]], 1), ([[]], 0), ([[]], 0)]
    assert await ids(cache, "hot") == await ids(cache, "cold")
    await sync.close()


async def test_the_memory_copy_after_group_writes_is_what_the_database_holds(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A hot node's items are merged in memory with the rows a write touched, not read
    again whole: after any mix of publications, republications (moved or not),
    retractions and trims, in one group or several, memory holds exactly the rows the
    database does, in the same order."""
    rng = random.Random(1307)
    cache = Cache(sessions, max_items_per_node=6)
    sync = synchroniser(ScriptedUpstream(), cache)
    nodes = await synced(sync, cache, "m1", "m2", "m3")
    names = [node.name for node in nodes]
    rounds = 0
    for _ in range(60):
        for name in names:
            await ids(cache, name)  # in memory again (a round may drop a node from it)
        changes = []
        for name in rng.sample(names, rng.randint(1, 3)):
            node = cache.node(SERVICE, name)
            assert node is not None
            steps = []
            for _ in range(rng.randint(1, 3)):
                pool = [f"i{n}" for n in range(10)]
                retract = tuple(rng.sample(pool, rng.choice((0, 0, 1, 2))))
                publish = tuple(
                    ItemInput(i, f"<x xmlns='urn:x'>{i} {rng.random()}</x>", {"k": i}, None)
                    for i in rng.sample(pool, rng.randint(0, 4))
                )
                steps.append(ItemStep(retract, publish, rng.random() < 0.5))
            changes.append((node, steps))
        held_before = sum(cache.hot(node) for node, _ in changes)
        await cache.apply_steps(changes)
        for node, _ in changes:
            in_memory = cache.hot(node)
            memory = await cache.items(node)
            async with sessions() as session:
                page = await pubsub_item_reads.page_items(session, node.id, None, None)
            stored = list(page.items)
            assert memory == stored, f"round {rounds}: {node.name}"
            assert [i.seq for i in memory] == [i.seq for i in stored]
            rounds += in_memory
        assert held_before  # every round wrote at least one node held in memory
    print(f"memory copy = database after {rounds} merged writes of 60 rounds")
    assert rounds >= 60
    await sync.close()


async def test_a_read_ahead_of_the_write_answers_what_the_write_leaves(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A read while notifications are still being written answers memory's copy with
    their steps applied (pubsub/unwritten.py): after any mix of publications,
    republications (moved where the node's service moves them), retractions and
    trims, that is exactly what the database holds once the write is done, in the
    same order, and the node is truncated exactly when the write leaves it so."""
    rng = random.Random(2311)
    cache = Cache(sessions, max_items_per_node=5)
    sync = synchroniser(ScriptedUpstream(), cache)
    nodes = await synced(sync, cache, "a1", "a2", "a3")
    moves = {"a1": True, "a2": False, "a3": rng.random() < 0.5}
    compared = became = 0
    for _ in range(60):
        changes = []
        for name in rng.sample([node.name for node in nodes], rng.randint(1, 3)):
            node = cache.node(SERVICE, name)
            assert node is not None
            await cache.items(node)  # in memory (a write may have dropped it)
            steps = []
            for _ in range(rng.randint(1, 3)):
                pool = [f"i{n}" for n in range(9)]
                retract = tuple(rng.sample(pool, rng.choice((0, 0, 1, 2))))
                publish = tuple(
                    ItemInput(i, f"<x xmlns='urn:x'>{i} {rng.random()}</x>", None, f"{i}@x")
                    for i in rng.choices(pool, k=rng.randint(0, 4))
                )
                steps.append(ItemStep(retract, publish, moves[name]))
            changes.append((node, steps))
        ahead = {
            node.name: cache.ahead(node, Unwritten(cache.items_version(node), steps))
            for node, steps in changes
        }
        await cache.apply_steps(changes)
        for node, _ in changes:
            expected = ahead[node.name]
            assert expected is not None
            async with sessions() as session:
                page = await pubsub_item_reads.page_items(session, node.id, None, None)
            stored = [(i.item_id, i.data, i.publisher) for i in page.items]
            assert [(i.item_id, i.data, i.publisher) for i in expected.items] == stored
            after = cache.node(SERVICE, node.name)
            assert after is not None
            assert expected.truncated == after.truncated
            compared += 1
            became += after.truncated and not node.truncated
    print(f"{compared} reads ahead of the write = the database after it ({became} truncated by it)")
    assert became  # a trim that truncates was exercised
    await sync.close()


async def test_a_group_write_inserts_its_rows_in_one_statement(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Asking for the new rows' ids in the order given made SQLAlchemy insert them one
    statement per row on SQLite (an upsert has no sentinel to sort by): two round
    trips to the database thread per item. The rows of a group go in one statement,
    and the rows it returns are what memory takes: nothing is read back."""
    cache = Cache(sessions, max_items_per_node=100)
    sync = synchroniser(ScriptedUpstream(), cache)
    nodes = await synced(sync, cache, *(f"n{i}" for i in range(10)))
    for node in nodes:
        assert await ids(cache, node.name) == ["a", "b", "c"]  # in memory now
    reads = statements("items_by_ids_of_nodes"), statements("page_items")
    with sent(sessions.kw["bind"].sync_engine) as statements_sent:
        two = ("x", "y")
        steps = [
            ItemStep((), tuple(ItemInput(i, f"<x xmlns='urn:x'>{i}</x>", None, None) for i in two))
        ]
        await cache.apply_steps([(node, steps) for node in nodes])
    inserts = inserts_of_items(statements_sent)
    print("INSERT statements for 10 nodes x 2 items:", len(inserts))
    assert len(inserts) == 1
    for node in nodes:
        assert await ids(cache, node.name) == ["a", "b", "c", "x", "y"]
    assert (statements("items_by_ids_of_nodes"), statements("page_items")) == reads
    await sync.close()


async def test_a_group_write_reads_what_it_touches_not_the_whole_table(
    sessions: async_sessionmaker[AsyncSession], db_url: str
) -> None:
    """(node, item id) IN (VALUES ...) is a full scan of pubsub_items on SQLite 3.40:
    every group write read the whole cache back (2.5 ms at 20,000 items, and growing
    with the cache, not with the change). Each statement of a write must reach the
    rows it touches by index: SQLite's plans name no scan of the items; PostgreSQL
    (its statistics taken) reads a few rows, not the table."""
    from sqlalchemy import text

    cache = Cache(sessions, max_items_per_node=5000)
    sync = synchroniser(ScriptedUpstream(), cache)
    big = await cache.ensure(SERVICE, "big", None)
    await cache.replace_items(
        big, [ItemInput(f"b{n}", f"<x xmlns='urn:x'>{n}</x>", None, None) for n in range(3000)]
    )
    nodes = await synced(sync, cache, *(f"n{i}" for i in range(6)))
    for node in nodes[:3]:  # three in memory, three not
        assert await ids(cache, node.name) == ["a", "b", "c"]
    engine = sessions.kw["bind"].sync_engine
    sqlite = engine.dialect.name == "sqlite"
    if not sqlite:
        async with sessions() as session:
            await session.execute(text("ANALYZE pubsub_items"))
            await session.commit()
    counts = (
        "SELECT n_tup_ins + n_tup_upd + n_tup_del, seq_tup_read + coalesce(idx_tup_fetch, 0)"
        " FROM pg_stat_user_tables WHERE relname = 'pubsub_items'"
    )

    async def rows_read(written: int) -> tuple[int, int]:
        """(rows written, rows read) of pubsub_items, once the statistics hold at
        least `written` writes (they reach the view up to a second late)."""
        for _ in range(50):
            async with sessions() as session:
                await session.execute(text("SELECT pg_stat_clear_snapshot()"))
                wrote, read = (await session.execute(text(counts))).one()
            if wrote >= written:
                return int(wrote), int(read)
            await asyncio.sleep(0.1)
        raise AssertionError(f"the statistics show {wrote} writes, not {written}")

    wrote, before = (0, 0) if sqlite else await rows_read(3000 + 6 * 3)
    with sent(engine) as statements_sent:
        x = ItemInput("x", "<x xmlns='urn:x'>x</x>", None, None)
        again = ItemInput("c", "<x xmlns='urn:x'>c again</x>", None, None)
        steps = [ItemStep(("a",), (x, again))]
        await cache.apply_steps([(node, steps) for node in nodes])
    for node in nodes:
        assert await ids(cache, node.name) == ["b", "c", "x"]
    if sqlite:
        import sqlite3

        path = db_url.split(":///", 1)[1]
        with sqlite3.connect(path) as raw:
            plans = [
                (
                    statement.split()[0],
                    [row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {statement}", params)],
                )  # type: ignore[arg-type]
                for statement, params in statements_sent
                if statement.split()[0] in ("SELECT", "DELETE")
            ]
        print("a group write's plans:", plans)
        scans = [plan for plan in plans if any(s.startswith("SCAN pubsub_items") for s in plan[1])]
        assert plans
        assert scans == []
    else:
        touched = (await rows_read(wrote + 6 * 3))[1] - before  # per node: x, c, a
        print(f"pubsub_items rows a group write read, of 3,018: {touched}")
        assert touched < 300
    await sync.close()


async def test_group_writes_alone_commit_without_waiting_for_the_disk(
    sessions: async_sessionmaker[AsyncSession], db_url: str
) -> None:
    """On PostgreSQL the group writes go through their own engine, whose commits do
    not wait for the WAL flush; every other write still waits. SQLite has no such
    engine (its group writes use the one engine)."""
    from sqlalchemy import text

    from component.storage.engine import create_redoable_engine, session_factory

    engine = create_redoable_engine(db_url)
    if engine is None:
        assert db_url.startswith("sqlite")
        return
    try:
        redoable = session_factory(engine)
        async with redoable() as session:
            assert (await session.execute(text("SHOW synchronous_commit"))).scalar() == "off"
        async with sessions() as session:
            assert (await session.execute(text("SHOW synchronous_commit"))).scalar() == "on"
        cache = Cache(sessions, max_items_per_node=10, redoable=redoable)
        sync = synchroniser(ScriptedUpstream(), cache)
        (node,) = await synced(sync, cache, "one")
        with sent(engine.sync_engine) as statements_sent:
            step = ItemStep((), (ItemInput("x", "<x xmlns='urn:x'>x</x>", None, None),))
            await cache.apply_steps([(node, [step])])
        # the group write went through the redoable engine
        assert len(inserts_of_items(statements_sent)) == 1
        assert await ids(cache, "one") == ["a", "b", "c", "x"]
        await sync.close()
    finally:
        await engine.dispose()


@pytest.mark.parametrize("moves", [True, False])
async def test_a_publication_then_a_republication_in_one_group_keep_upstreams_order(
    sessions: async_sessionmaker[AsyncSession], moves: bool
) -> None:
    """A new item, then a republished one, arrive while nothing is being written: one
    group. They were written as one step (coalesced), which is not what applying them
    one after the other gives: where the service moves republished items, the
    republished one went before the new one; where it does not, on a full node, the
    republished one was trimmed, which upstream holds (pushed out by the new one, it
    came back as new)."""
    cache = Cache(sessions, max_items_per_node=10)
    upstream = ScriptedUpstream()
    upstream.meta = open_meta(max_items="3")  # upstream trims as the cache does
    sync = synchroniser(upstream, cache)
    await synced(sync, cache, "coal")
    sync.notifications.order._moves[SERVICE] = moves
    await asyncio.gather(
        sync.apply(SERVICE, published("coal", "x")), sync.apply(SERVICE, published("coal", "a"))
    )
    got = await ids(cache, "coal")
    # [a, b, c], then x (b, c, x), then a: moved or, pushed out, published anew.
    print(f"after x, then a again ({'moved' if moves else 'in place'}): {got}")
    assert got == ["c", "x", "a"]
    await sync.close()


async def test_reads_ahead_of_notifications_in_flight_answer_what_is_written(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Notifications go through the applier as they arrive (groups, merged
    publications, one by one where needed) while the writes are held; a read of each
    node then applies those not yet written to memory's copy. Once all are written,
    the database holds what that read answered, for either kind of service."""
    rng = random.Random(4099)
    cache = Cache(sessions, max_items_per_node=5)
    upstream = ScriptedUpstream()
    pool = [f"i{n}" for n in range(8)]
    upstream.items += pool  # what Herald's eviction probes find upstream: all of them
    sync = synchroniser(upstream, cache)
    names = ["f1", "f2", "f3"]
    await synced(sync, cache, *names)
    gate = asyncio.Event()
    apply_steps = cache.apply_steps

    async def held(changes: Any) -> Any:
        await gate.wait()  # a slow database
        return await apply_steps(changes)

    monkeypatch.setattr(cache, "apply_steps", held)
    compared = 0
    for round_ in range(40):
        sync.notifications.order._moves[SERVICE] = round_ % 2 == 0
        for name in names:
            node = cache.node(SERVICE, name)
            assert node is not None
            await cache.items(node)  # in memory
        gate.clear()
        events = []
        for _ in range(rng.randint(2, 8)):
            name = rng.choice(names)
            if rng.random() < 0.3:
                events.append(retracted(name, *rng.sample(pool, 1)))
            else:
                events.append(published(name, *rng.sample(pool, rng.randint(1, 2))))
        tasks = []
        for notified in events:
            tasks.append(asyncio.create_task(sync.apply(SERVICE, notified)))
            await asyncio.sleep(0)  # the first is taken into a group, the rest queue
        ahead = {}
        for name in names:
            node = cache.node(SERVICE, name)
            assert node is not None
            unwritten = sync.notifications.unwritten_steps(node)
            if unwritten is not None and unwritten.steps:
                ahead[name] = cache.ahead(node, unwritten)
        gate.set()
        await asyncio.gather(*tasks)
        for name, expected in ahead.items():
            node = cache.node(SERVICE, name)
            assert node is not None
            assert expected is not None, f"round {round_}: {name} not read ahead"
            async with sessions() as session:
                page = await pubsub_item_reads.page_items(session, node.id, None, None)
            stored = [(i.item_id, i.data) for i in page.items]
            assert [(i.item_id, i.data) for i in expected.items] == stored, f"round {round_}"
            compared += 1
    print(f"{compared} reads ahead of notifications in flight = the database once written")
    assert compared >= 40
    await sync.close()
