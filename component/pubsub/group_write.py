"""One group commit's writes: several nodes' item steps in one transaction.

The n-th steps of all the nodes share their statements (one retract, one upsert, one
held-ids read, one count for those that may pass their limit), so the busier it
gets, the more each round trip carries. Cache.apply_steps (pubsub/cache.py) owns the
transaction and the memory copy; this is what runs inside it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from component.pubsub.hot_items import held_among
from component.pubsub.node_state import ItemStep, NodeState, state_of
from component.storage import pubsub_item_reads, pubsub_item_writes
from component.storage.records import ItemRecord, NodeRecord

# Trims a node to its limit: the node's new state if trimming changed it, and the
# ids that went.
Trim = Callable[[AsyncSession, NodeState], Awaitable[tuple[NodeRecord | None, list[str]]]]


class OneByOne(Exception):
    """A step's outcome depends on the order of its publications: an item published
    again in place was trimmed with it, which applying the notifications merged in
    the step one by one may not do (one published before it may push it out, then it
    comes back as new). The group is then applied node by node, one notification at a
    time (pubsub/notifications.py)."""


@dataclass
class Written:
    """What write_steps did, per node id."""

    # A node's new state, where trimming changed it.
    records: dict[int, NodeRecord] = field(default_factory=dict)
    # Per step, the published ids the node already held (republications), oldest first.
    again: dict[int, list[list[str]]] = field(default_factory=dict)
    # Ids that are gone or were rewritten: retracted, trimmed or published.
    touched: dict[int, set[str]] = field(default_factory=dict)
    # The rows published that the node still holds, as stored at the end (those the
    # upsert returned; for nodes held in memory, read back if restamped after it).
    fresh: dict[int, dict[str, ItemRecord]] = field(default_factory=dict)
    # Published ids whose row changed after the upsert (restamped).
    reread: dict[int, set[str]] = field(default_factory=dict)

    def gone(self, node_id: int, item_ids: Iterable[str]) -> None:
        """These ids were retracted or trimmed from the node."""
        for item_id in item_ids:
            self.touched[node_id].add(item_id)
            self.fresh[node_id].pop(item_id, None)
            self.reread[node_id].discard(item_id)


async def write_steps(
    session: AsyncSession,
    changes: Sequence[tuple[NodeState, Sequence[ItemStep]]],
    at_most: dict[int, int],
    held_now: dict[int, list[ItemRecord]],
    held_ids: dict[int, set[str]],
    limit: Callable[[NodeState], int],
    trim: Trim,
) -> Written:
    """Write each node's steps in order, in the caller's transaction.

    at_most: for nodes whose items memory holds, a bound on their count (updated as
    steps publish); held_now: those items; held_ids: their ids.
    """
    out = Written()
    for node, _ in changes:
        out.again[node.id] = []
        out.touched[node.id] = set()
        out.fresh[node.id] = {}
        out.reread[node.id] = set()
    records = out.records
    for n in range(max((len(steps) for _, steps in changes), default=0)):
        phase = [(node, steps[n]) for node, steps in changes if n < len(steps)]
        retracting = {node.id: step.retracted for node, step in phase if step.retracted}
        if retracting:
            await pubsub_item_writes.retract_items_of_nodes(session, retracting)
            for node_id, retracted in retracting.items():
                out.gone(node_id, retracted)
        publishing = {node.id: (node, step) for node, step in phase if step.published}
        held: dict[int, list[str]] = {}
        if publishing:
            ids = {i: [x.item_id for x in s.published] for i, (_, s) in publishing.items()}
            for node_id, published in ids.items():
                out.touched[node_id].update(published)
            if n == 0:  # memory holds what the database does before any step
                held = held_among(held_now, held_ids, ids, retracting)
            asked = {i: wanted for i, wanted in ids.items() if i not in held}
            if asked:
                held |= await pubsub_item_reads.held_ids_of_nodes(session, asked)
            stored = await pubsub_item_writes.upsert_items_of_nodes(
                session, {i: s.published for i, (_, s) in publishing.items()}, datetime.now(UTC)
            )
            for node_id, rows in stored.items():
                out.fresh[node_id].update((row.item_id, row) for row in rows)
                out.reread[node_id].difference_update(row.item_id for row in rows)
            for node_id, (_, step) in publishing.items():
                if node_id in at_most:
                    at_most[node_id] += len(step.published)
            uncounted = [
                node_id
                for node_id, (node, _) in publishing.items()
                if at_most.get(node_id, limit(node) + 1) > limit(node)
            ]
            counts = (
                await pubsub_item_reads.count_items_of_nodes(session, uncounted)
                if uncounted
                else {}
            )
            for node_id, (node, step) in publishing.items():
                if step.move_republished and held[node_id]:
                    await pubsub_item_writes.restamp_items(session, node_id, held[node_id])
                    out.reread[node_id].update(held[node_id])
                current = state_of(records[node_id]) if node_id in records else node
                if counts.get(node_id, 0) > limit(current):
                    record, gone = await trim(session, current)
                    if step.merged and not step.move_republished and set(gone) & set(held[node_id]):
                        raise OneByOne(node.name)
                    out.gone(node_id, gone)
                    if record is not None:
                        records[node_id] = record
        for node, _ in phase:
            out.again[node.id].append(held.get(node.id, []))
    # Memory takes the rows as they stand: those restamped since the upsert are read
    # back, for the nodes it holds (the others are read whole when next asked for).
    reread = {node_id: out.reread[node_id] for node_id in held_now if out.reread[node_id]}
    if reread:
        again = await pubsub_item_reads.items_by_ids_of_nodes(session, reread)
        for node_id, rows in again.items():
            out.fresh[node_id].update((row.item_id, row) for row in rows)
    return out
