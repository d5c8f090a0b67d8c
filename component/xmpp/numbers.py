"""Reading a count from XML text (pure).

ASCII digits only, because str.isdigit() accepts '²', which int() refuses; and at
most nine of them, so a hostile value cannot make a huge integer.
"""

from __future__ import annotations


def count_in(text: str | None, minimum: int = 0) -> int | None:
    """The integer text holds (surrounding whitespace allowed), or None if it holds
    none, or one below minimum."""
    if text is None:
        return None
    text = text.strip()
    if not (text.isascii() and text.isdecimal()) or len(text) > 9:
        return None
    value = int(text)
    return value if value >= minimum else None
