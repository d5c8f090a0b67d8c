"""All SQL of cache search: the full-text index of items, kept in step, and queries.

The index holds one search document per item (``component.search_text``), keyed by
the item's row id:
- SQLite: the FTS5 table ``pubsub_search`` (rowid = ``pubsub_items.id``); a trigger
  on ``pubsub_items`` deletes the entry of every deleted item (retract, trim, purge,
  and the cascade of a node's deletion).
- PostgreSQL: the table ``pubsub_search`` (``item_pk`` references ``pubsub_items.id``
  ON DELETE CASCADE) with a ``tsvector`` under a GIN index.
Parsed keys are indexed in the same document, as key-tagged words, so the one index
serves fulltext and every parsed key. ``index_items`` runs in the caller's
transaction, right after the items are written: the index never lags the items.

Searching selects the matching items' keys in chronological order, pages them with
``component.paging.paginate`` (so RSM behaves exactly as for items reads), then reads
the rows of the page only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import TextClause, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from component.paging import Page, RsmRequest, paginate
from component.search_text import document
from component.storage.convert import item_record, to_db
from component.storage.pubsub_tables import ITEM_COLUMNS, ITEMS, chunks
from component.storage.records import ItemRecord
from component.storage.timing import timed


@dataclass(frozen=True)
class SearchFilter:
    """What a search asks: every term in the item's document, its time in [start, end],
    its publisher (a bare JID matches its full JIDs too)."""

    terms: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    publisher: str | None = None


def _dialect(session: AsyncSession) -> str:
    name = session.get_bind().dialect.name
    if name not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"search supports SQLite and PostgreSQL, not {name}")
    return name


_INDEX_SQL: Final = {
    # Many rows through the DB-API's executemany: in process, one call.
    "sqlite": "INSERT OR REPLACE INTO pubsub_search (rowid, document) VALUES (:item_pk, :document)",
    # One statement over arrays: psycopg's executemany sends a statement per row (its
    # pipeline was 9% of Herald's CPU applying notifications on PostgreSQL).
    "postgresql": (
        "INSERT INTO pubsub_search (item_pk, document) "
        "SELECT t.pk, to_tsvector('simple', t.doc) "
        "FROM unnest(CAST(:item_pks AS integer[]), CAST(:documents AS text[])) AS t(pk, doc) "
        "ON CONFLICT (item_pk) DO UPDATE SET document = excluded.document"
    ),
}


@timed("index_items")
async def index_items(
    session: AsyncSession, rows: Sequence[Mapping[str, Any]], item_pks: Sequence[int]
) -> None:
    """(Re)index stored items, given as the rows written (data, parsed_value) and
    their row ids, in the same order; call it in the transaction that wrote them."""
    pairs = list(zip(item_pks, (document(r["data"], r["parsed_value"]) for r in rows), strict=True))
    if not pairs:
        return
    dialect = _dialect(session)
    if dialect == "postgresql":
        pks, documents = zip(*pairs, strict=True)
        arrays = {"item_pks": list(pks), "documents": list(documents)}
        await session.execute(text(_INDEX_SQL[dialect]), arrays)
    else:
        each = [{"item_pk": pk, "document": d} for pk, d in pairs]
        await session.execute(text(_INDEX_SQL[dialect]), each)


@timed("search_items")
async def search_items(
    session: AsyncSession, node_id: int, wanted: SearchFilter, rsm: RsmRequest | None
) -> Page[ItemRecord]:
    """The page of the node's matching items that ``rsm`` asks for (oldest first).

    Raises PagingError as ``paginate`` does (item-not-found for an unknown anchor).
    """
    statement, params = matching(_dialect(session), node_id, wanted)
    rows = await session.execute(statement, params)
    keys: list[tuple[int, str]] = [(row[0], row[1]) for row in rows]
    page = paginate(keys, _key_id, rsm, None)
    records = await _rows(session, [key[0] for key in page.items])
    return Page(tuple(records), page.first, page.first_index, page.last, page.count, page.complete)


def matching(dialect: str, node_id: int, wanted: SearchFilter) -> tuple[TextClause, dict[str, Any]]:
    """The statement of the matching items' keys (row id, item id), oldest first.

    With terms, the index's matches drive: the items are read by row id, and the
    node is only checked on them. Left to choose, both planners may instead walk
    all the node's items and test each against the matches, a cost that grows with
    the node, not with the result (issue 14: SQLite walked the node's index for the
    ORDER BY, 10 ms vs 0.5 ms for 100 matches among 100,000 items; PostgreSQL, with
    no statistics yet after a node's first sync, 165 ms). So the node's test is kept
    from any index: a unary + (SQLite), ``+ 0`` (PostgreSQL), and PostgreSQL gets
    the matches as an array, one index lookup each.
    """
    where = ["i.node_id = :node_id"]
    params: dict[str, Any] = {"node_id": node_id}
    times = []
    if wanted.terms:
        # The index is asked once, in a subquery: joined, SQLite's planner walks the
        # node's items and runs the full-text query once per item (1.3 s vs 30 ms at
        # 100,000 items).
        if dialect == "sqlite":
            where = [
                "+i.node_id = :node_id",
                "i.id IN (SELECT rowid FROM pubsub_search WHERE pubsub_search MATCH :query)",
            ]
            # Terms are letters and digits only: quoting each makes it a plain token.
            params["query"] = " ".join(f'"{term}"' for term in wanted.terms)
        else:
            where = [
                "i.node_id + 0 = :node_id",
                "i.id = ANY(ARRAY(SELECT item_pk FROM pubsub_search "
                "WHERE document @@ plainto_tsquery('simple', :query)))",
            ]
            params["query"] = " ".join(wanted.terms)
    for name, op, value in (("start", ">=", wanted.start), ("end", "<=", wanted.end)):
        if value is not None:
            where.append(f"i.created {op} :{name}")
            params[name] = to_db(value)
            times.append(bindparam(name, type_=ITEMS.c.created.type))
    if wanted.publisher is not None:
        params["publisher"] = wanted.publisher
        if "/" in wanted.publisher:
            where.append("i.publisher = :publisher")
        else:
            # substr, not LIKE: a JID may hold % and _.
            params["resource_of"] = wanted.publisher + "/"
            params["prefix"] = len(params["resource_of"])
            where.append(
                "(i.publisher = :publisher OR substr(i.publisher, 1, :prefix) = :resource_of)"
            )
    statement = text(
        "SELECT i.id, i.item_id FROM pubsub_items i "
        f"WHERE {' AND '.join(where)} ORDER BY i.created, i.id"
    ).bindparams(*times)
    return statement, params


def _key_id(key: tuple[int, str]) -> str:
    return key[1]


async def _rows(session: AsyncSession, ids: Sequence[int]) -> list[ItemRecord]:
    """The items with these row ids, in the order given."""
    found: dict[int, ItemRecord] = {}
    for chunk in chunks(ids):
        query = select(*ITEM_COLUMNS).where(ITEMS.c.id.in_(chunk))
        for row in await session.execute(query):
            found[row.id] = item_record(row._mapping)
    return [found[i] for i in ids if i in found]


@timed("parsed_keys")
async def parsed_keys(session: AsyncSession, node_id: int) -> list[str]:
    """The top-level keys of the node's parsed items, sorted."""
    if _dialect(session) == "sqlite":
        sql = (
            "SELECT DISTINCT k.key FROM pubsub_items i, json_each(i.parsed) k "
            "WHERE i.node_id = :node_id AND json_type(i.parsed) = 'object'"
        )
    else:
        sql = (
            "SELECT DISTINCT jsonb_object_keys(i.parsed::jsonb) FROM pubsub_items i "
            "WHERE i.node_id = :node_id AND json_typeof(i.parsed) = 'object'"
        )
    rows = await session.execute(text(sql), {"node_id": node_id})
    return sorted(str(row[0]) for row in rows)


async def index_size(session: AsyncSession) -> tuple[int, int]:
    """Bytes on disk of the search index and of the items table (with its indexes)."""
    if _dialect(session) == "sqlite":
        sql = (
            "SELECT coalesce(sum(CASE WHEN name LIKE 'pubsub_search%' THEN pgsize END), 0), "
            "coalesce(sum(CASE WHEN tbl_name = 'pubsub_items' THEN pgsize END), 0) "
            "FROM dbstat JOIN sqlite_master USING (name)"
        )
    else:
        sql = (
            "SELECT pg_total_relation_size('pubsub_search'), pg_total_relation_size('pubsub_items')"
        )
    row = (await session.execute(text(sql))).one()
    return int(row[0]), int(row[1])
