"""Alembic environment: runs on a connection handed over by Herald, or on its own (CLI)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from component.storage.migrate import check_foreign_keys, foreign_keys_enforced
from component.storage.models import Base

target_metadata = Base.metadata


def _configure_and_run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite and foreign_keys_enforced(connection):
        # A batch-mode table rebuild drops the old table: with foreign keys on, that
        # cascades and deletes the rows of every table referring to it.
        raise RuntimeError(
            "SQLite migrations must run with foreign keys off; "
            "use component.storage.migrate (herald migrate), which does that"
        )
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        if sqlite:
            # nothing enforced foreign keys during the migration: check before commit
            check_foreign_keys(connection)


async def _run_standalone(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(_configure_and_run)
    await engine.dispose()


def run() -> None:
    """Entry point Alembic calls."""
    if context.is_offline_mode():
        context.configure(
            url=context.config.get_main_option("sqlalchemy.url"),
            target_metadata=target_metadata,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
    else:
        url = context.config.get_main_option("sqlalchemy.url")
        if not url:
            raise SystemExit("set sqlalchemy.url (alembic -x or [tool.alembic]) to run standalone")
        asyncio.run(_run_standalone(url))


run()
