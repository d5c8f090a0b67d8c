"""Every Alembic revision upgrades and downgrades, on SQLite and PostgreSQL, keeping data."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from component.storage import migrate
from component.storage.engine import create_engine
from component.storage.models import Base
from tests.fixtures.make_old_databases import OLD_DATABASES, fill
from tests.harness.herald import spawn

pytestmark = pytest.mark.integration

Snapshot = dict[str, list[dict[str, Any]]]


def revisions_oldest_first() -> list[str]:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


REVISIONS = revisions_oldest_first()


def _snapshot(connection: Connection) -> Snapshot:
    """Every row of every table (but alembic_version), as the database returns it."""
    inspector = inspect(connection)
    snapshot: Snapshot = {}
    for table in sorted(inspector.get_table_names()):
        if table == "alembic_version" or is_search_index(table):
            continue
        order = ", ".join(inspector.get_pk_constraint(table)["constrained_columns"])
        result = connection.execute(text(f"SELECT * FROM {table} ORDER BY {order}"))
        snapshot[table] = [dict(row._mapping) for row in result]
    return snapshot


async def snapshot(engine: AsyncEngine) -> Snapshot:
    """_snapshot() through an engine."""
    async with engine.connect() as conn:
        return await conn.run_sync(_snapshot)


def is_search_index(table: str) -> bool:
    """The search index (and SQLite's FTS5 shadow tables): derived from the items, so
    compared by what it finds (test_upgrade_indexes_the_cached_items), not row by row."""
    return table.startswith("pubsub_search")


def counts(snap: Snapshot) -> dict[str, int]:
    return {table: len(rows) for table, rows in snap.items()}


def assert_kept(before: Snapshot, after: Snapshot, tables: set[str]) -> None:
    """Each table in tables has the same rows after as before, on the columns both have."""
    for table in sorted(tables):
        old, new = before[table], after[table]
        assert len(new) == len(old), f"{table}: {len(old)} rows before, {len(new)} after"
        if not old:
            continue
        columns = set(old[0]) & set(new[0])
        for was, now in zip(old, new, strict=True):
            kept = {c: now[c] for c in columns}
            assert kept == {c: was[c] for c in columns}, f"{table}: row changed"


def figure(before: Snapshot, after: Snapshot) -> str:
    return ", ".join(
        f"{table} {len(rows)}/{len(after.get(table, []))}" for table, rows in before.items()
    )


async def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    return {name for name in names if not is_search_index(name)} - {"alembic_version"}


async def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        assert await migrate.current_revision(engine) == ()
        await migrate.upgrade(engine)
        assert await migrate.current_revision(engine) == (migrate.head_revision(),)
        assert await table_names(db_url) == set(Base.metadata.tables)

        await migrate.downgrade(engine, "base")
        assert await migrate.current_revision(engine) == ()
        assert await table_names(db_url) == set()

        await migrate.upgrade(engine)
        assert await migrate.current_revision(engine) == (migrate.head_revision(),)
    finally:
        await engine.dispose()


async def test_each_revision_steps_up_and_down(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        revisions = revisions_oldest_first()
        for revision in revisions:
            await migrate.upgrade(engine, revision)
            assert await migrate.current_revision(engine) == (revision,)
        for previous in [*reversed(revisions[:-1]), "base"]:
            await migrate.downgrade(engine, "-1")
            expected = () if previous == "base" else (previous,)
            assert await migrate.current_revision(engine) == expected
    finally:
        await engine.dispose()


async def test_models_match_the_migrations(db_url: str) -> None:
    """Autogenerate finds nothing to do: the models and the revisions agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(db_url)
    try:
        await migrate.upgrade(engine)
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"include_name": _not_search}),
                    Base.metadata,
                )
            )
        assert diff == []
    finally:
        await engine.dispose()


def _not_search(name: str | None, kind: str, _parents: object) -> bool:
    return not (kind == "table" and name is not None and is_search_index(name))


