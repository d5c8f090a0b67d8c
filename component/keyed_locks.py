"""One asyncio lock per key, kept only while someone holds or waits for it.

Notifications for one node must apply in arrival order (a retract must not overtake
its publish), but one busy node must not hold up every other: the order is kept per
node, not globally.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class KeyedLocks(Generic[K]):
    """Locks by key; a key's lock is dropped when its last user leaves."""

    def __init__(self) -> None:
        self._locks: dict[K, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        """Hold the key's lock; waiters get it in the order they asked."""
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def locked(self, key: K) -> bool:
        """Whether someone holds or waits for the key's lock."""
        return key in self._locks

    def __len__(self) -> int:
        return len(self._locks)
