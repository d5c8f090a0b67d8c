"""Byte sizes for the limits Herald enforces (pure).

Measured cheaply: an ASCII string's UTF-8 size is its length, so only non-ASCII text
pays for an encode.
"""

from __future__ import annotations

import json

from component.storage.records import ItemRecord

# What one held ItemRecord costs beyond its strings' text, measured with sys.getsizeof
# on CPython 3.11: the object 56, its __dict__ 296, two datetimes 96, string headers
# about 150 (rounded up).
ITEM_OVERHEAD = 600


def utf8_size(text: str) -> int:
    """The UTF-8 size of text, in bytes."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def held_size(item: ItemRecord) -> int:
    """About how many bytes of memory an item held in the in-memory cache takes."""
    size = ITEM_OVERHEAD + len(item.data) + len(item.item_id) + len(item.publisher or "")
    if item.parsed is not None:
        # Parsed JSON, as dicts and strings, takes a few times its text; twice is a floor.
        size += 2 * len(json.dumps(item.parsed, default=str))
    return size
