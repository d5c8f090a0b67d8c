"""A node's items as they will be once the notifications received for it are written.

A read that comes while a node's notifications are still being written need not wait
for the write when the node's items are in memory and hold none of those
notifications yet: the items it answers are what memory holds with their steps
applied on top, the way the database write applies them (pubsub/group_write.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from component.pubsub.node_state import ItemStep
from component.storage.records import ItemInput, ItemRecord, chronological

# A read applies unwritten notifications only while that costs less than the wait
# for their write: past these (a database that stalls under a burst), it waits.
AT_MOST_STEPS = 64
AT_MOST_WORK = 50_000  # steps x the node's items


@dataclass(frozen=True)
class Unwritten:
    """The item steps of a node's notifications received and not written yet, in
    arrival order, and the version of memory's copy of its items they apply to
    (pubsub/hot_items.py): while the copy has that version, it holds none of them."""

    since: object
    steps: list[ItemStep]


@dataclass(frozen=True)
class Ahead:
    """A node's items with its unwritten steps applied, oldest first, and whether
    trimming them left the node truncated (upstream holds older items than these)."""

    items: list[ItemRecord]
    truncated: bool


def with_unwritten(
    items: Sequence[ItemRecord],
    steps: Sequence[ItemStep],
    limit: int,
    truncated: bool,
    trim_truncates: bool,
    now: datetime,
) -> Ahead:
    """Apply the steps to the items (oldest first) as the database write would.

    Each step retracts, then publishes, one row per id at its first place with its
    last content: a new id is appended, a held one takes the new content in its
    place, or moves to the newest place where the step says the service moves
    republished items; then the node keeps its newest `limit`. Trimming leaves it
    truncated when trim_truncates (upstream keeps more than the cache does). `now`
    stands in for the times the write will stamp: only the order they give matters.
    """
    current = list(items)
    seq = max((item.seq for item in current), default=0)
    # The write comes after every row written before it: so do these, whatever
    # `now` says.
    newest = max((item.updated for item in current), default=now)
    now = max(now, newest + timedelta(microseconds=1))
    for n, step in enumerate(steps):
        # Each step is written at its own, later time (a republication it moves goes
        # after the items an earlier step published); only the order matters.
        at = now + timedelta(microseconds=n)
        if step.retracted:
            gone = set(step.retracted)
            current = [item for item in current if item.item_id not in gone]
        if not step.published:
            continue
        place = {item.item_id: n for n, item in enumerate(current)}
        for latest in _one_per_id(step.published):
            held = place.get(latest.item_id)
            if held is None:
                seq += 1
                created = at if latest.created is None else latest.created
                current.append(_record(latest, created, at, seq))
            else:
                # The row's number is kept: republished items moved together keep
                # their old relative order, before the step's new ones (as restamped).
                old = current[held]
                created = at if step.move_republished else old.created
                current[held] = _record(latest, created, at, old.seq)
        current.sort(key=chronological)
        if len(current) > limit:
            del current[: len(current) - limit]
            truncated = truncated or trim_truncates
    return Ahead(current, truncated)


def _one_per_id(published: Sequence[ItemInput]) -> list[ItemInput]:
    """One item per id, at its first position with its last content (as upserted)."""
    latest: dict[str, ItemInput] = {}
    for item in published:
        latest[item.item_id] = item
    return list(latest.values())


def _record(item: ItemInput, created: datetime, now: datetime, seq: int) -> ItemRecord:
    return ItemRecord(item.item_id, item.data, item.parsed, item.publisher, created, now, seq=seq)
