"""Plain values the storage layer takes and returns: no ORM objects, no slixmpp types.

Every datetime in these records is timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

NO_SYNC: Final = "no-sync"
IN_PROGRESS: Final = "in-progress"
COMPLETED: Final = "completed"
ERROR: Final = "error"
SYNC_STATES: Final = (NO_SYNC, IN_PROGRESS, COMPLETED, ERROR)
"""Every sync state a cached node can be in."""


@dataclass(frozen=True)
class NodeRecord:
    """A cached node on some upstream service, with its sync state and lease."""

    id: int
    service: str
    name: str
    analyser: str | None
    sync_state: str
    sync_state_updated: datetime
    sync_attempts: int
    next_sync_at: datetime | None
    sync_owner: str | None
    sync_lease_until: datetime | None
    subscribed: bool
    access_model: str | None
    shareable: bool
    truncated: bool
    upstream_max_items: int | None
    last_synced: datetime | None
    last_error: str | None
    last_requested: datetime | None
    type: str | None
    subtype: str | None
    extra: dict[str, Any] | None


@dataclass(frozen=True)
class ItemInput:
    """An item to store: the raw XML exactly as received, and what is known about it.

    ``created`` is the upstream publish time when known; when None, the time of
    storing stands in for it.
    """

    item_id: str
    data: str
    parsed: dict[str, Any] | None = None
    publisher: str | None = None
    created: datetime | None = None


@dataclass(frozen=True)
class ItemRecord:
    """A cached item as stored: ``created`` is kept across updates, ``updated`` is not.

    ``seq`` is the row's number, the tie-break of the chronological order (items that
    share ``created``): what lets a memory copy be merged with rows read later. It is
    not part of the item's value (0 where unknown).
    """

    item_id: str
    data: str
    parsed: dict[str, Any] | None
    publisher: str | None
    created: datetime
    updated: datetime
    seq: int = field(default=0, compare=False)


def chronological(item: ItemRecord) -> tuple[datetime, int]:
    """The sort key of a node's items' order, oldest first (CHRONOLOGICAL, in SQL)."""
    return (item.created, item.seq)
