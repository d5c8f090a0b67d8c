"""What Herald stores of an item received from upstream, within what it may cache.

A sync and a notification store items the same way: checked against
pubsub.max_item_bytes, parsed by the analyser a sync rule names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from component.pubsub.node_state import NodeState
from component.pubsub.rules import Registry
from component.pubsub.stanzas import ReceivedItem
from component.sizes import utf8_size
from component.storage.records import ItemInput
from component.turns import in_turns


class SyncFailed(Exception):
    """A synchronisation could not complete; the text says why."""


@dataclass(frozen=True)
class CacheLimits:
    """What a hostile or careless upstream may make Herald cache.

    max_item_bytes: a node holding a larger item is not cached (served from upstream).
    max_nodes_per_service: beyond it, a service's further nodes are passed through.
    """

    max_item_bytes: int = 65_536
    max_nodes_per_service: int = 1_000


class ItemIntake:
    """Turns received items into what the cache stores: size-checked and parsed."""

    def __init__(self, limits: CacheLimits, registry: Registry) -> None:
        self.limits = limits
        self.registry = registry

    def item_input(self, node: NodeState, item: ReceivedItem, parse: bool = True) -> ItemInput:
        """The item as stored; SyncFailed when it is over pubsub.max_item_bytes.

        parse=False leaves out the parsed form (only searches use it)."""
        size = utf8_size(item.payload)
        if size > self.limits.max_item_bytes:
            # Caching the node without this item would answer differently from upstream:
            # the node is served from upstream instead (the sync fails, retried later).
            raise SyncFailed(
                f"item {item.item_id!r} is {size} bytes, over pubsub.max_item_bytes "
                f"({self.limits.max_item_bytes})"
            )
        parsed = None
        analyser = self.registry.match(node.service, node.name, item.namespace) if parse else None
        if analyser is not None and analyser.parser and item.element is not None:
            parsed = self.registry.parse(analyser.parser, item.element)
        return ItemInput(item.item_id, item.payload, parsed, item.publisher)

    async def item_inputs(self, node: NodeState, items: Sequence[ReceivedItem]) -> list[ItemInput]:
        """item_input for many items (a sync), giving the event loop turns."""
        out: list[ItemInput] = []
        async for some in in_turns(items):
            out += [self.item_input(node, item) for item in some]
        return out
