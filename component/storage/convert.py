"""Conversions between Python values and database rows, shared by the repositories.

Times are timezone-aware UTC on the Python side. SQLite stores a DateTime as text
without its zone, so every time is converted to UTC before it is bound (text
comparison then orders correctly) and tagged UTC when it is read back; PostgreSQL
hands back aware times in the session's TimeZone, which need not be UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import RowMapping

from component.storage.records import ItemRecord, NodeRecord


def to_db(value: datetime) -> datetime:
    """The time to bind: aware, in UTC. A naive one is refused, since its zone is a guess."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"times must be timezone-aware, got the naive {value!r}")
    return value.astimezone(UTC)


def from_db(value: datetime) -> datetime:
    """A time read from either backend, as an aware UTC datetime."""
    # SQLite's naive values were stored as UTC by to_db.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def from_db_or_none(value: datetime | None) -> datetime | None:
    """``from_db`` for a nullable column."""
    return None if value is None else from_db(value)


def node_record(m: RowMapping) -> NodeRecord:
    """The record of a ``pubsub_nodes`` row (every column selected)."""
    return NodeRecord(
        id=m["id"],
        service=m["service"],
        name=m["name"],
        analyser=m["analyser"],
        sync_state=m["sync_state"],
        sync_state_updated=from_db(m["sync_state_updated"]),
        sync_attempts=m["sync_attempts"],
        next_sync_at=from_db_or_none(m["next_sync_at"]),
        sync_owner=m["sync_owner"],
        sync_lease_until=from_db_or_none(m["sync_lease_until"]),
        subscribed=m["subscribed"],
        access_model=m["access_model"],
        shareable=m["shareable"],
        truncated=m["truncated"],
        upstream_max_items=m["upstream_max_items"],
        last_synced=from_db_or_none(m["last_synced"]),
        last_error=m["last_error"],
        last_requested=from_db_or_none(m["last_requested"]),
        type=m["type"],
        subtype=m["subtype"],
        extra=m["extra"],
    )


def item_record(m: RowMapping) -> ItemRecord:
    """The record of a ``pubsub_items`` row (at least ITEM_COLUMNS)."""
    return ItemRecord(
        item_id=m["item_id"],
        data=m["data"],
        parsed=m["parsed"],
        publisher=m["publisher"],
        created=from_db(m["created"]),
        updated=from_db(m["updated"]),
        seq=m["id"],
    )
