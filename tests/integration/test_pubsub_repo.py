"""The pubsub cache repository on SQLite and PostgreSQL: semantics, races and RSM pages."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from component.paging import Page, PagingError, RsmRequest, paginate
from component.storage import (
    migrate,
    pubsub_item_reads,
    pubsub_item_writes,
    pubsub_leases,
    pubsub_nodes,
)
from component.storage.engine import create_engine, session_factory
from component.storage.records import ItemInput, ItemRecord

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))
SERVICE = "juliet@capulet.lit"
BLOG = "urn:xmpp:microblog:0"

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url)
    await migrate.upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def other_engine(db_url: str, engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """A second engine on the same database: another Herald process, as far as SQL goes."""
    other = create_engine(db_url)
    yield other
    await other.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> Sessions:
    return session_factory(engine)


async def new_node(sessions: Sessions, name: str = BLOG, service: str = SERVICE) -> int:
    async with sessions.begin() as session:
        return (await pubsub_nodes.ensure_node(session, service, name, analyser="blog", now=T0)).id


async def store(
    sessions: Sessions, node_id: int, items: Sequence[ItemInput], now: datetime = T0
) -> None:
    async with sessions.begin() as session:
        await pubsub_item_writes.upsert_items(session, node_id, items, now)


async def ids_of(sessions: Sessions, node_id: int) -> list[str]:
    async with sessions() as session:
        return await pubsub_item_reads.item_ids(session, node_id)


def xml(item_id: str, text: str = "") -> str:
    return f"<item id='{item_id}'><entry xmlns='http://www.w3.org/2005/Atom'>{text}</entry></item>"


def simple(item_id: str, created: datetime | None = None, text: str = "") -> ItemInput:
    return ItemInput(item_id, xml(item_id, text), created=created)


# --- nodes ---------------------------------------------------------------------------


async def test_ensure_node_creates_once_then_returns_the_same_node(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        assert await pubsub_nodes.get_node(session, SERVICE, BLOG) is None
        created = await pubsub_nodes.ensure_node(session, SERVICE, BLOG, analyser="blog", now=T0)
    assert (created.service, created.name, created.analyser) == (SERVICE, BLOG, "blog")
    assert (created.sync_state, created.sync_attempts) == ("no-sync", 0)
    assert (created.subscribed, created.shareable, created.access_model) == (False, False, None)
    assert created.sync_state_updated == T0
    assert created.sync_state_updated.tzinfo is UTC
    assert created.last_requested == T0
    assert (created.sync_owner, created.sync_lease_until, created.next_sync_at) == (None,) * 3

    later = T0 + timedelta(hours=1)
    async with sessions.begin() as session:
        again = await pubsub_nodes.ensure_node(session, SERVICE, BLOG, analyser="other", now=later)
        other = await pubsub_nodes.ensure_node(
            session, "romeo@montague.lit", BLOG, analyser=None, now=T0
        )
        fetched = await pubsub_nodes.get_node(session, SERVICE, BLOG)
        by_id = await pubsub_nodes.get_node_by_id(session, created.id)
    assert again == created  # an existing node is returned unchanged
    assert fetched == created
    assert by_id == created
    assert other.id != created.id


async def test_ensure_node_races_end_with_one_row(
    engine: AsyncEngine, other_engine: AsyncEngine
) -> None:
    factories = [session_factory(engine), session_factory(other_engine)]

    async def ensure(sessions: Sessions) -> int:
        async with sessions.begin() as session:
            return (
                await pubsub_nodes.ensure_node(session, SERVICE, BLOG, analyser=None, now=T0)
            ).id

    node_ids = await asyncio.gather(*(ensure(factories[n % 2]) for n in range(10)))
    assert len(set(node_ids)) == 1
    async with factories[0]() as session:
        assert await pubsub_nodes.count_nodes_by_state(session) == {
            "no-sync": 1,
            "in-progress": 0,
            "completed": 0,
            "error": 0,
        }


async def test_delete_node_cascades_to_its_items(sessions: Sessions) -> None:
    doomed = await new_node(sessions, "doomed")
    kept = await new_node(sessions, "kept")
    await store(sessions, doomed, [simple("a"), simple("b")])
    await store(sessions, kept, [simple("a")])
    async with sessions.begin() as session:
        assert await pubsub_nodes.delete_node(session, SERVICE, "doomed") is True
    async with sessions.begin() as session:
        assert await pubsub_nodes.get_node(session, SERVICE, "doomed") is None
        assert await pubsub_item_reads.item_ids(session, doomed) == []
        assert await pubsub_item_reads.item_ids(session, kept) == ["a"]
        assert await pubsub_item_reads.count_items(session) == 1
        assert await pubsub_nodes.delete_node(session, SERVICE, "doomed") is False


async def test_set_node_state_changes_only_the_given_fields(sessions: Sessions) -> None:
    node_id = await new_node(sessions)
    async with sessions() as session:
        before = await pubsub_nodes.get_node_by_id(session, node_id)
    assert before is not None
    t1, t2 = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)

    async with sessions.begin() as session:
        moved = await pubsub_nodes.set_node_state(
            session, node_id, sync_state="in-progress", now=t1
        )
    assert moved == dataclasses.replace(before, sync_state="in-progress", sync_state_updated=t1)

    retry_at = datetime(2026, 3, 1, 15, 30, tzinfo=PLUS_TWO)  # 13:30 UTC
    async with sessions.begin() as session:
        same_state = await pubsub_nodes.set_node_state(
            session,
            node_id,
            sync_state="in-progress",
            access_model="open",
            shareable=True,
            subscribed=True,
            sync_attempts=3,
            next_sync_at=retry_at,
            now=t2,
        )
    assert same_state is not None
    # Same state: the time it was entered stays t1.
    assert same_state == dataclasses.replace(
        before,
        sync_state="in-progress",
        sync_state_updated=t1,
        access_model="open",
        shareable=True,
        subscribed=True,
        sync_attempts=3,
        next_sync_at=retry_at,
    )
    assert same_state.next_sync_at is not None
    assert same_state.next_sync_at.tzinfo is UTC
    assert same_state.next_sync_at.hour == 13

    async with sessions.begin() as session:
        cleared = await pubsub_nodes.set_node_state(
            session, node_id, access_model=None, next_sync_at=None, now=t2
        )
        reread = await pubsub_nodes.get_node_by_id(session, node_id)
    assert cleared == dataclasses.replace(same_state, access_model=None, next_sync_at=None)
    assert reread == cleared

    async with sessions.begin() as session:
        assert (
            await pubsub_nodes.set_node_state(session, node_id + 1000, sync_state="error", now=t2)
            is None
        )
        with pytest.raises(ValueError, match="unknown sync state"):
            await pubsub_nodes.set_node_state(session, node_id, sync_state="done", now=t2)
        with pytest.raises(ValueError, match="timezone-aware"):
            await pubsub_nodes.set_node_state(
                session, node_id, sync_state="error", now=datetime(2026, 1, 1)
            )


# --- the sync lease ------------------------------------------------------------------


async def test_sync_lease_contenders_blocked_together_have_one_winner(
    engine: AsyncEngine, other_engine: AsyncEngine
) -> None:
    first, second = session_factory(engine), session_factory(other_engine)
    node_id = await new_node(first)
    lease = timedelta(seconds=30)

    # Hold the row (PostgreSQL) or the write lock (SQLite) so that both contenders are
    # inside their UPDATE at the same time, then let them go together.
    blocker = first()
    await pubsub_nodes.touch_node(blocker, node_id, T0)
    contenders = [
        asyncio.create_task(pubsub_leases.try_acquire_sync(sessions, node_id, owner, T0, lease))
        for sessions, owner in ((first, "herald-1"), (second, "herald-2"))
    ]
    await asyncio.sleep(0.3)
    assert not any(task.done() for task in contenders)
    await blocker.commit()
    await blocker.close()
    results = await asyncio.gather(*contenders)

    assert sorted(results) == [False, True]
    winner = "herald-1" if results[0] else "herald-2"
    async with first() as session:
        node = await pubsub_nodes.get_node_by_id(session, node_id)
    assert node is not None
    assert (node.sync_owner, node.sync_lease_until) == (winner, T0 + lease)


async def test_sync_lease_many_contenders_on_two_engines(
    engine: AsyncEngine, other_engine: AsyncEngine
) -> None:
    factories = [session_factory(engine), session_factory(other_engine)]
    node_id = await new_node(factories[0])
    results = await asyncio.gather(
        *(
            pubsub_leases.try_acquire_sync(
                factories[n % 2], node_id, f"h{n}", T0, timedelta(minutes=1)
            )
            for n in range(12)
        )
    )
    assert results.count(True) == 1


async def test_sync_lease_expires_renews_and_releases(
    engine: AsyncEngine, other_engine: AsyncEngine
) -> None:
    a, b = session_factory(engine), session_factory(other_engine)
    node_id = await new_node(a)
    lease = timedelta(seconds=30)

    def at(seconds: int) -> datetime:
        return T0 + timedelta(seconds=seconds)

    assert await pubsub_leases.try_acquire_sync(a, node_id, "A", at(0), lease) is True
    assert await pubsub_leases.try_acquire_sync(b, node_id, "B", at(10), lease) is False
    assert (
        await pubsub_leases.try_acquire_sync(a, node_id, "A", at(10), lease) is False
    )  # not re-entrant
    assert await pubsub_leases.renew_sync(a, node_id, "A", at(20), lease) is True  # now until 50
    assert await pubsub_leases.try_acquire_sync(b, node_id, "B", at(40), lease) is False
    assert await pubsub_leases.try_acquire_sync(b, node_id, "B", at(51), lease) is True  # A expired
    assert await pubsub_leases.renew_sync(a, node_id, "A", at(52), lease) is False
    assert await pubsub_leases.release_sync(a, node_id, "A") is False  # B's lease survives
    async with a() as session:
        node = await pubsub_nodes.get_node_by_id(session, node_id)
    assert node is not None
    assert (node.sync_owner, node.sync_lease_until) == ("B", at(81))

    assert await pubsub_leases.release_sync(b, node_id, "B") is True
    assert await pubsub_leases.try_acquire_sync(a, node_id, "A", at(53), lease) is True
    assert await pubsub_leases.try_acquire_sync(a, node_id + 1000, "A", at(53), lease) is False
    with pytest.raises(ValueError, match="positive"):
        await pubsub_leases.try_acquire_sync(a, node_id, "A", at(99), timedelta(0))


# --- items: writing ------------------------------------------------------------------


async def test_upsert_keeps_created_and_place_and_bumps_updated(sessions: Sessions) -> None:
    node_id = await new_node(sessions)
    t1, t2 = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    published = datetime(2026, 3, 1, 13, 0, tzinfo=PLUS_TWO)  # 11:00 UTC, before T0
    first = [
        ItemInput("a", xml("a", "v1"), parsed={"title": "v1"}, publisher="juliet@capulet.lit"),
        ItemInput("b", xml("b"), created=published),
        ItemInput("c", xml("c")),
    ]
    async with sessions.begin() as session:
        assert await pubsub_item_writes.upsert_items(session, node_id, first, t1) == 3
    async with sessions.begin() as session:
        update = ItemInput(
            "a", xml("a", "v2"), parsed={"title": "v2"}, created=T0 - timedelta(days=9)
        )
        assert await pubsub_item_writes.upsert_items(session, node_id, [update], t2) == 1
        items = await pubsub_item_reads.get_items_by_ids(session, node_id, ["a", "b", "c"])

    assert items == [
        ItemRecord("b", xml("b"), None, None, published, t1),
        ItemRecord("a", xml("a", "v2"), {"title": "v2"}, None, t1, t2),
        ItemRecord("c", xml("c"), None, None, t1, t1),
    ]
    assert all(i.created.tzinfo is UTC and i.updated.tzinfo is UTC for i in items)
    assert items[0].created.hour == 11


async def test_items_are_stored_byte_faithfully(sessions: Sessions) -> None:
    node_id = await new_node(sessions)
    raw = (
        "<item id='x'>\r\n\t<entry xmlns=\"http://www.w3.org/2005/Atom\" xml:lang='fr'>"
        "<title>Ça va ? 🎉 &amp; &lt;ok&gt;</title><![CDATA[ <raw> ]]>  </entry>\n  </item>"
    )
    parsed: dict[str, Any] = {
        "title": "Ça va ? 🎉",
        "tags": ["a", "b"],
        "n": 3,
        "ok": True,
        "none": None,
        "nested": {"x": [1.5, {"y": "z"}]},
    }
    await store(sessions, node_id, [ItemInput("x", raw, parsed=parsed, publisher="a@b/c")])
    async with sessions() as session:
        [item] = await pubsub_item_reads.get_items_by_ids(session, node_id, ["x"])
    assert item.data == raw
    assert item.parsed == parsed
    assert item.publisher == "a@b/c"


async def test_no_parsed_form_is_stored_as_sql_null(sessions: Sessions) -> None:
    node_id = await new_node(sessions)
    await store(sessions, node_id, [ItemInput("a", xml("a"), parsed={"k": 1}), simple("b")])
    await store(sessions, node_id, [ItemInput("c", xml("c"), parsed={})])
    await store(sessions, node_id, [simple("a")])  # the new version has no parsed form
    query = text("SELECT item_id FROM pubsub_items WHERE parsed IS NULL ORDER BY item_id")
    async with sessions() as session:
        assert list((await session.execute(query)).scalars()) == ["a", "b"]
        [c] = await pubsub_item_reads.get_items_by_ids(session, node_id, ["c"])
    assert c.parsed == {}


async def test_upsert_orders_ties_by_insertion_and_collapses_duplicates(
    sessions: Sessions,
) -> None:
    node_id = await new_node(sessions)
    # not sorted, and more than one turn of rows (component/turns.py), each one
    # multi-row statement on SQLite whose ids must follow the order given
    names = [f"n{(n * 7) % 600:03d}" for n in range(600)]
    await store(sessions, node_id, [simple(name) for name in names])
    await store(sessions, node_id, [simple("z1"), simple("a1")])  # same `now`: after them
    assert await ids_of(sessions, node_id) == [*names, "z1", "a1"]

    other = await new_node(sessions, "other")
    batch = [simple("x", text="one"), simple("y"), simple("x", text="two")]
    async with sessions.begin() as session:
        assert await pubsub_item_writes.upsert_items(session, other, batch, T0) == 2
        items = await pubsub_item_reads.get_items_by_ids(session, other, ["x", "y"])
    assert [(i.item_id, i.data) for i in items] == [("x", xml("x", "two")), ("y", xml("y"))]


async def test_upsert_refuses_naive_times_and_unknown_nodes(sessions: Sessions) -> None:
    node_id = await new_node(sessions)
    async with sessions() as session:
        with pytest.raises(ValueError, match="timezone-aware"):
            await pubsub_item_writes.upsert_items(
                session, node_id, [simple("a")], datetime(2026, 1, 1)
            )
        with pytest.raises(ValueError, match="timezone-aware"):
            await pubsub_item_writes.upsert_items(
                session, node_id, [simple("a", datetime(2026, 1, 1))], T0
            )
        assert await pubsub_item_writes.upsert_items(session, node_id, [], T0) == 0
    async with sessions() as session:
        with pytest.raises(IntegrityError):
            await pubsub_item_writes.upsert_items(session, node_id + 1000, [simple("a")], T0)


async def test_retract_and_purge_touch_only_their_node(sessions: Sessions) -> None:
    node_id = await new_node(sessions)
    other = await new_node(sessions, "other")
    await store(sessions, node_id, [simple(i) for i in "abcd"])
    await store(sessions, other, [simple(i) for i in "abc"])
    async with sessions.begin() as session:
        assert await pubsub_item_writes.retract_items(session, node_id, ["b", "d", "zz", "b"]) == 2
        assert await pubsub_item_writes.retract_items(session, node_id, ["b"]) == 0
    assert await ids_of(sessions, node_id) == ["a", "c"]
    async with sessions.begin() as session:
        assert await pubsub_item_writes.purge_items(session, node_id) == 2
        assert await pubsub_item_writes.purge_items(session, node_id) == 0
    assert await ids_of(sessions, node_id) == []
    assert await ids_of(sessions, other) == ["a", "b", "c"]


async def test_replace_items_reconciles_a_full_refetch(sessions: Sessions) -> None:
    node_id = await new_node(sessions)
    other = await new_node(sessions, "other")
    await store(sessions, node_id, [simple(i) for i in "abc"], T0)
    await store(sessions, other, [simple("a")], T0)
    t1 = T0 + timedelta(hours=1)
    fresh = [simple("b"), simple("c", text="edited"), simple("d")]
    async with sessions.begin() as session:
        assert await pubsub_item_writes.replace_items(session, node_id, fresh, t1) == 1
        items = await pubsub_item_reads.get_items_by_ids(session, node_id, "abcd")
    assert [(i.item_id, i.data, i.created, i.updated) for i in items] == [
        ("b", xml("b"), T0, t1),
        ("c", xml("c", "edited"), T0, t1),
        ("d", xml("d"), t1, t1),
    ]
    assert await ids_of(sessions, other) == ["a"]

    # It runs in the caller's transaction: a rollback leaves the node as it was.
    async with sessions() as session:
        assert await pubsub_item_writes.replace_items(session, node_id, [simple("e")], t1) == 3
        assert await pubsub_item_reads.item_ids(session, node_id) == ["e"]
        await session.rollback()
    assert await ids_of(sessions, node_id) == ["b", "c", "d"]


async def test_trim_items_keeps_the_newest(sessions: Sessions) -> None:
    node_id = await new_node(sessions)
    other = await new_node(sessions, "other")
    # Created times tie in pairs, so insertion order decides within each pair.
    items = [simple(f"i{n}", T0 + timedelta(minutes=n // 2)) for n in range(10)]
    await store(sessions, node_id, list(reversed(items)))  # i9 inserted first
    await store(sessions, other, items)
    expected = [f"i{n}" for n in (1, 0, 3, 2, 5, 4, 7, 6, 9, 8)]
    assert await ids_of(sessions, node_id) == expected
    async with sessions.begin() as session:
        assert await pubsub_item_writes.trim_items(session, node_id, 10) == []
        gone = await pubsub_item_writes.trim_items(session, node_id, 5)
        assert sorted(gone) == sorted(expected[:5])
        assert await pubsub_item_reads.item_ids(session, node_id) == expected[5:]
        gone = await pubsub_item_writes.trim_items(session, node_id, 0)
        assert sorted(gone) == sorted(expected[5:])
        assert await pubsub_item_reads.item_ids(session, node_id) == []
        assert len(await pubsub_item_reads.item_ids(session, other)) == 10
        with pytest.raises(ValueError, match="negative"):
            await pubsub_item_writes.trim_items(session, node_id, -1)


async def test_get_items_by_ids_answers_chronologically(sessions: Sessions) -> None:
    node_id = await new_node(sessions)
    await store(sessions, node_id, [simple("late", T0), simple("early", T0 - timedelta(days=1))])
    await store(sessions, node_id, [simple("newest")], T0 + timedelta(days=1))
    async with sessions() as session:
        items = await pubsub_item_reads.get_items_by_ids(
            session, node_id, ["newest", "gone", "late", "early", "late"]
        )
        assert await pubsub_item_reads.get_items_by_ids(session, node_id, []) == []
    assert [i.item_id for i in items] == ["early", "late", "newest"]


# --- counts, idleness, retries -------------------------------------------------------


async def test_counts_for_the_gauges(sessions: Sessions) -> None:
    async with sessions() as session:
        assert await pubsub_nodes.count_nodes_by_state(session) == dict.fromkeys(
            ("no-sync", "in-progress", "completed", "error"), 0
        )
        assert await pubsub_item_reads.count_items(session) == 0
    ids = [await new_node(sessions, f"n{n}") for n in range(4)]
    async with sessions.begin() as session:
        await pubsub_nodes.set_node_state(session, ids[0], sync_state="completed", now=T0)
        await pubsub_nodes.set_node_state(session, ids[1], sync_state="completed", now=T0)
        await pubsub_nodes.set_node_state(session, ids[2], sync_state="error", now=T0)
        await pubsub_item_writes.upsert_items(session, ids[0], [simple("a"), simple("b")], T0)
        await pubsub_item_writes.upsert_items(session, ids[3], [simple("a")], T0)
    async with sessions() as session:
        assert await pubsub_nodes.count_nodes_by_state(session) == {
            "no-sync": 1,
            "in-progress": 0,
            "completed": 2,
            "error": 1,
        }
        assert await pubsub_item_reads.count_items(session) == 3
        completed = await pubsub_nodes.nodes_in_state(session, "completed")
    assert [n.id for n in completed] == ids[:2]


async def test_idle_nodes_least_recently_requested_first(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        old = await pubsub_nodes.ensure_node(session, SERVICE, "old", analyser=None, now=T0)
        mid = await pubsub_nodes.ensure_node(
            session, SERVICE, "mid", analyser=None, now=T0 + timedelta(hours=1)
        )
        busy = await pubsub_nodes.ensure_node(session, SERVICE, "busy", analyser=None, now=T0)
        assert await pubsub_nodes.touch_node(session, busy.id, T0 + timedelta(hours=2)) is True
        assert await pubsub_nodes.touch_node(session, busy.id + 1000, T0) is False
    async with sessions() as session:
        idle = await pubsub_nodes.idle_nodes(session, T0 + timedelta(minutes=90))
        assert [n.id for n in idle] == [old.id, mid.id]
        assert await pubsub_nodes.idle_nodes(session, T0) == []
        everything = await pubsub_nodes.idle_nodes(session, T0 + timedelta(days=1))
    assert [n.id for n in everything] == [old.id, mid.id, busy.id]
    assert everything[2].last_requested == T0 + timedelta(hours=2)


async def test_due_for_sync_lists_errors_whose_retry_time_came(sessions: Sessions) -> None:
    ids = [await new_node(sessions, f"n{n}") for n in range(4)]
    async with sessions.begin() as session:
        late, soon = T0 + timedelta(minutes=10), T0 + timedelta(minutes=5)
        await pubsub_nodes.set_node_state(
            session, ids[0], sync_state="error", next_sync_at=late, now=T0
        )
        await pubsub_nodes.set_node_state(
            session, ids[1], sync_state="error", next_sync_at=soon, now=T0
        )
        await pubsub_nodes.set_node_state(session, ids[2], sync_state="error", now=T0)
        await pubsub_nodes.set_node_state(
            session, ids[3], sync_state="completed", next_sync_at=soon, now=T0
        )
    async with sessions() as session:
        assert await pubsub_nodes.due_for_sync(session, T0) == []
        assert [n.id for n in await pubsub_nodes.due_for_sync(session, soon)] == [ids[1]]
        assert [n.id for n in await pubsub_nodes.due_for_sync(session, late)] == [ids[1], ids[0]]


async def test_every_public_function_is_timed(sessions: Sessions) -> None:
    def observed(operation: str) -> float:
        value = REGISTRY.get_sample_value("herald_db_query_seconds_count", {"operation": operation})
        return value or 0.0

    before = {op: observed(op) for op in ("ensure_node", "page_items", "try_acquire_sync")}
    node_id = await new_node(sessions)
    async with sessions() as session:
        await pubsub_item_reads.page_items(session, node_id, None, None)
        with pytest.raises(PagingError):
            await pubsub_item_reads.page_items(session, node_id, RsmRequest(after="gone"), None)
    await pubsub_leases.try_acquire_sync(sessions, node_id, "me", T0, timedelta(seconds=5))
    assert {op: observed(op) - count for op, count in before.items()} == {
        "ensure_node": 1,
        "page_items": 2,
        "try_acquire_sync": 1,
    }


# --- RSM paging: the SQL agrees with paginate() --------------------------------------

Outcome = Page[ItemRecord] | tuple[str, str]


def pure(records: Sequence[ItemRecord], rsm: RsmRequest | None, max_items: int | None) -> Outcome:
    try:
        return paginate(records, lambda record: record.item_id, rsm, max_items)
    except PagingError as error:
        return ("error", error.condition)


async def in_sql(
    session: AsyncSession, node_id: int, rsm: RsmRequest | None, max_items: int | None
) -> Outcome:
    try:
        return await pubsub_item_reads.page_items(session, node_id, rsm, max_items)
    except PagingError as error:
        # The error must carry a text for the stanza; a missing one shows as a mismatch.
        return ("error", error.condition if error.text else "error without a text")


class Mirror:
    """Items stored in a node and, independently, the order they must come back in."""

    def __init__(self) -> None:
        self.records: dict[str, ItemRecord] = {}
        self.sequence: dict[str, int] = {}  # first insertion order: the tie-break

    async def upsert(
        self, sessions: Sessions, node_id: int, items: Sequence[ItemInput], now: datetime
    ) -> None:
        await store(sessions, node_id, items, now)
        for item in items:
            known = self.records.get(item.item_id)
            created = known.created if known else (item.created or now)
            self.sequence.setdefault(item.item_id, len(self.sequence))
            self.records[item.item_id] = ItemRecord(
                item.item_id, item.data, item.parsed, item.publisher, created, now
            )

    def oldest_first(self) -> list[ItemRecord]:
        return sorted(self.records.values(), key=lambda r: (r.created, self.sequence[r.item_id]))


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


async def twelve_items(sessions: Sessions, node_id: int) -> Mirror:
    """Twelve items whose chronological order is neither id nor insertion order."""
    mirror = Mirror()
    await mirror.upsert(
        sessions,
        node_id,
        [simple("k"), simple("b"), simple("x", minutes(1)), simple("d")],
        minutes(10),
    )
    await mirror.upsert(
        sessions,
        node_id,
        [simple("a"), simple("m", minutes(10)), simple("e", minutes(0)), simple("q")],
        minutes(20),
    )
    await mirror.upsert(
        sessions,
        node_id,
        [
            simple("c"),
            simple("z", minutes(20)),
            ItemInput("b", xml("b", "edited"), parsed={"v": 2}, created=minutes(99)),
            simple("f", minutes(10)),
            simple("g"),
        ],
        minutes(30),
    )
    return mirror


def rsm_requests(anchors: Sequence[str]) -> list[RsmRequest | None]:
    requests: list[RsmRequest | None] = [None, RsmRequest(before="")]
    for size in (None, 0, 1, 2, 5, 12, 50):
        requests += [RsmRequest(max=size), RsmRequest(max=size, before="")]
        for anchor in [*anchors, "unknown"]:
            requests += [RsmRequest(max=size, after=anchor), RsmRequest(max=size, before=anchor)]
        requests += [RsmRequest(max=size, index=index) for index in (0, 1, 4, 11, 12, 13, 500)]
    return requests


MAX_ITEMS = (None, 1, 3, 12, 13, 0, -2)


async def test_page_items_agrees_with_paginate(sessions: Sessions) -> None:
    node_id = await new_node(sessions)
    empty = await new_node(sessions, "empty")
    single = await new_node(sessions, "single")
    mirror = await twelve_items(sessions, node_id)
    lone = Mirror()
    await lone.upsert(sessions, single, [simple("b")], T0)

    expected = mirror.oldest_first()
    assert [r.item_id for r in expected] == list("exkbdmfaqzcg")
    assert await ids_of(sessions, node_id) == list("exkbdmfaqzcg")
    requests = rsm_requests([r.item_id for r in expected])

    mismatches = []
    pages = errors = 0
    async with sessions() as session:
        for target, records in (
            (node_id, expected),
            (empty, []),
            (single, lone.oldest_first()),
        ):
            for max_items in MAX_ITEMS:
                for rsm in requests:
                    want = pure(records, rsm, max_items)
                    got = await in_sql(session, target, rsm, max_items)
                    if got != want:
                        mismatches.append((target, rsm, max_items, got, want))
                    if isinstance(want, Page) and want.items:
                        pages += 1
                    elif not isinstance(want, Page):
                        errors += 1
    assert mismatches == []
    # The table exercises both outcomes, many times over.
    assert pages > 500
    assert errors > 500


async def test_page_items_on_a_thousand_items(engine: AsyncEngine, sessions: Sessions) -> None:
    node_id = await new_node(sessions)
    mirror = Mirror()
    for batch in range(10):
        # Scrambled created times with plenty of ties, plus some items left to `now`.
        items = [
            simple(f"item-{n:04d}", None if n % 10 == 0 else minutes((n * 7919) % 997 // 3))
            for n in range(batch * 100, batch * 100 + 100)
        ]
        await mirror.upsert(sessions, node_id, items, minutes(400 + batch))
    expected = mirror.oldest_first()
    ids = [r.item_id for r in expected]
    assert ids != sorted(ids)

    async with sessions() as session:
        forward: list[ItemRecord] = []
        page = await pubsub_item_reads.page_items(session, node_id, RsmRequest(max=37), None)
        while page.items:
            assert page.first_index == len(forward)
            assert (page.count, page.complete) == (1000, False)
            forward.extend(page.items)
            page = await pubsub_item_reads.page_items(
                session, node_id, RsmRequest(max=37, after=page.last), None
            )
        assert forward == expected

        backward: list[ItemRecord] = []
        page = await pubsub_item_reads.page_items(
            session, node_id, RsmRequest(max=64, before=""), None
        )
        while page.items:
            assert page.first_index == 1000 - len(backward) - len(page.items)
            backward[:0] = page.items
            page = await pubsub_item_reads.page_items(
                session, node_id, RsmRequest(max=64, before=page.first), None
            )
        assert backward == expected

        samples: list[tuple[RsmRequest | None, int | None]] = [
            (None, None),
            (None, 20),
            (RsmRequest(max=10, index=0), None),
            (RsmRequest(max=10, index=495), None),
            (RsmRequest(max=10, index=995), None),
            (RsmRequest(max=10, before=""), 100),
            (RsmRequest(max=10, after=ids[950]), 100),
            (RsmRequest(max=10, after=ids[850]), 100),
            (RsmRequest(max=0), None),
            (RsmRequest(max=5, before=ids[3]), None),
            (RsmRequest(max=5, after=ids[-1]), None),
        ]
        for rsm, max_items in samples:
            assert await in_sql(session, node_id, rsm, max_items) == pure(expected, rsm, max_items)

        # Computed in SQL: a page is two statements, and only the page's rows are read.
        with recorded_statements(engine) as statements:
            page = await pubsub_item_reads.page_items(
                session, node_id, RsmRequest(max=10, index=500), None
            )
        assert [r.item_id for r in page.items] == ids[500:510]
        assert len(statements) == 2
        assert "LIMIT" in statements[1].upper()


@contextmanager
def recorded_statements(engine: AsyncEngine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
