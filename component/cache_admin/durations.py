"""Durations as operators write them: ``90s``, ``15m``, ``12h``, ``7d``, ``2w``, ``1d12h``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART: Final = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str) -> timedelta:
    """The duration ``text`` names; ValueError with a readable reason otherwise.

    A bare number is seconds. Parts add up (``1d12h``); zero is refused, since
    "idle for no time" would match every node.
    """
    value = text.strip().lower()
    if value.isdigit():
        seconds = int(value)
    else:
        parts = _PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise ValueError(
                f"{text!r} is not a duration: write a number with a unit, such as "
                "90s, 15m, 12h, 7d or 2w (parts add up: 1d12h)"
            )
        seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be longer than zero")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """A short human form: ``3d4h``, ``12m30s``, ``0s`` (two largest units at most)."""
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return "0s"
    out = []
    for unit, size in sorted(_UNITS.items(), key=lambda u: -u[1]):
        if unit == "w":
            continue  # days read better than weeks in a table
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
        if len(out) == 2:
            break
    return "".join(out)
