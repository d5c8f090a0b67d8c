"""The memory copy of recently read nodes' items, bounded in bytes.

Answering a hit must cost about what answering from memory costs: the items of
nodes read lately are kept here, least recently used out first. The bound is in
bytes (estimated by held_size): a bound in items let a few huge items take any
amount of memory. Every change to a node's items bumps its version, so a load
that raced a change is not kept.
"""

from __future__ import annotations

from collections import OrderedDict

from component.sizes import held_size
from component.storage.records import ItemRecord, chronological


class HotItems:
    """Node id -> its items (oldest first), as the database holds them."""

    def __init__(self, memory_bytes: int) -> None:
        self.memory_bytes = memory_bytes
        self.held_bytes = 0
        self._items: OrderedDict[int, list[ItemRecord]] = OrderedDict()
        self._bytes: dict[int, int] = {}
        self._version: dict[int, int] = {}
        # The held ids of nodes that writes touched, built on first use: a write then
        # finds what it replaces without a walk over the node's items.
        self._ids: dict[int, set[str]] = {}

    def __contains__(self, node_id: int) -> bool:
        return node_id in self._items

    def get(self, node_id: int) -> list[ItemRecord] | None:
        """The node's items if held (which makes it the most recently used)."""
        held = self._items.get(node_id)
        if held is not None:
            self._items.move_to_end(node_id)
        return held

    def peek(self, node_id: int) -> list[ItemRecord] | None:
        """The node's items if held, leaving the order of use alone."""
        return self._items.get(node_id)

    def ids(self, node_id: int) -> set[str]:
        """The ids of the node's held items (empty if not held); not to be changed."""
        found = self._ids.get(node_id)
        if found is None:
            held = self._items.get(node_id)
            if held is None:
                return set()
            found = self._ids[node_id] = {item.item_id for item in held}
        return found

    def version(self, node_id: int) -> int:
        """Bumped by every hold(), merge() and drop(): equal versions mean that what
        memory holds of the node did not change in between."""
        return self._version.get(node_id, 0)

    def hold(self, node_id: int, items: list[ItemRecord], size: int) -> None:
        """Keep the node's items, evicting the least recently used past the bound.

        size: their held_size total (the caller sums it, in turns for a big node)."""
        if size > self.memory_bytes:
            return  # larger than the whole budget: read from the database each time
        self._bump(node_id)
        self._forget(node_id)
        self._items[node_id] = items
        self._keep(node_id, size)

    def merge(self, node_id: int, touched: set[str], fresh: list[ItemRecord]) -> None:
        """A write changed the node's items: if held, drop the ids it touched
        (retracted, trimmed, rewritten) and add the rows it wrote as read back, at a
        cost that follows the change, not the node's size. Bumps its version; its
        place in the order of use stays (a write is not a use)."""
        self._bump(node_id)
        held = self._items.get(node_id)
        if held is None or not (touched or fresh):
            return
        ids = self.ids(node_id)
        if touched & ids:
            gone = [item for item in held if item.item_id in touched]
            kept = [item for item in held if item.item_id not in touched]
        else:
            gone, kept = [], held
        fresh = sorted(fresh, key=chronological)
        if not fresh or not kept or chronological(kept[-1]) < chronological(fresh[0]):
            items = kept + fresh  # the usual case: new items, newer than all held
        else:
            items = sorted(kept + fresh, key=chronological)
        before = self._bytes[node_id]
        size = before - sum(held_size(item) for item in gone)
        size += sum(held_size(item) for item in fresh)
        if size > self.memory_bytes:
            self._forget(node_id)
            return
        self.held_bytes -= before
        self._items[node_id] = items
        # A new set, not changed in place: the old one may be in a caller's hands.
        self._ids[node_id] = (ids - touched) | {item.item_id for item in fresh}
        self._keep(node_id, size)

    def _keep(self, node_id: int, size: int) -> None:
        self._bytes[node_id] = size
        self.held_bytes += size
        while self.held_bytes > self.memory_bytes and self._items:
            evicted, _ = self._items.popitem(last=False)
            self.held_bytes -= self._bytes.pop(evicted)
            self._ids.pop(evicted, None)

    def drop(self, node_id: int) -> None:
        """The node's items changed: forget them, and bump its version."""
        self._bump(node_id)
        self._forget(node_id)

    def _bump(self, node_id: int) -> None:
        self._version[node_id] = self._version.get(node_id, 0) + 1

    def _forget(self, node_id: int) -> None:
        self._ids.pop(node_id, None)
        if self._items.pop(node_id, None) is not None:
            self.held_bytes -= self._bytes.pop(node_id)


def held_among(
    items: dict[int, list[ItemRecord]],
    ids: dict[int, set[str]],
    published: dict[int, list[str]],
    retracted: dict[int, tuple[str, ...]],
) -> dict[int, list[str]]:
    """Which of the published ids each node of `items` (its held items; `ids`, their
    ids) already holds, oldest first, once the step's retractions are applied: what
    the database's held_ids_of_nodes answers, without a query."""
    out = {}
    for node_id, wanted in published.items():
        if node_id in items:
            asked = (set(wanted) & ids[node_id]) - set(retracted.get(node_id, ()))
            out[node_id] = (
                [item.item_id for item in items[node_id] if item.item_id in asked] if asked else []
            )
    return out
