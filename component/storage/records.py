"""Plain values the storage layer takes and returns: no ORM objects, no slixmpp types.

Every datetime in these records is timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    """A cached item as stored: ``created`` is kept across updates, ``updated`` is not."""

    item_id: str
    data: str
    parsed: dict[str, Any] | None
    publisher: str | None
    created: datetime
    updated: datetime
