"""The cache's gauges: nodes per sync state and items, counted from the database.

Counting needs full-table statements, so no write pays for them: a change only marks
the gauges stale, and the upkeep's tick (or a sync's end) counts again.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component import metrics
from component.storage import pubsub_item_reads, pubsub_nodes


class CacheGauges:
    """herald_pubsub_cached_nodes and herald_pubsub_cached_items, kept from the
    database."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        # Every change to nodes or items sets it; refresh_if_stale() catches up.
        self.stale = False

    async def refresh_if_stale(self) -> None:
        """Refresh the gauges if a change since the last refresh asked for it."""
        if self.stale:
            await self.refresh()

    async def refresh(self) -> None:
        """Set the node and item gauges from the database."""
        self.stale = False
        async with self.sessions() as session:
            by_state = await pubsub_nodes.count_nodes_by_state(session)
            items = await pubsub_item_reads.count_items(session)
        for state, count in by_state.items():
            metrics.PUBSUB_CACHED_NODES.labels(sync_state=state).set(count)
        metrics.PUBSUB_CACHED_ITEMS.set(items)
