"""Programmatic Alembic: upgrade at start-up, refuse databases from a newer Herald."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import component


class UnknownRevisionError(RuntimeError):
    """The database was migrated by a Herald newer than this one (or by something else)."""


class ForeignKeyViolationError(RuntimeError):
    """After migrating, SQLite's foreign_key_check found rows that point at nothing."""


def migrations_path() -> Path:
    """Where the Alembic scripts are: inside the installed wheel, or the source tree."""
    package_dir = Path(component.__file__).resolve().parent
    shipped = package_dir / "_migrations"
    if (shipped / "env.py").is_file():
        return shipped
    return package_dir.parent / "migrations"


def alembic_config() -> Config:
    """An Alembic Config that needs no alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(migrations_path()))
    return config


def head_revision() -> str | None:
    """The newest revision this code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _current(connection: Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(connection).get_current_heads())


def _check_known(connection: Connection, config: Config) -> None:
    script = ScriptDirectory.from_config(config)
    for revision in _current(connection):
        try:
            known = script.get_revision(revision)
        except CommandError:
            known = None
        if known is None:
            raise UnknownRevisionError(
                f"the database is at schema revision {revision!r}, which this Herald "
                f"({component.__version__}) does not know; it was probably migrated by a "
                "newer Herald. Upgrade Herald, or restore a backup taken before that upgrade."
            )


def foreign_keys_enforced(connection: Connection) -> bool:
    """Whether SQLite enforces foreign keys on this connection."""
    return bool(connection.exec_driver_sql("PRAGMA foreign_keys").scalar())


def check_foreign_keys(connection: Connection) -> None:
    """Raise ForeignKeyViolationError if any SQLite row refers to a missing parent row.

    Migrations run with foreign keys off (see _migration_connection), so nothing
    checked them while tables were rebuilt; this is the check, before the commit.
    """
    rows = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if not rows:
        return
    found: dict[tuple[str, str], int] = {}
    for table, _rowid, parent, _fk in rows:
        found[(table, parent)] = found.get((table, parent), 0) + 1
    detail = "; ".join(f"{n} {t} row(s) refer to missing {p} rows" for (t, p), n in found.items())
    raise ForeignKeyViolationError(
        f"refusing to commit the schema migration: after it, {detail}. Keep a copy of the "
        "database and report this; it may have held such rows before the upgrade."
    )


@contextlib.asynccontextmanager
async def _migration_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection inside a transaction to migrate on; on SQLite, with foreign keys off.

    SQLite cannot ALTER most things, so Alembic's batch mode rebuilds a table: create
    a copy, fill it, drop the original, rename. With foreign keys on (as Herald's
    engine sets them), the drop deletes every row that refers to the table through
    ON DELETE CASCADE; pubsub items would vanish with their nodes' rebuild. SQLite
    ignores PRAGMA foreign_keys inside a transaction, so it is set before the
    transaction begins, and set back on afterwards for the pooled connection.
    """
    async with engine.connect() as conn:
        if conn.dialect.name != "sqlite":
            async with conn.begin():
                yield conn
            return
        try:
            await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            enforced = await conn.run_sync(foreign_keys_enforced)
            await conn.commit()  # SQLAlchemy autobegan; the driver itself opened nothing
            if enforced:
                raise RuntimeError("SQLite kept foreign keys on; refusing to migrate")
            async with conn.begin():
                # An explicit BEGIN: Python's sqlite3 would otherwise commit the DDL
                # before the first INSERT as it goes, and a failed migration (or a
                # failed foreign key check) would leave a half-rebuilt schema.
                await conn.exec_driver_sql("BEGIN")
                yield conn
        finally:
            await _foreign_keys_back_on(conn)


async def _foreign_keys_back_on(conn: AsyncConnection) -> None:
    # The connection goes back to the pool: it must enforce foreign keys again, or
    # be thrown away rather than handed to code that relies on ON DELETE CASCADE.
    try:
        if conn.in_transaction():
            await conn.rollback()
        await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        enforced = await conn.run_sync(foreign_keys_enforced)
        await conn.commit()
        if enforced:
            return
    except Exception:
        await conn.invalidate()
        raise
    await conn.invalidate()


def _run(connection: Connection, action: str, target: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    _check_known(connection, config)
    if action == "upgrade":
        command.upgrade(config, target)
    else:
        command.downgrade(config, target)


async def upgrade(engine: AsyncEngine, target: str = "head") -> None:
    """Upgrade the schema to target (default: the newest revision)."""
    async with _migration_connection(engine) as conn:
        await conn.run_sync(_run, "upgrade", target)


async def downgrade(engine: AsyncEngine, target: str) -> None:
    """Downgrade the schema to target ("base" drops everything)."""
    async with _migration_connection(engine) as conn:
        await conn.run_sync(_run, "downgrade", target)


async def current_revision(engine: AsyncEngine) -> tuple[str, ...]:
    """The revision(s) the database is at; empty before the first migration."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current)
