"""GroupCommit: grouping, per-key order, and the fall-back to one key at a time."""

from __future__ import annotations

import asyncio

from component.pubsub.group_commit import GroupCommit


class Recorder:
    """together/alone that record what they were given; alone waits while held."""

    def __init__(self) -> None:
        self.groups: list[dict[str, list[int]]] = []
        self.alone: list[tuple[str, list[int]]] = []
        self.fail = False
        self.held = asyncio.Event()
        self.held.set()
        self.slow: set[str] = set()

    async def together(self, group: dict[str, list[int]]) -> None:
        if self.fail:
            raise RuntimeError("scripted")
        self.groups.append({k: list(v) for k, v in group.items()})

    async def on_its_own(self, key: str, events: list[int]) -> None:
        await self.held.wait()
        self.alone.append((key, list(events)))

    def alone_only(self, key: str, _events: list[int]) -> bool:
        return key in self.slow

    def commit(self) -> GroupCommit[str, int]:
        return GroupCommit(self.together, self.on_its_own, self.alone_only)


async def test_what_queues_meanwhile_goes_in_one_group() -> None:
    rec = Recorder()
    groups = rec.commit()
    await asyncio.gather(*(groups.submit(k, n) for n, k in enumerate("abab")))
    assert rec.groups == [{"a": [0, 2], "b": [1, 3]}]
    assert groups.pending() == 0


async def test_a_failed_group_is_applied_key_by_key_in_order() -> None:
    rec = Recorder()
    rec.fail = True
    groups = rec.commit()
    await asyncio.gather(*(groups.submit(k, n) for n, k in enumerate("aab")))
    assert rec.groups == []
    assert sorted(rec.alone) == [("a", [0, 1]), ("b", [2])]


async def test_a_key_on_its_own_holds_back_only_its_later_events() -> None:
    rec = Recorder()
    rec.slow = {"s"}
    rec.held.clear()
    groups = rec.commit()
    first = asyncio.gather(groups.submit("s", 0), groups.submit("f", 1))
    await asyncio.sleep(0.01)  # s is being applied on its own, and waits
    rec.slow = set()  # s could join a group now, but its next event must wait its turn
    later = asyncio.gather(groups.submit("s", 2), groups.submit("f", 3))
    await asyncio.sleep(0.01)
    assert rec.groups == [{"f": [1]}, {"f": [3]}]
    assert rec.alone == []
    rec.held.set()
    await asyncio.gather(first, later)
    assert rec.alone == [("s", [0])]
    assert rec.groups[-1] == {"s": [2]}


async def test_settled_waits_for_what_is_queued_or_being_applied() -> None:
    """A comparison with upstream waits for the notifications Herald has received,
    queued or being applied; a key with none is settled at once."""
    rec = Recorder()
    rec.slow = {"s"}
    rec.held.clear()
    groups = rec.commit()
    first = asyncio.create_task(groups.submit("s", 0))
    await asyncio.sleep(0.01)  # taken, being applied on its own, and waits
    queued = asyncio.create_task(groups.submit("s", 1))  # queued behind it
    await asyncio.sleep(0)
    settled = asyncio.create_task(groups.settled("s"))
    later = asyncio.create_task(groups.submit("s", 2))
    await asyncio.sleep(0.01)
    assert not settled.done()
    await groups.settled("other")  # nothing submitted for it: at once
    rec.held.set()
    await asyncio.wait_for(settled, 1)
    assert first.done()
    assert queued.done()
    await asyncio.wait_for(later, 1)
    assert [events for _, events in rec.alone] == [[0], [1, 2]]  # 1 and 2 queued together
    await groups.close()
