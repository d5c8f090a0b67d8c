"""The pure parts of cache administration: durations, filters and table rendering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from component.cache_admin.durations import format_duration, parse_duration
from component.cache_admin.operations import PurgeFilter
from component.cache_admin.render import ago, size, table


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("12h", 43200), ("7d", 604800), ("2w", 1209600),
     ("1d12h", 129600), (" 3H ", 10800)],
)  # fmt: skip
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "soon", "5 m", "1.5h", "-3d", "0", "0s", "h12", "12hx"])
def test_bad_durations_say_why(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(timedelta(days=3, hours=4, minutes=5)) == "3d4h"
    assert format_duration(timedelta(minutes=12, seconds=30)) == "12m30s"
    assert format_duration(timedelta(days=1, seconds=5)) == "1d5s"
    assert format_duration(timedelta(0)) == "0s"


def test_purge_filter() -> None:
    assert PurgeFilter().empty
    assert not PurgeFilter(idle_for=timedelta(days=1)).empty
    glob = PurgeFilter(node="urn:xmpp:microblog:0*")
    assert glob.matches_name("urn:xmpp:microblog:0")
    assert glob.matches_name("urn:xmpp:microblog:0:comments/x")
    assert not glob.matches_name("URN:xmpp:microblog:0")  # case matters, as in rules
    assert PurgeFilter(service="s").matches_name("anything")


def test_rendering() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert ago(None, now) == "never"
    assert ago(now - timedelta(hours=3, minutes=12), now) == "3h12m ago"
    assert ago(now + timedelta(minutes=5), now) == "in 5m"
    sizes = [size(n) for n in (0, 1023, 1536, 5 * 1024**3)]
    assert sizes == ["0 B", "1023 B", "1.5 KiB", "5.0 GiB"]
    assert table(["A", "NUM"], [["x", "5"], ["long", "12"]], numeric={1}).splitlines() == [
        "A     NUM",
        "x       5",
        "long   12",
    ]
