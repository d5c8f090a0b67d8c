"""HotItems' merge and held_among against the plain definitions they shortcut."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from component.pubsub.hot_items import HotItems, held_among
from component.storage.records import ItemRecord, chronological

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def record(item_id: str, created: int, seq: int) -> ItemRecord:
    at = T0 + timedelta(seconds=created)
    return ItemRecord(item_id, f"<p>{item_id}</p>", None, None, at, at, seq=seq)


def test_merge_equals_sorting_what_is_kept_and_what_was_written() -> None:
    """Random writes: new items (the fast path), republications keeping their place
    or moving, retractions; memory must equal the plain sort after each."""
    rng = random.Random(11)
    hot = HotItems(10**9)
    held = [record(f"i{n}", n, n) for n in range(20)]
    hot.hold(1, held, 1)
    seq, clock = 20, 20
    for _ in range(300):
        current = hot.peek(1) or []
        touched = {i.item_id for i in rng.sample(current, min(len(current), rng.randint(0, 2)))}
        fresh = []
        for _ in range(rng.randint(0, 3)):
            seq += 1
            clock += rng.choice((0, 1))  # items may share `created`: seq breaks the tie
            old = rng.choice(current) if current and rng.random() < 0.2 else None
            if old is not None and old.item_id not in touched and rng.random() < 0.5:
                # republished in place: created kept
                fresh.append(record(old.item_id, int((old.created - T0).total_seconds()), seq))
            else:
                name = old.item_id if old is not None else f"n{seq}"
                fresh.append(record(name, clock, seq))
        fresh = list({i.item_id: i for i in fresh}.values())
        touched |= {i.item_id for i in fresh}
        expected = sorted(
            [i for i in current if i.item_id not in touched] + fresh, key=chronological
        )
        hot.merge(1, touched, list(reversed(fresh)))
        assert hot.peek(1) == expected
        assert [i.seq for i in hot.peek(1) or []] == [i.seq for i in expected]
        assert hot.ids(1) == {i.item_id for i in expected}


def test_ids_follow_hold_drop_and_eviction() -> None:
    hot = HotItems(100)
    hot.hold(1, [record("a", 1, 1)], 60)
    assert hot.ids(1) == {"a"}
    hot.hold(2, [record("b", 1, 2)], 60)  # past the bound: node 1 goes
    assert hot.ids(1) == set()
    assert hot.ids(2) == {"b"}
    hot.drop(2)
    assert hot.ids(2) == set()


def test_held_among_answers_what_a_walk_over_the_items_does() -> None:
    items = {1: [record(f"i{n}", n, n) for n in range(10)], 2: [record("x", 0, 0)]}
    ids = {k: {i.item_id for i in v} for k, v in items.items()}
    published = {1: ["i7", "new", "i2", "i5"], 2: ["y"], 3: ["i1"]}
    assert held_among(items, ids, published, {1: ("i5",)}) == {1: ["i2", "i7"], 2: []}
