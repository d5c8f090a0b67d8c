"""Fetching a whole node page by page: when it stops, and whether items were left."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from component.pubsub.fetching import PAGE, FetchedPage, FullFetch
from component.pubsub.stanzas import ReceivedItem


def items(first: int, last: int) -> list[ReceivedItem]:
    """Items first..last-1, oldest first."""
    return [
        ReceivedItem(f"i{n:04d}", "<x xmlns='urn:x'/>", "urn:x", None, None)
        for n in range(first, last)
    ]


Upstream = Callable[[str], FetchedPage]


def rsm_node(total: int, *, index: bool = True, count: bool = True) -> Upstream:
    """An RSM upstream holding `total` items, anchors being item ids."""

    def answer(before: str) -> FetchedPage:
        end = total if before == "" else int(before[1:])
        start = max(0, end - PAGE)
        page = items(start, end)
        return FetchedPage(
            page,
            True,
            page[0].item_id if page else None,
            start if (index and page) else None,
            total if count else None,
        )

    return answer


def run(upstream: Upstream, limit: int) -> tuple[int, bool, int]:
    """(items kept, more upstream, requests made)."""
    fetch = FullFetch(limit)
    before: str | None = ""
    asked = 0
    while before is not None:
        asked += 1
        assert asked < 50, "the fetch does not end"
        before = fetch.add(upstream(before))
    kept, more = fetch.result()
    assert [i.item_id for i in kept] == sorted(i.item_id for i in kept)  # oldest first
    return len(kept), more, asked


@pytest.mark.parametrize(
    ("total", "limit", "expected"),
    [
        (0, 10, (0, False, 1)),
        (5, 10, (5, False, 1)),
        (10, 10, (10, False, 1)),
        (100, 100, (100, False, 1)),
        (200, 200, (200, False, 2)),
        (11, 10, (10, True, 1)),
        (150, 120, (120, True, 2)),
        (500, 300, (300, True, 3)),
    ],
)
def test_rsm_upstream(total: int, limit: int, expected: tuple[int, bool, int]) -> None:
    assert run(rsm_node(total), limit) == expected


@pytest.mark.parametrize(
    ("total", "limit", "expected"),
    [
        (5, 10, (5, False, 2)),  # one more request, for the empty page before
        (100, 100, (100, True, 1)),  # no way to tell: counted as more
        (150, 300, (150, False, 3)),
    ],
)
def test_rsm_upstream_without_index_or_count(
    total: int, limit: int, expected: tuple[int, bool, int]
) -> None:
    assert run(rsm_node(total, index=False, count=False), limit) == expected


def test_without_index_the_count_decides() -> None:
    assert run(rsm_node(100, index=False), 100) == (100, False, 1)


def test_upstream_without_rsm_answers_everything_at_once() -> None:
    def answer(_before: str) -> FetchedPage:
        return FetchedPage(items(0, 15), paged=False)

    assert run(answer, 10) == (10, True, 1)
    assert run(answer, 15) == (15, False, 1)


def test_an_upstream_that_ignores_the_anchor_leaves_the_node_truncated() -> None:
    def answer(_before: str) -> FetchedPage:
        return FetchedPage(items(400, 500), True, "i0400", None, None)

    assert run(answer, 300) == (100, True, 2)


def test_a_page_without_an_anchor_ends_the_fetch() -> None:
    def answer(_before: str) -> FetchedPage:
        return FetchedPage(items(400, 500), True, None, None, 500)

    assert run(answer, 300) == (100, True, 1)


def test_an_index_that_contradicts_the_count_leaves_the_node_truncated() -> None:
    def answer(_before: str) -> FetchedPage:
        return FetchedPage(items(90, 100), True, None, 90, 10)

    assert run(answer, 300) == (10, True, 1)
