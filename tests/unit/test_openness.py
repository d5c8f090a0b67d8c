"""The memo of recent access checks: expiry, refresh, bounds."""

from __future__ import annotations

from component.pubsub.openness import OpenNodes

KEY = ("pubsub.example.org", "feed")


def test_known_only_within_the_ttl() -> None:
    memo = OpenNodes(ttl=5.0)
    assert memo.known(KEY, 0.0) is None
    memo.note(KEY, "open", 100.0)
    assert memo.known(KEY, 104.9) == "open"
    assert memo.known(KEY, 105.0) is None  # stale: as if never checked
    memo.note(KEY, "closed", 200.0)
    assert memo.known(KEY, 201.0) == "closed"
    # a missing node may be created the next moment: not remembered
    memo.note(KEY, "missing", 300.0)
    assert memo.known(KEY, 300.0) is None


def test_refresh_is_due_past_half_the_ttl() -> None:
    memo = OpenNodes(ttl=5.0)
    assert memo.needs_refresh(KEY, 0.0)
    memo.note(KEY, "closed", 10.0)
    assert not memo.needs_refresh(KEY, 12.4)
    assert memo.needs_refresh(KEY, 12.5)


def test_forget_and_bound() -> None:
    memo = OpenNodes(ttl=5.0, limit=2)
    memo.note(KEY, "open", 0.0)
    memo.forget(KEY)
    assert memo.known(KEY, 0.0) is None
    for name in ("a", "b", "c"):
        memo.note(("s", name), "open", 0.0)
    assert memo.known(("s", "a"), 0.0) is None  # the least recently noted went
    assert memo.known(("s", "c"), 0.0) == "open"


def test_an_answer_to_an_older_question_does_not_overwrite_a_newer_one() -> None:
    memo = OpenNodes(ttl=5.0)
    memo.note(KEY, "closed", 10.0)  # asked at 10 (after a configuration change)
    memo.note(KEY, "open", 9.0)  # asked at 9, answered late
    assert memo.known(KEY, 11.0) == "closed"
