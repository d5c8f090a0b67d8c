"""Which nodes a crash of PostgreSQL may have taken writes from.

The notifications' group writes commit without waiting for PostgreSQL's disk
(storage/engine.py: create_redoable_engine), so a crash of the server can lose the
last ones. Every so often, while such writes are being made, a commit that waits for
the disk makes all of them before it durable; only the nodes written since then, or
being written, are at risk, and only those are fetched again when a statement finds
the database gone. (Re-fetching every cached node after any restart of PostgreSQL,
a clean one included, was the price before.)
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component.storage.engine import wait_for_disk

log = logging.getLogger(__name__)

# Seconds between commits that wait for the disk, while writes that did not wait are
# being made: a crash then re-fetches the nodes written in about this last second.
FLUSH_EVERY = 1.0


class UnflushedWrites:
    """The nodes whose writes PostgreSQL has acknowledged but may not have on disk.

    Tracks nothing unless `tracking` (SQLite, and PostgreSQL with one engine, wait
    for the disk at every commit).
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], tracking: bool) -> None:
        self.sessions = sessions
        self.tracking = tracking
        self._writing: Counter[int] = Counter()  # node id -> group writes in flight
        # node id -> the number of its last committed write (of all writes here):
        # a flush forgets a node only if no write of it committed since it began.
        self._written: dict[int, int] = {}
        self._commits = 0
        self._failing = False

    @contextmanager
    def writing(self, node_ids: Sequence[int]) -> Iterator[Callable[[], None]]:
        """A write of these nodes that will not wait for the disk, for the block; the
        block calls what it is given once its commit is acknowledged (maybe not on
        disk yet). Its nodes are at risk from its start."""
        if not self.tracking:
            yield lambda: None
            return
        self._writing.update(node_ids)
        committed = False

        def acknowledged() -> None:
            nonlocal committed
            committed = True

        try:
            yield acknowledged
        finally:
            self._commits += committed
            for node_id in node_ids:
                self._writing[node_id] -= 1
                if self._writing[node_id] <= 0:
                    del self._writing[node_id]
                if committed:
                    self._written[node_id] = self._commits

    def at_risk(self) -> set[int]:
        """The nodes a crash may have taken writes from: written since the last commit
        that waited for the disk, or being written."""
        return set(self._written) | set(self._writing)

    def lost(self) -> set[int]:
        """The database connection was lost: the nodes at risk, which are then
        forgotten here (their writes are redone by fetching them again)."""
        out = self.at_risk()
        self._written.clear()
        return out

    async def flush(self) -> None:
        """Make every write acknowledged so far durable, and stop tracking it."""
        if not self._written:
            return
        before = dict(self._written)
        await wait_for_disk(self.sessions)
        for node_id, number in before.items():
            if self._written.get(node_id) == number:
                del self._written[node_id]

    async def run(self) -> None:
        """Flush every FLUSH_EVERY seconds, for as long as Herald runs."""
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            try:
                await self.flush()
            except Exception as exc:  # the database is down: its loss is handled
                # A flush that keeps failing leaves every node written at risk: said
                # once per run of failures, not every second.
                log.log(
                    logging.DEBUG if self._failing else logging.WARNING,
                    "pubsub: cannot wait for the database's disk (%r); the nodes written"
                    " since are re-fetched if its connection is lost",
                    exc,
                )
                self._failing = True
            else:
                self._failing = False
