"""The proxy's safety rule as a table: every combination of its inputs (pure)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from component.pubsub.decision import Action, Situation, decide

A = Action
KINDS = ("read", "listing", "disco-info", "write")
ACCESS = (None, "open", "closed", "missing")
COMPARISON = ("done", "due", "failed")
BOOL = (False, True)

EVERY = [
    Situation(kind, cached, answers, access, comparison, pep, privileged)  # type: ignore[arg-type]
    for kind, cached, answers, access, comparison, pep, privileged in itertools.product(
        KINDS, BOOL, BOOL, ACCESS, COMPARISON, BOOL, BOOL
    )
]


def servable(s: Situation) -> bool:
    """The cache may answer, once the node is known open and compared."""
    return s.cached and s.answers and not s.pep and s.comparison != "failed"


def from_cache_path(s: Situation) -> bool:
    return s.kind in ("read", "listing") and servable(s) and s.access in (None, "open")


def miss(s: Situation) -> bool:
    return s.kind == "read" and not from_cache_path(s) and not s.pep


Rule = tuple[str, Callable[[Situation], bool], Action]

# Each combination matches exactly one row (checked below).
TABLE: list[Rule] = [
    ("write, permitted", lambda s: s.kind == "write" and s.privileged, A.AS_USER),
    ("write, no permission", lambda s: s.kind == "write" and not s.privileged, A.REFUSE_FORBIDDEN),
    ("disco#info", lambda s: s.kind == "disco-info", A.AS_HERALD),
    ("served, openness unknown", lambda s: from_cache_path(s) and s.access is None, A.CHECK_FIRST),
    (
        "served, open, comparison due",
        lambda s: from_cache_path(s) and s.access == "open" and s.comparison == "due",
        A.COMPARE_FIRST,
    ),
    (
        "served, open, compared",
        lambda s: from_cache_path(s) and s.access == "open" and s.comparison == "done",
        A.FROM_CACHE,
    ),
    (
        "listing not served, permitted",
        lambda s: s.kind == "listing" and not from_cache_path(s) and s.privileged,
        A.AS_USER,
    ),
    (
        "listing not served, no permission",
        lambda s: s.kind == "listing" and not from_cache_path(s) and not s.privileged,
        A.REFUSE_FORBIDDEN,
    ),
    (
        "PEP read, permitted",
        lambda s: s.kind == "read" and not from_cache_path(s) and s.pep and s.privileged,
        A.AS_USER,
    ),
    (
        "PEP read, no permission",
        lambda s: s.kind == "read" and not from_cache_path(s) and s.pep and not s.privileged,
        A.REFUSE_FORBIDDEN,
    ),
    ("miss, node missing", lambda s: miss(s) and s.access == "missing", A.REFUSE_MISSING),
    ("miss, open", lambda s: miss(s) and s.access == "open", A.AS_HERALD),
    (
        "miss, unknown, no permission",
        lambda s: miss(s) and s.access is None and not s.privileged,
        A.CHECK_FIRST,
    ),
    (
        "miss, unknown, permitted",
        lambda s: miss(s) and s.access is None and s.privileged,
        A.AS_USER,
    ),
    (
        "miss, closed, permitted",
        lambda s: miss(s) and s.access == "closed" and s.privileged,
        A.AS_USER,
    ),
    (
        "miss, closed, no permission",
        lambda s: miss(s) and s.access == "closed" and not s.privileged,
        A.REFUSE_FORBIDDEN,
    ),
]


@pytest.mark.parametrize("situation", EVERY, ids=str)
def test_every_combination_follows_exactly_one_row(situation: Situation) -> None:
    rows = [(name, action) for name, applies, action in TABLE if applies(situation)]
    assert len(rows) == 1, rows
    assert decide(situation) is rows[0][1], rows[0][0]


@pytest.mark.parametrize("situation", EVERY, ids=str)
def test_no_combination_serves_what_anyone_could_not_read(situation: Situation) -> None:
    action = decide(situation)
    if action is A.FROM_CACHE:
        assert situation.cached
        assert situation.answers
        assert not situation.pep
        assert situation.access == "open"
        assert situation.comparison == "done"
    if action is A.AS_HERALD and situation.kind != "disco-info":
        assert situation.access == "open"
        assert not situation.pep
    if situation.kind == "write":
        assert action in (A.AS_USER, A.REFUSE_FORBIDDEN)


def at(**given: object) -> Situation:
    return Situation(**{"kind": "read", **given})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("story", "situation", "action"),
    [
        # issue 10's findings, as the rule sees them
        ("a quiet node: its last check expired", at(cached=True, answers=True), A.CHECK_FIRST),
        (
            "...which found it closed",
            at(cached=True, answers=True, access="closed"),
            A.REFUSE_FORBIDDEN,
        ),
        ("after a restart: not fetched again yet", at(access="open"), A.AS_HERALD),
        (
            "no notification promised, interval passed",
            at(cached=True, answers=True, access="open", comparison="due"),
            A.COMPARE_FIRST,
        ),
        (
            "comparison impossible now",
            at(cached=True, answers=True, access="open", comparison="failed"),
            A.AS_HERALD,
        ),
        (
            "a truncated node asked for more than it holds",
            at(cached=True, answers=False, access="open"),
            A.AS_HERALD,
        ),
        (
            "PEP: metadata hidden",
            at(pep=True, access="open", cached=True, answers=True),
            A.REFUSE_FORBIDDEN,
        ),
    ],
)
def test_stories(story: str, situation: Situation, action: Action) -> None:
    assert decide(situation) is action, story


def test_the_table_covers_every_combination() -> None:
    print(f"{len(EVERY)} combinations, {len(TABLE)} rows")
    assert len(EVERY) == 4 * 2 * 2 * 4 * 3 * 2 * 2
