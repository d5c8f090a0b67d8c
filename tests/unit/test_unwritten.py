"""with_unwritten: a node's items with the steps of its unwritten notifications applied.

The database write is the definition (tests/integration/test_pubsub_group_commit.py
compares the two on SQLite and PostgreSQL); these are the rules one by one, and the
property a read relies on: memory may already hold any first steps of those it
applies, and the answer is the same.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from component.pubsub.node_state import ItemStep
from component.pubsub.unwritten import with_unwritten
from component.storage.records import ItemInput, ItemRecord

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=1)


def record(item_id: str, n: int) -> ItemRecord:
    at = T0 + timedelta(seconds=n)
    return ItemRecord(item_id, f"<p>{item_id}</p>", None, None, at, at, seq=n + 1)


def item(item_id: str, text: str = "new") -> ItemInput:
    return ItemInput(item_id, f"<p>{text}</p>", None, "olivia@localhost")


def node(*ids: str) -> list[ItemRecord]:
    return [record(item_id, n) for n, item_id in enumerate(ids)]


def view(items: list[ItemRecord]) -> list[tuple[str, str]]:
    return [(i.item_id, i.data) for i in items]


def step(retracted: tuple[str, ...] = (), *published: ItemInput, moves: bool = False) -> ItemStep:
    return ItemStep(retracted, published, moves)


def ids_after(items: list[ItemRecord], *steps: ItemStep, limit: int = 10) -> list[str]:
    out = with_unwritten(items, steps, limit, False, True, NOW)
    return [i.item_id for i in out.items]


def test_a_new_item_is_the_newest() -> None:
    assert ids_after(node("a", "b"), step((), item("c"))) == ["a", "b", "c"]


def test_a_republished_item_takes_its_new_content_in_its_place() -> None:
    out = with_unwritten(node("a", "b"), [step((), item("a", "again"))], 10, False, True, NOW)
    assert view(out.items) == [("b", "<p>b</p>"), ("a", "<p>again</p>")][::-1]
    assert out.items[0].publisher == "olivia@localhost"


def test_a_republished_item_moves_where_the_service_moves_it() -> None:
    moved = step((), item("a", "again"), moves=True)
    assert ids_after(node("a", "b", "c"), moved) == ["b", "c", "a"]


def test_republished_items_moved_together_come_before_new_ones_in_their_old_order() -> None:
    """As the write restamps them: the same time as the step's new items, and their
    old row numbers, lower than the new rows'. (Steps are never merged where the
    service moves republished items: one notification, one item, in practice.)"""
    moved = step((), item("x"), item("b"), item("a"), moves=True)
    assert ids_after(node("a", "b", "c"), moved) == ["c", "a", "b", "x"]


def test_a_retraction_removes_and_comes_before_the_steps_publications() -> None:
    assert ids_after(node("a", "b"), step(("a",))) == ["b"]
    assert ids_after(node("a", "b"), step(("a",), item("a"))) == ["b", "a"]
    assert ids_after(node("a"), step(("missing",))) == ["a"]


def test_an_id_twice_in_a_step_is_at_its_first_place_with_its_last_content() -> None:
    out = with_unwritten(
        node("a"), [step((), item("x", "1"), item("y"), item("x", "2"))], 10, False, True, NOW
    )
    assert view(out.items) == [("a", "<p>a</p>"), ("x", "<p>2</p>"), ("y", "<p>new</p>")]


def test_the_node_keeps_its_newest_and_a_trim_past_our_limit_truncates_it() -> None:
    steps = [step((), item("c")), step((), item("d"))]
    kept = with_unwritten(node("a", "b"), steps, 3, False, True, NOW)
    assert [i.item_id for i in kept.items] == ["b", "c", "d"]
    assert kept.truncated
    # Upstream's own max_items trims it too: nothing older is left upstream.
    assert not with_unwritten(node("a", "b"), steps, 3, False, False, NOW).truncated
    assert not with_unwritten(node("a"), steps, 3, False, True, NOW).truncated
    assert with_unwritten(node("a"), steps, 3, True, True, NOW).truncated  # already


def test_nothing_unwritten_is_the_items_as_held() -> None:
    held = node("a", "b")
    out = with_unwritten(held, [], 10, False, True, NOW)
    assert out.items == held
    assert not out.truncated


def random_steps(rng: random.Random, count: int) -> list[ItemStep]:
    """Steps of one service: it moves republished items, or it never does."""
    pool = [f"i{n}" for n in range(8)]
    moves = rng.random() < 0.5
    steps = []
    for _ in range(count):
        retracted = tuple(rng.sample(pool, rng.choice((0, 0, 1, 2))))
        ids = rng.choices(pool, k=rng.randint(0, 3))
        steps.append(ItemStep(retracted, tuple(item(i, str(rng.random())) for i in ids), moves))
    return steps


def test_steps_written_meanwhile_then_the_rest_answer_as_all_of_them() -> None:
    """Memory holds the first k steps (written, merged) and a read applies the rest:
    the answer is what applying them all to the items before gives, for every k."""
    rng = random.Random(29)
    checked = 0
    for _ in range(400):
        limit = rng.randint(1, 6)
        before = node(*(f"i{n}" for n in rng.sample(range(8), rng.randint(0, 5))))
        steps = random_steps(rng, rng.randint(1, 4))
        expected = with_unwritten(before, steps, limit, False, True, NOW)
        for k in range(len(steps) + 1):
            written = with_unwritten(before, steps[:k], limit, False, True, NOW)
            later = NOW + timedelta(seconds=1)
            rest = with_unwritten(written.items, steps[k:], limit, written.truncated, True, later)
            assert view(rest.items) == view(expected.items), (limit, before, steps, k)
            assert rest.truncated == expected.truncated
            checked += 1
    print(f"{checked} reads over partly written steps answered as over none")
