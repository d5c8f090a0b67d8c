"""Every Alembic revision upgrades and downgrades, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from component.storage import migrate
from component.storage.engine import create_engine
from component.storage.models import Base

pytestmark = pytest.mark.integration


def revisions_oldest_first() -> list[str]:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


async def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    return names - {"alembic_version"}


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
                lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
            )
        assert diff == []
    finally:
        await engine.dispose()


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
