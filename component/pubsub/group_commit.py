"""Group commit: notifications for many nodes applied together, each node's in order.

One transaction per notification (or per node's burst) costs a commit each, and on
SQLite every writer waits for the one write lock in turn. Under load, whatever has
queued up while the previous group was being written goes in the next group: the
more notifications arrive, the more each commit carries. Per-node order holds since
a node's events are taken in arrival order and a node is never in two groups, or in
a group and on its own, at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Hashable, Sequence
from typing import Any, Generic, TypeVar

from component.pubsub import tracing

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
E = TypeVar("E")

# How many nodes one group takes at most: bounds a transaction's size, and what is
# re-applied node by node when a group fails.
MAX_GROUP = 500


class GroupCommit(Generic[K, E]):
    """Queues events by key and hands them out in groups.

    together(group) applies a group of keys' events in one go and raises if it could
    not (nothing then applied); alone(key, events) applies one key's events on its
    own and handles its own failures. alone_only(key, events) says which keys cannot
    join a group now (a node busy with a sync, an event needing upstream reads).
    mark(key), when given, is taken whenever the key's unapplied events start afresh
    (the first one submitted, or those before them applied): what was applied then,
    as the caller tells it (pubsub/notifications.py: a version of memory's copy).
    """

    def __init__(
        self,
        together: Callable[[dict[K, list[E]]], Coroutine[Any, Any, None]],
        alone: Callable[[K, list[E]], Coroutine[Any, Any, None]],
        alone_only: Callable[[K, list[E]], bool],
        mark: Callable[[K], object] | None = None,
    ) -> None:
        self._together = together
        self._alone = alone
        self._alone_only = alone_only
        self._mark = mark
        self._marks: dict[K, object] = {}
        self._queued: dict[K, list[tuple[E, asyncio.Future[None]]]] = {}
        self._busy: dict[K, asyncio.Task[None]] = {}  # keys being applied on their own
        # The events taken out of the queue and not settled yet (with their waiters),
        # per key, in arrival order.
        self._taken: dict[K, list[tuple[E, asyncio.Future[None]]]] = {}
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, key: K, event: E) -> None:
        """Queue the event; return once it is applied (or its failure handled)."""
        done = asyncio.get_running_loop().create_future()
        if self._mark is not None and not self.unsettled(key):
            self._marks[key] = self._mark(key)
        self._queued.setdefault(key, []).append((event, done))
        tracing.step("queued", _name(key))
        self._kick()
        await done

    async def settled(self, key: K) -> None:
        """Wait until every event submitted for the key so far is applied (or its
        failure handled); later ones are not waited for."""
        waiting = [done for _, done in self._unapplied(key)]
        if waiting:
            await asyncio.wait(waiting)

    def unsettled(self, key: K) -> bool:
        """Whether events submitted for the key are not applied yet."""
        return bool(self._queued.get(key) or self._taken.get(key))

    def unapplied(self, key: K) -> tuple[object, list[E]]:
        """The key's events submitted and not yet applied, in arrival order (those
        being applied first), and the mark taken when the first of them was next."""
        return self._marks.get(key), [event for event, _ in self._unapplied(key)]

    def _unapplied(self, key: K) -> list[tuple[E, asyncio.Future[None]]]:
        return [*self._taken.get(key, ()), *self._queued.get(key, ())]

    def pending(self) -> int:
        """Events queued and not yet taken."""
        return sum(len(queued) for queued in self._queued.values())

    async def close(self) -> None:
        """Stop applying; what is queued is dropped (its waiters are cancelled)."""
        tasks = [t for t in (self._worker, *self._busy.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for queued in self._queued.values():
            for _, done in queued:
                done.cancel()
        self._queued.clear()
        self._marks.clear()
        for taken in self._taken.values():
            for _, done in taken:
                done.cancel()
        self._taken.clear()

    def _kick(self) -> None:
        idle = self._worker is None or self._worker.done()
        if idle and any(key not in self._busy for key in self._queued):
            self._worker = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            ready = [key for key in self._queued if key not in self._busy][:MAX_GROUP]
            if not ready:
                return
            taken = {key: self._queued.pop(key) for key in ready}
            for key, queued in taken.items():
                self._taken.setdefault(key, []).extend(queued)
            group: dict[K, list[E]] = {}
            for key, queued in taken.items():
                events = [event for event, _ in queued]
                if self._alone_only(key, events):
                    self._start_alone(key, queued)
                else:
                    group[key] = events
            if not group:
                continue
            if tracing.on():
                tracing.step("group-start", "*", f"{len(group)} nodes")
                for key in group:
                    tracing.step("grouped", _name(key), str(len(group[key])))
            try:
                await self._together(group)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Nothing of the group was applied: each node on its own, so that
                # only one that really cannot be applied is taken out of service.
                log.info("pubsub: a group of %d nodes failed (%r); one by one", len(group), exc)
                for key in group:
                    self._start_alone(key, taken[key])
                continue
            for key in group:
                tracing.step("applied", _name(key), "group")
                self._settle(key, taken[key])

    def _start_alone(self, key: K, queued: list[tuple[E, asyncio.Future[None]]]) -> None:
        tracing.step("alone-start", _name(key), str(len(queued)))
        self._busy[key] = task = asyncio.create_task(
            self._alone(key, [event for event, _ in queued])
        )

        def finished(task: asyncio.Task[None]) -> None:
            if self._busy.get(key) is task:
                del self._busy[key]
            tracing.step("applied", _name(key), "alone")
            self._settle(key, queued)
            if not task.cancelled() and task.exception() is not None:
                log.error("pubsub: applying notifications failed", exc_info=task.exception())
            self._kick()

        task.add_done_callback(finished)

    def _settle(self, key: K, queued: Sequence[tuple[E, asyncio.Future[None]]]) -> None:
        settled = {id(done) for _, done in queued}
        left = [pair for pair in self._taken.pop(key, ()) if id(pair[1]) not in settled]
        if left:
            self._taken[key] = left
        if self._mark is not None:
            if self.unsettled(key):
                self._marks[key] = self._mark(key)
            else:
                self._marks.pop(key, None)
        for _, done in queued:
            if not done.done():
                done.set_result(None)


def _name(key: object) -> str:
    return str(key[-1]) if isinstance(key, tuple) and key else str(key)
