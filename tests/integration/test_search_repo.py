"""The search index on SQLite and PostgreSQL: kept in step with every item write."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text as sa_text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from component.paging import PagingError, RsmRequest
from component.search_text import terms
from component.storage import migrate, pubsub_item_writes, pubsub_nodes, search_repo
from component.storage.engine import create_engine, session_factory
from component.storage.records import ItemInput
from component.storage.search_repo import SearchFilter

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ATOM = "http://www.w3.org/2005/Atom"
Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url)
    await migrate.upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> Sessions:
    return session_factory(engine)


def entry(item_id: str, title: str, body: str, minutes: int, tags: Sequence[str] = ()) -> ItemInput:
    data = f"<entry xmlns='{ATOM}'><title>{title}</title><content>{body}</content></entry>"
    parsed = {"title": title, "content": body, "categories": list(tags)}
    return ItemInput(item_id, data, parsed, created=T0 + timedelta(minutes=minutes))


ITEMS = [
    entry("a", "Ça marche", "the quick brown fox", 0, ["news"]),
    entry("b", "Second", "a lazy dog sleeps", 1, ["pets"]),
    entry("c", "Fox news", "quick thinking", 2, ["news", "pets"]),
    entry("d", "Other", "nothing to see", 3),
]


async def node_with(sessions: Sessions, items: Sequence[ItemInput], name: str = "blog") -> int:
    async with sessions.begin() as session:
        node = await pubsub_nodes.ensure_node(
            session, "pubsub.example.org", name, analyser="b", now=T0
        )
        await pubsub_item_writes.upsert_items(session, node.id, items, T0)
        return node.id


async def found(
    sessions: Sessions, node_id: int, wanted: SearchFilter, rsm: RsmRequest | None = None
) -> list[str]:
    async with sessions() as session:
        page = await search_repo.search_items(session, node_id, wanted, rsm)
    return [item.item_id for item in page.items]


def text(value: str, key: str | None = None) -> SearchFilter:
    return SearchFilter(tuple(terms(value, key)))


async def test_fulltext_parsed_fields_and_times(sessions: Sessions) -> None:
    node = await node_with(sessions, ITEMS)
    await node_with(sessions, [entry("x", "fox", "quick fox", 0)], name="other")
    assert await found(sessions, node, text("quick")) == ["a", "c"]
    assert await found(sessions, node, text("QUICK fox")) == ["a", "c"]
    assert await found(sessions, node, text("ca")) == ["a"]  # accents and case folded
    assert await found(sessions, node, text("fox", "title")) == ["c"]
    assert await found(sessions, node, text("pets", "categories")) == ["b", "c"]
    assert await found(sessions, node, text("news", "content")) == []
    window = SearchFilter(start=T0 + timedelta(minutes=1), end=T0 + timedelta(minutes=2))
    assert await found(sessions, node, window) == ["b", "c"]
    assert await found(sessions, node, SearchFilter()) == ["a", "b", "c", "d"]


async def test_index_follows_updates_retracts_purges_and_node_deletion(sessions: Sessions) -> None:
    node = await node_with(sessions, ITEMS)
    async with sessions.begin() as session:
        await pubsub_item_writes.upsert_items(
            session, node, [entry("a", "Renamed", "slow turtle", 0)], T0
        )
        await pubsub_item_writes.retract_items(session, node, ["c"])
    assert await found(sessions, node, text("quick")) == []
    assert await found(sessions, node, text("turtle")) == ["a"]
    async with sessions.begin() as session:
        await pubsub_item_writes.trim_items(session, node, 2)
    remaining = await found(sessions, node, SearchFilter())
    assert remaining == ["b", "d"]
    assert await found(sessions, node, text("turtle")) == []
    async with sessions.begin() as session:
        await pubsub_item_writes.replace_items(
            session, node, [entry("e", "New", "quick again", 9)], T0
        )
    assert await found(sessions, node, text("quick")) == ["e"]
    assert await found(sessions, node, text("turtle")) == []
    async with sessions.begin() as session:
        await pubsub_nodes.delete_node(session, "pubsub.example.org", "blog")
    async with sessions() as session:
        index, _ = await search_repo.index_size(session)
        assert index > 0  # the index's own pages remain, empty
        entries = await _entries(session)
    print(f"after trim: {remaining}; index entries left after deleting the node: {entries}")
    assert entries == 0


async def _entries(session: AsyncSession) -> int:
    from sqlalchemy import text as sql

    value = (await session.execute(sql("SELECT count(*) FROM pubsub_search"))).scalar_one()
    return int(value)


async def test_paging_matches_paginate(sessions: Sessions) -> None:
    items = [entry(f"i{n:02}", "t", f"word{n % 2} common", n) for n in range(10)]
    node = await node_with(sessions, items)
    common = text("common")
    assert await found(sessions, node, common, RsmRequest(max=3)) == ["i00", "i01", "i02"]
    assert await found(sessions, node, common, RsmRequest(max=3, after="i02")) == [
        "i03",
        "i04",
        "i05",
    ]
    assert await found(sessions, node, common, RsmRequest(max=3, before="")) == [
        "i07",
        "i08",
        "i09",
    ]
    assert await found(sessions, node, common, RsmRequest(max=2, before="i07")) == ["i05", "i06"]
    async with sessions() as session:
        page = await search_repo.search_items(session, node, text("word1"), RsmRequest(max=2))
    assert (page.first, page.first_index, page.last, page.count) == ("i01", 0, "i03", 5)
    with pytest.raises(PagingError, match="i02"):
        await found(sessions, node, text("word1"), RsmRequest(after="i02"))


async def test_parsed_keys(sessions: Sessions) -> None:
    node = await node_with(
        sessions,
        [*ITEMS, ItemInput("raw", "<x xmlns='y'>quick</x>", created=T0 + timedelta(hours=1))],
    )
    async with sessions() as session:
        assert await search_repo.parsed_keys(session, node) == ["categories", "content", "title"]
    assert await found(sessions, node, text("quick")) == ["a", "c", "raw"]


async def _work(session: AsyncSession, node_id: int) -> int:
    """What one search for "needle" costs, in units that do not depend on the
    machine: SQLite's virtual-machine steps (in tens), PostgreSQL's item rows read."""
    if session.get_bind().dialect.name == "sqlite":
        driver = (await (await session.connection()).get_raw_connection()).driver_connection
        counted = [0]

        def step() -> int:
            counted[0] += 1
            return 0  # go on

        await driver.set_progress_handler(step, 10)
        page = await search_repo.search_items(session, node_id, text("needle"), None)
        await driver.set_progress_handler(None, 0)
        assert page.count == 3
        return counted[0]
    rows_read = sa_text(
        "SELECT pg_stat_get_xact_tuples_returned('pubsub_items'::regclass)"
        " + pg_stat_get_xact_tuples_fetched('pubsub_items'::regclass)"
    )
    before = (await session.execute(rows_read)).scalar_one()
    page = await search_repo.search_items(session, node_id, text("needle"), None)
    assert page.count == 3
    return int((await session.execute(rows_read)).scalar_one() - before)


async def test_a_selective_search_costs_its_matches_not_the_node(sessions: Sessions) -> None:
    """The work of a search matching 3 items does not grow with the node (issue 14:
    both planners walked all the node's items, 10 ms on SQLite and, before the
    statistics of a first sync exist, 165 ms on PostgreSQL at 100,000 items)."""

    def items(count: int) -> list[ItemInput]:
        return [
            entry(f"i{n}", f"Post {n}", "needle" if n % (count // 3) == 0 else "hay", n)
            for n in range(count)
        ]

    small = await node_with(sessions, items(30), name="small")
    big = await node_with(sessions, items(3000), name="big")
    work = {}
    for node in (small, big):
        async with sessions() as session:
            work[node] = await _work(session, node)
    assert work[big] < 2 * work[small] + 50, work


async def test_with_matches_the_publisher(sessions: Sessions) -> None:
    """XEP-0313's 'with' on a pubsub archive: the publisher; a bare JID also matches
    its full JIDs, and nothing else that merely starts like it."""
    data = f"<entry xmlns='{ATOM}'><title>Hello</title></entry>"
    publishers = {
        "a": "juliet@capulet.lit/balcony",
        "b": "juliet@capulet.lit",
        "c": "romeo@montague.lit/garden",
        "d": None,
        "e": "juliet@capulet.lit.evil/x",
        "f": "juliet@capulet.litx",
    }
    node = await node_with(
        sessions,
        [
            ItemInput(item_id, data, None, publisher, T0 + timedelta(minutes=n))
            for n, (item_id, publisher) in enumerate(publishers.items())
        ],
    )

    def by(jid: str, words: str = "") -> SearchFilter:
        return SearchFilter(tuple(terms(words)), publisher=jid)

    assert await found(sessions, node, by("juliet@capulet.lit")) == ["a", "b"]
    assert await found(sessions, node, by("juliet@capulet.lit/balcony")) == ["a"]
    assert await found(sessions, node, by("romeo@montague.lit", "hello")) == ["c"]
    assert await found(sessions, node, by("romeo@montague.lit", "bye")) == []
    assert await found(sessions, node, by("nobody@capulet.lit")) == []
