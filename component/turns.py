"""Long work in the event loop, in turns.

One stream's handler that works through thousands of items in one go (a big node's
sync: serialising, parsing, storing, indexing) stops every other stream and both
services until it ends. Work over many items goes in chunks, and the loop gets a
turn between two.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Final, TypeVar

T = TypeVar("T")

# Items per turn: a few milliseconds of parsing or indexing, and few enough turns
# that their own cost does not show.
TURN: Final = 250


async def in_turns(items: Sequence[T], size: int = TURN) -> AsyncIterator[Sequence[T]]:
    """The items in chunks of `size`, giving the event loop a turn before each chunk
    after the first."""
    for start in range(0, len(items), size):
        if start:
            await asyncio.sleep(0)
        yield items[start : start + size]