async def test_refuses_a_database_from_a_newer_herald(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        await migrate.upgrade(engine)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = 'fffffffffff9'"))
        with pytest.raises(migrate.UnknownRevisionError, match="fffffffffff9"):
            await migrate.upgrade(engine)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("previous", REVISIONS[:-1], ids=lambda r: f"from-{r}")
async def test_upgrade_to_head_keeps_every_row(db_url: str, previous: str) -> None:
    """A database filled at each older revision comes through the upgrade to head intact."""
    engine = create_engine(db_url)
    try:
        await migrate.upgrade(engine, previous)
        async with engine.begin() as conn:
            await conn.run_sync(fill)
        before = await snapshot(engine)
        await migrate.upgrade(engine)
        after = await snapshot(engine)
    finally:
        await engine.dispose()
    print(f"{previous} -> head: rows before/after: {figure(before, after)}")
    assert set(before) <= set(after)
    assert_kept(before, after, set(before))
    for table, rows in before.items():
        # every column the older schema had is still there
        if rows:
            assert set(rows[0]) <= set(after[table][0]), table


@pytest.mark.parametrize("older", REVISIONS[:-1], ids=lambda r: f"to-{r}")
async def test_downgrade_from_head_keeps_what_the_older_schema_holds(
    db_url: str, older: str
) -> None:
    """Downgrading drops only the tables and columns the older revision lacks."""
    engine = create_engine(db_url)
    try:
        await migrate.upgrade(engine)
        async with engine.begin() as conn:
            await conn.run_sync(fill)
        before = await snapshot(engine)
        await migrate.downgrade(engine, older)
        assert await migrate.current_revision(engine) == (older,)
        after = await snapshot(engine)
    finally:
        await engine.dispose()
    print(f"head -> {older}: rows before/after: {figure(before, after)}")
    assert set(after) <= set(before)
    assert_kept(before, after, set(after))


@pytest.mark.parametrize("revision", sorted(OLD_DATABASES))
def test_herald_migrate_upgrades_an_old_release_database(tmp_path: Path, revision: str) -> None:
    """`herald migrate` on a copy of a database an older release wrote keeps all its data."""
    fixture = OLD_DATABASES[revision]
    copy = tmp_path / "herald.sqlite"
    shutil.copyfile(fixture, copy)
    config = tmp_path / "herald.toml"
    config.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{copy}"\n')

    def read(path: Path) -> tuple[str, Snapshot]:
        with sqlite3.connect(path) as db:
            db.row_factory = sqlite3.Row
            (version,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
            tables = [
                name
                for (name,) in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
                if name != "alembic_version"
            ]
            snap = {
                t: [dict(r) for r in db.execute(f"SELECT * FROM {t} ORDER BY 1")] for t in tables
            }
        db.close()
        return version, snap

    old_version, before = read(fixture)
    assert old_version == revision
    assert before["pubsub_nodes"], "the fixture holds no pubsub nodes"
    assert before["pubsub_items"], "the fixture holds no pubsub items"

    proc = spawn(config, "migrate")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err

    new_version, after = read(copy)
    print(
        f"{revision} -> {new_version} (herald migrate): rows before/after: {figure(before, after)}"
    )
    assert new_version == migrate.head_revision(), out
    assert_kept(before, after, set(before))
    states = [(n["id"], n["sync_state"]) for n in before["pubsub_nodes"]]
    assert [(n["id"], n["sync_state"]) for n in after["pubsub_nodes"]] == states


async def test_foreign_keys_cascade_again_after_migrating(db_url: str) -> None:
    """The migration turns SQLite's foreign keys off; the pooled connection gets them back."""
    engine = create_engine(db_url)
    try:
        await migrate.upgrade(engine, REVISIONS[-2])
        async with engine.begin() as conn:
            await conn.run_sync(fill)
        await migrate.upgrade(engine)
        before = await snapshot(engine)
        async with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            await conn.execute(text("DELETE FROM pubsub_nodes WHERE id = 1"))
        after = await snapshot(engine)
    finally:
        await engine.dispose()
    print(f"after deleting node 1: rows before/after: {figure(before, after)}")
    assert [i for i in before["pubsub_items"] if i["node_id"] != 1] == after["pubsub_items"]
    assert len(after["pubsub_items"]) < len(before["pubsub_items"])


async def test_a_dangling_row_fails_the_sqlite_migration_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """PRAGMA foreign_key_check runs before the commit; a failed migration is rolled back."""
    path = tmp_path / "herald.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await migrate.upgrade(engine, REVISIONS[-2])
        async with engine.begin() as conn:
            await conn.run_sync(fill)
    finally:
        await engine.dispose()
    with sqlite3.connect(path) as db:  # foreign keys off: plain sqlite3's default
        db.execute(
            "INSERT INTO pubsub_items (id, node_id, item_id, data, created, updated) "
            "VALUES (99, 404, 'orphan', '<item/>', '2026-11-20 09:00:00', '2026-11-20 09:00:00')"
        )
        schema_before = db.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
    db.close()

    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        before = await snapshot(engine)
        with pytest.raises(migrate.ForeignKeyViolationError, match="1 pubsub_items row"):
            await migrate.upgrade(engine)
        assert await migrate.current_revision(engine) == (REVISIONS[-2],)
        after = await snapshot(engine)
    finally:
        await engine.dispose()
    with sqlite3.connect(path) as db:
        schema_after = db.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
    db.close()
    print(f"failed migration: rows before/after: {figure(before, after)}")
    assert schema_after == schema_before
    assert after == before


async def test_alembic_refuses_an_sqlite_connection_enforcing_foreign_keys(tmp_path: Path) -> None:
    """Handing env.py a connection with foreign keys on (bypassing migrate) fails, not cascades."""
    from alembic import command

    def upgrade_directly(connection: Connection) -> None:
        config = migrate.alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'herald.db'}")
    try:
        async with engine.begin() as conn:
            with pytest.raises(RuntimeError, match="foreign keys off"):
                await conn.run_sync(upgrade_directly)
    finally:
        await engine.dispose()
    print("env.py refused a connection with PRAGMA foreign_keys=ON")


async def test_upgrade_indexes_the_cached_items(db_url: str) -> None:
    """The search revision indexes the items cached before it; its downgrade drops it."""
    from component.search_text import terms
    from component.storage.engine import session_factory
    from component.storage.search_repo import SearchFilter, search_items

    search = REVISIONS.index("0006")
    engine = create_engine(db_url)
    try:
        await migrate.upgrade(engine, REVISIONS[search - 1])
        async with engine.begin() as conn:
            await conn.run_sync(fill)
        await migrate.upgrade(engine, "0006")
        async with session_factory(engine)() as session:
            words = await search_items(session, 1, SearchFilter(tuple(terms("foremost"))), None)
            title = await search_items(session, 1, SearchFilter(tuple(terms("ca", "title"))), None)
            everything = await search_items(session, 1, SearchFilter(), None)
        print(
            f"after upgrade: 'foremost' finds {[i.item_id for i in words.items]}, "
            f"title 'ca' finds {[i.item_id for i in title.items]}, node 1 holds {everything.count}"
        )
        assert [i.item_id for i in words.items] == ["first-post"]
        assert [i.item_id for i in title.items] == ["2026-11-20-ünïcode"]
        await migrate.downgrade(engine, REVISIONS[search - 1])
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert not {name for name in names if is_search_index(name)}
    finally:
        await engine.dispose()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_the_search_index_takes_entries_at_once_from_0007(db_url: str) -> None:
    """0007 turns the GIN index's fast update off (and back on when undone)."""
    options = text("SELECT reloptions FROM pg_class WHERE relname = 'ix_pubsub_search_document'")
    engine = create_engine(db_url)
    seen = {}
    try:
        for revision in ("0006", "0007", "0006"):
            if revision == "0006" and seen:
                await migrate.downgrade(engine, revision)
            else:
                await migrate.upgrade(engine, revision)
            async with engine.connect() as conn:
                seen[len(seen)] = (revision, (await conn.execute(options)).scalar_one())
    finally:
        await engine.dispose()
    print(f"GIN index options by revision: {list(seen.values())}")
    assert list(seen.values()) == [("0006", None), ("0007", ["fastupdate=off"]), ("0006", None)]
