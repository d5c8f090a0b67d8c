"""Work started and not awaited: kept referenced, failures logged, cancelled on close.

asyncio keeps only weak references to tasks, so a task nobody holds can vanish
mid-flight, and an exception nobody retrieves is only reported when the task is
garbage-collected. Every fire-and-forget task goes through one of these instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Background:
    """A set of running fire-and-forget tasks."""

    def __init__(self, what: str) -> None:
        self.what = what  # for the log line when one fails
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run work in the background."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            log.error("%s failed", self.what, exc_info=failure)

    async def close(self) -> None:
        """Cancel what is still running, and wait for it to stop."""
        pending = list(self._tasks)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
