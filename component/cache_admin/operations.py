"""What an administrator can do to the cache, shared by `herald cache` and the XEP-0050
commands: each operation takes a session factory and plain values, commits what it
changes, and returns plain records.

Changes are logged in the database (``pubsub_admin_requests``), which running
Heralds read about once a second (component/pubsub/admin_watch.py): that is how a
purge from the command line stops a running Herald serving the node from memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component.storage import cache_admin_repo as repo
from component.storage.cache_admin_repo import NodeSummary, ServiceStats

Sessions = async_sessionmaker[AsyncSession]
# Logged requests are kept this long: a Herald cut off from its database for longer
# re-reads every node when it reconnects anyway.
KEEP_REQUESTS: Final = timedelta(days=1)


class NoSuchNode(LookupError):
    """The cache holds no such node."""

    def __init__(self, service: str, name: str) -> None:
        super().__init__(f"the cache holds no node {name!r} of {service}")


@dataclass(frozen=True)
class PurgeFilter:
    """Which nodes a purge drops: every condition given must hold."""

    service: str | None = None
    node: str | None = None  # a glob on the node name, as in pubsub.rules
    idle_for: timedelta | None = None  # not requested for at least this long

    @property
    def empty(self) -> bool:
        """No condition: refused, since it would purge everything (that is reset)."""
        return self.service is None and self.node is None and self.idle_for is None

    def matches_name(self, name: str) -> bool:
        """Whether the node name matches the glob (any name when there is none)."""
        return self.node is None or fnmatchcase(name, self.node)


@dataclass(frozen=True)
class NodeDetail:
    """What `show` reports: the node, its counts, and its items' time span."""

    summary: NodeSummary
    oldest_item: datetime | None
    newest_item: datetime | None


async def stats(sessions: Sessions) -> list[ServiceStats]:
    """Nodes by state, items and bytes, per service."""
    async with sessions() as session:
        return await repo.cache_stats(session)


async def nodes(
    sessions: Sessions, *, service: str | None = None, sync_state: str | None = None
) -> list[NodeSummary]:
    """The cached nodes, with their counts, optionally of one service or state."""
    async with sessions() as session:
        return await repo.node_summaries(session, service=service, sync_state=sync_state)


async def show(sessions: Sessions, service: str, name: str) -> NodeDetail:
    """One node in detail; NoSuchNode if the cache does not hold it."""
    async with sessions() as session:
        summary = await repo.node_summary(session, service, name)
        if summary is None:
            raise NoSuchNode(service, name)
        span = await repo.newest_and_oldest(session, summary.node.id)
    return NodeDetail(summary, *(span or (None, None)))


async def request_resync(sessions: Sessions, service: str, name: str, now: datetime) -> None:
    """Ask running Heralds to fetch the node again; NoSuchNode if it is not cached."""
    async with sessions.begin() as session:
        summary = await repo.node_summary(session, service, name)
        if summary is None:
            raise NoSuchNode(service, name)
        await repo.request_resync(session, summary.node, now)
        await repo.prune_requests(session, now - KEEP_REQUESTS)


async def purge(
    sessions: Sessions, which: PurgeFilter, now: datetime, *, dry_run: bool = False
) -> list[NodeSummary]:
    """Drop the nodes the filter matches, with their items; return what was dropped
    (or, with dry_run, what would be)."""
    if which.empty:
        raise ValueError("a purge needs --service, --node or --idle-for (reset drops all)")
    idle_since = None if which.idle_for is None else now - which.idle_for
    async with sessions.begin() as session:
        found = [
            summary
            for summary in await repo.node_summaries(
                session, service=which.service, requested_before=idle_since
            )
            if which.matches_name(summary.node.name)
        ]
        if dry_run or not found:
            return found
        await repo.purge_nodes(session, [s.node for s in found], now)
        await repo.prune_requests(session, now - KEEP_REQUESTS)
    return found


async def reset(sessions: Sessions, now: datetime) -> tuple[int, int]:
    """Drop every node and item; return how many nodes and items went."""
    async with sessions.begin() as session:
        counts = await repo.reset_cache(session, now)
        await repo.prune_requests(session, now - KEEP_REQUESTS)
    return counts


async def totals(sessions: Sessions) -> tuple[int, int]:
    """How many nodes and items the cache holds (what reset would drop)."""
    found = await stats(sessions)
    return sum(sum(s.nodes.values()) for s in found), sum(s.items for s in found)
