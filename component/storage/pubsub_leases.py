"""The sync lease of a pubsub node: which process may synchronise it, until when.

Unlike the other repository functions these take a session factory and commit their
own short transaction: a lease only means something once other processes can see it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component.storage.convert import to_db
from component.storage.pubsub_tables import NODES, rowcount
from component.storage.records import SYNC_STATES
from component.storage.timing import observed


@observed
async def try_acquire_sync(
    sessions: async_sessionmaker[AsyncSession],
    node_id: int,
    owner: str,
    now: datetime,
    lease: timedelta,
    *,
    sync_state: str | None = None,
    abandoned: Callable[[str], bool] | None = None,
) -> bool:
    """Take the node's sync lease until ``now + lease``; True only for the one winner.

    A single conditional UPDATE, committed at once: the database serialises the
    contenders (PostgreSQL re-checks the WHERE after a concurrent commit, SQLite has one
    writer), so exactly one sees rowcount 1. A lease held by anyone, the same owner
    included, blocks until it is released or has expired, unless ``abandoned`` says
    its holder is gone (a dead process): then it is taken over at once, by one
    contender only (the UPDATE names the holder it replaces). The hosts' clocks must
    agree to well within the lease.

    sync_state: set in the same UPDATE, so no crash can leave the lease taken and the
    state unchanged.
    """
    if lease <= timedelta(0):
        raise ValueError("a sync lease must be positive")
    if sync_state is not None and sync_state not in SYNC_STATES:
        raise ValueError(f"unknown sync state {sync_state!r}; expected one of {SYNC_STATES}")
    now = to_db(now)
    values: dict[str, Any] = {"sync_owner": owner, "sync_lease_until": now + lease}
    if sync_state is not None:
        values["sync_state"] = sync_state
        values["sync_state_updated"] = case(
            (NODES.c.sync_state == sync_state, NODES.c.sync_state_updated),
            else_=literal(now, NODES.c.sync_state_updated.type),
        )
    free = or_(
        NODES.c.sync_owner.is_(None),
        NODES.c.sync_lease_until.is_(None),
        NODES.c.sync_lease_until < now,
    )
    async with sessions.begin() as session:
        result = await session.execute(
            update(NODES).where(NODES.c.id == node_id, free).values(values)
        )
        if rowcount(result) == 1:
            return True
        if abandoned is None:
            return False
        holder = await session.scalar(select(NODES.c.sync_owner).where(NODES.c.id == node_id))
        if holder is None or holder == owner or not abandoned(holder):
            return False
        result = await session.execute(
            update(NODES).where(NODES.c.id == node_id, NODES.c.sync_owner == holder).values(values)
        )
        return rowcount(result) == 1


@observed
async def renew_sync(
    sessions: async_sessionmaker[AsyncSession],
    node_id: int,
    owner: str,
    now: datetime,
    lease: timedelta,
) -> bool:
    """Extend ``owner``'s lease to ``now + lease``; False if someone else holds it now."""
    if lease <= timedelta(0):
        raise ValueError("a sync lease must be positive")
    statement = (
        update(NODES)
        .where(NODES.c.id == node_id, NODES.c.sync_owner == owner)
        .values(sync_lease_until=to_db(now) + lease)
    )
    async with sessions.begin() as session:
        result = await session.execute(statement)
    return rowcount(result) == 1


@observed
async def release_sync(
    sessions: async_sessionmaker[AsyncSession], node_id: int, owner: str
) -> bool:
    """Give the lease back; False (and nothing changed) if ``owner`` no longer holds it."""
    statement = (
        update(NODES)
        .where(NODES.c.id == node_id, NODES.c.sync_owner == owner)
        .values(sync_owner=None, sync_lease_until=None)
    )
    async with sessions.begin() as session:
        result = await session.execute(statement)
    return rowcount(result) == 1
