"""What the search index holds for an item, and what a query looks for (pure).

An item's search document is a line of words: the text content of its payload
(every text node, whatever the namespace, parsed or not), then, for each key of its
parsed JSON, the words of that key's value, each glued to a short tag of the key.
Words are case-folded, stripped of accents and split on anything that is not a
letter or a digit, here in Python, so SQLite FTS5 and PostgreSQL's ``simple``
configuration see the same plain words and agree on what matches.

A value matches when every one of its words is in the document (or, for a parsed
field, among that key's words): no stemming, no phrases, no prefixes.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from typing import Any, Final
from xml.etree.ElementTree import ParseError, fromstring

# A document longer than this is cut (PostgreSQL refuses tsvectors over 1 MB).
MAX_DOCUMENT: Final = 200_000
_WORD: Final = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """The searchable words of text: case-folded, accents removed, letters and digits."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    return _WORD.findall(plain)


def payload_text(data: str) -> str:
    """The text content of a stored payload (XML Herald serialised itself)."""
    if not data.strip():
        return ""
    try:
        # Herald serialised it itself: no DTD, no entities.
        root = fromstring(data)
    except ParseError:
        return data
    return " ".join(root.itertext())


def field_tag(key: str) -> str:
    """The prefix of a parsed key's words: fixed length, so never ambiguous."""
    return "k" + hashlib.blake2s(key.encode(), digest_size=4).hexdigest()


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return " ".join(_value_text(v) for v in value.values())
    if isinstance(value, list | tuple):
        return " ".join(_value_text(v) for v in value)
    return "" if value is None or isinstance(value, bool) else str(value)


def document(data: str, parsed: Mapping[str, Any] | None) -> str:
    """The item's search document (see the module docstring)."""
    parts = words(payload_text(data))
    for key, value in (parsed or {}).items():
        tag = field_tag(str(key))
        parts.extend(tag + word for word in words(_value_text(value)))
    line = " ".join(parts)
    if len(line) > MAX_DOCUMENT:
        line = line[:MAX_DOCUMENT].rpartition(" ")[0]
    return line


def terms(value: str, key: str | None = None) -> list[str]:
    """The index terms a fulltext value (key None) or a parsed-field value asks for."""
    found = words(value)
    if key is None:
        return found
    tag = field_tag(key)
    return [tag + word for word in found]
