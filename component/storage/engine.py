"""Async engine creation: SQLite (WAL, foreign keys) or PostgreSQL through psycopg 3."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession
from sqlalchemy.pool import ConnectionPoolEntry


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # WAL lets readers proceed while the synchroniser writes; SQLite leaves foreign
    # keys off unless each connection asks, and item rows rely on ON DELETE CASCADE.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_engine(url: str) -> AsyncEngine:
    """An AsyncEngine for the configured URL, with per-backend connection settings."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping: every round trip to PostgreSQL costs a turn of the event loop and
    # a wake-up of the server process, and under load those add up (the staleness
    # bench); the ping was one per session, before each group write and each read
    # of a cold node. After a database restart the first statement on a dead
    # connection fails instead, and SQLAlchemy then replaces the whole pool; what
    # failed is handled as any database error (a notification takes its node out of
    # service and it is re-fetched).
    return create_async_engine(url, pool_size=5, max_overflow=5)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)
