"""Async engine creation: SQLite (WAL, foreign keys) or PostgreSQL through psycopg 3."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import ExceptionContext, make_url
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


def create_redoable_engine(url: str) -> AsyncEngine | None:
    """An engine whose commits a crash of PostgreSQL may lose, or None on SQLite.

    For writes Herald can redo from upstream (the notifications' group writes) and
    nothing else. PostgreSQL acknowledges their commits before its WAL reaches the
    disk (synchronous_commit off): a crash of the server may lose the last ones (up to
    3 x wal_writer_delay, 0.6 s by default) but never leaves the database
    inconsistent. Waiting for the disk at every group write cost the machine so much
    that the XMPP server itself fell behind (bench/pubsub_staleness.py, Prosody: the
    lag of 1,000 notifications/s, p99 87-193 ms with it, 32-105 ms without). What
    such a crash loses is redone: see on_connection_lost, and Synchroniser.resync_all.
    SQLite has none of this cost to save (its group writes stay on the one engine).
    """
    if make_url(url).get_backend_name() == "sqlite":
        return None
    # One group write runs at a time; the second connection is slack.
    engine = create_async_engine(url, pool_size=1, max_overflow=1)
    event.listen(engine.sync_engine, "connect", _commit_without_waiting)
    return engine


def _commit_without_waiting(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # A SET at connect, not the libpq "options" startup parameter, which connection
    # poolers refuse and which would replace an operator's own options in the URL.
    cursor = dbapi_connection.cursor()
    cursor.execute("SET synchronous_commit TO off")
    cursor.close()
    dbapi_connection.commit()  # the SET opened a transaction; a rollback would undo it


def on_connection_lost(engine: AsyncEngine, lost: Callable[[], None]) -> None:
    """Call `lost` (soon, in the event loop) whenever a statement finds its connection
    dead: PostgreSQL crashed or restarted, and may have lost commits made without
    waiting for the disk. Every connection dies with the server, so the first
    statement after a crash, on whichever connection, tells."""

    def check(context: ExceptionContext) -> None:
        if context.is_disconnect:
            asyncio.get_running_loop().call_soon(lost)

    event.listen(engine.sync_engine, "handle_error", check)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(sessions: async_sessionmaker[AsyncSession]) -> None:
    """One trivial statement: raises if the database does not answer."""
    async with sessions() as session:
        await session.execute(text("SELECT 1"))


async def wait_for_disk(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Return once PostgreSQL has every commit acknowledged so far on its disk.

    A transaction that writes to the WAL commits, with synchronous_commit on (set for
    this transaction), only once the WAL is flushed up to its commit record: every
    commit acknowledged before it, those made without waiting included, is then
    durable. It writes a logical-decoding message (no table, no privilege; decoders
    that do not ask for messages never see it): a transaction that only took an id
    writes no WAL before its commit record, and PostgreSQL commits it without waiting.
    """
    async with sessions() as session:
        # Whatever the server, role or database sets: this commit must wait.
        await session.execute(text("SET LOCAL synchronous_commit TO on"))
        await session.execute(text("SELECT pg_logical_emit_message(true, 'herald', 'flush')"))
        await session.commit()
