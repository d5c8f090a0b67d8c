"""What the request path knows about a cached node, and one notification's item changes.

Plain values, held in memory by the Cache and passed to everyone who decides or serves.
"""

from __future__ import annotations

from dataclasses import dataclass

from component.storage.records import COMPLETED, ItemInput, NodeRecord


@dataclass(frozen=True)
class ItemStep:
    """One notification's changes to a node's items: retractions, then publications."""

    retracted: tuple[str, ...]
    published: tuple[ItemInput, ...]
    # The service moves a republished item to the newest place.
    move_republished: bool = False
    # Several notifications' publications, merged (notifications.coalesced).
    merged: bool = False


@dataclass(frozen=True)
class NodeState:
    """What the request path needs to know about a node, held in memory."""

    id: int
    service: str
    name: str
    analyser: str | None
    sync_state: str
    shareable: bool
    access_model: str | None
    truncated: bool = False  # upstream holds older items than the cache keeps
    upstream_max_items: int | None = None
    # Fetched, or re-fetched, since this process last connected. Notifications sent
    # while Herald was away (stopped, crashed, disconnected) are lost, so a node the
    # database calls completed is only trusted once it has been fetched again.
    confirmed: bool = False

    @property
    def serves_from_cache(self) -> bool:
        """In sync and readable by anyone: requests may be answered from the cache."""
        return self.sync_state == COMPLETED and self.shareable and self.confirmed


def state_of(record: NodeRecord, confirmed: bool = False) -> NodeState:
    """The in-memory state of a node record; `confirmed` only if it is completed."""
    return NodeState(
        record.id,
        record.service,
        record.name,
        record.analyser,
        record.sync_state,
        record.shareable,
        record.access_model,
        record.truncated,
        record.upstream_max_items,
        confirmed and record.sync_state == COMPLETED,
    )


def item_limit(node: NodeState, ours: int) -> int:
    """How many items the node keeps: ours, or upstream's pubsub#max_items if lower."""
    return ours if node.upstream_max_items is None else min(ours, node.upstream_max_items)


def trim_truncates(node: NodeState, ours: int) -> bool:
    """Whether trimming the node leaves out items upstream still holds: past only our
    limit, not upstream's own pubsub#max_items (which dropped them too)."""
    return node.upstream_max_items is None or node.upstream_max_items > ours
