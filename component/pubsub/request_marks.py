"""When each cached node was last asked for, for the idle eviction.

A request only notes its node in memory; the upkeep writes the notes to the
database in one transaction, so that no read pays for a write.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component.storage import pubsub_nodes


class RequestMarks:
    """Nodes asked for since the last flush."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self._requested: set[int] = set()

    def mark(self, node_id: int) -> None:
        """Note a request for the node; written to the database by flush()."""
        self._requested.add(node_id)

    async def flush(self) -> None:
        """Write last_requested for the nodes asked for since the last flush."""
        requested, self._requested = self._requested, set()
        if not requested:
            return
        now = datetime.now(UTC)
        async with self.sessions() as session:
            for node_id in requested:
                await pubsub_nodes.touch_node(session, node_id, now)
            await session.commit()
