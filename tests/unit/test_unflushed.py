"""UnflushedWrites: which nodes a crash of PostgreSQL may have taken writes from.

What PostgreSQL does with the commit that waits is tested for real in
tests/integration/test_faults.py (a crash after it loses nothing); here, the
bookkeeping around it, with that commit held open to let writes race it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from component.pubsub import unflushed
from component.pubsub.unflushed import UnflushedWrites


def tracker() -> UnflushedWrites:
    return UnflushedWrites(None, tracking=True)  # type: ignore[arg-type]


def write(writes: UnflushedWrites, node_ids: list[int], committed: bool = True) -> None:
    """One write of these nodes, its commit acknowledged or not."""
    with writes.writing(node_ids) as acknowledged:
        if committed:
            acknowledged()


def test_a_write_is_at_risk_from_its_start_until_a_flush_after_its_commit() -> None:
    writes = tracker()
    with writes.writing([1, 2]) as acknowledged:
        assert writes.at_risk() == {1, 2}
        acknowledged()
    assert writes.at_risk() == {1, 2}
    write(writes, [3], committed=False)  # rolled back: nothing of it to lose
    assert writes.at_risk() == {1, 2}


def test_nothing_is_at_risk_where_every_commit_waits_for_the_disk() -> None:
    writes = UnflushedWrites(None, tracking=False)  # type: ignore[arg-type]
    write(writes, [1])
    assert writes.at_risk() == set()
    assert writes.lost() == set()


async def test_a_flush_forgets_only_what_committed_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writes = tracker()
    for node_id in (1, 2):
        write(writes, [node_id])
    waiting = asyncio.Event()
    release = asyncio.Event()

    async def held_commit(_sessions: Any) -> None:
        waiting.set()
        await release.wait()

    monkeypatch.setattr(unflushed, "wait_for_disk", held_commit)
    flush = asyncio.create_task(writes.flush())
    await waiting.wait()
    write(writes, [2, 3])  # written again, and a new node, while the flush runs
    release.set()
    await flush
    assert writes.at_risk() == {2, 3}


def test_a_lost_connection_hands_over_what_is_at_risk_once() -> None:
    writes = tracker()
    write(writes, [1])
    with writes.writing([2]):  # in flight when the connection went
        assert writes.lost() == {1, 2}
    # its commit failed with the connection
    assert writes.lost() == set()
