"""Programmatic Alembic: upgrade at start-up, refuse databases from a newer Herald."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import component


class UnknownRevisionError(RuntimeError):
    """The database was migrated by a Herald newer than this one (or by something else)."""


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
    async with engine.begin() as conn:
        await conn.run_sync(_run, "upgrade", target)


async def downgrade(engine: AsyncEngine, target: str) -> None:
    """Downgrade the schema to target ("base" drops everything)."""
    async with engine.begin() as conn:
        await conn.run_sync(_run, "downgrade", target)


async def current_revision(engine: AsyncEngine) -> tuple[str, ...]:
    """The revision(s) the database is at; empty before the first migration."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current)
