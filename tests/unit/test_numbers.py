"""Counts read from XML text: digits only, bounded."""

from __future__ import annotations

import pytest

from component.xmpp.numbers import count_in


@pytest.mark.parametrize(
    ("text", "minimum", "expected"),
    [
        ("20", 0, 20),
        (" 7\n", 1, 7),
        ("0", 0, 0),
        ("0", 1, None),
        ("max", 1, None),
        ("²", 0, None),
        ("-3", 0, None),
        ("", 0, None),
        (None, 0, None),
        ("999999999", 0, 999_999_999),
        ("1000000000", 0, None),
    ],
)
def test_count_in(text: str | None, minimum: int, expected: int | None) -> None:
    assert count_in(text, minimum) == expected
