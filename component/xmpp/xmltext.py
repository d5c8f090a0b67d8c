"""Serialising payload XML without losing anything (pure).

slixmpp's serialiser drops namespaced attributes other than xml:* (an Atom
``<link thr:count='5'/>`` loses its count), and ElementTree's renames every namespace
to ns0:, ns1:. This one keeps default namespaces as ``xmlns=`` and declares a prefix
only for namespaced attributes.

It is on every proxied reply's path (a 20-item page is ~130 elements), so it avoids
per-character work: escaping is skipped for text with nothing to escape, and tag
names are split once per distinct tag.
"""

from __future__ import annotations

from collections.abc import Callable
from xml.etree.ElementTree import Element

from component.xmpp.namespaces import XML_NS

_Emit = Callable[[str], None]

_SPLIT_MEMO_LIMIT = 4096
_split_memo: dict[str, tuple[str, str]] = {}


def _split(tag: str) -> tuple[str, str]:
    found = _split_memo.get(tag)
    if found is not None:
        return found
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        found = (ns, local)
    else:
        found = ("", tag)
    # Tags come from peers too: the memo is bounded, not a way to fill memory.
    if len(_split_memo) >= _SPLIT_MEMO_LIMIT:
        _split_memo.clear()
    _split_memo[tag] = found
    return found


def escape_text(text: str) -> str:
    """Character data with &, <, > and carriage returns escaped."""
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if "\r" in text:
        text = text.replace("\r", "&#13;")  # a parser would read a bare CR as LF
    return text


def quote_attr(value: str) -> str:
    """An attribute value, double-quoted; whitespace escaped so it survives parsing."""
    value = escape_text(value)
    if '"' in value:
        value = value.replace('"', "&quot;")
    if "\n" in value or "\t" in value:
        value = value.replace("\n", "&#10;").replace("\t", "&#9;")
    return f'"{value}"'


def serialize(element: Element, parent_ns: str = "") -> str:
    """element as XML text, in a context whose default namespace is parent_ns."""
    parts: list[str] = []
    _write(element, parent_ns, parts.append)
    return "".join(parts)


def _write(root: Element, root_parent_ns: str, emit: _Emit) -> None:
    # Iterative, not recursive: peers send payloads nested thousands deep (the server
    # parsed them), and recursion would stop at Python's limit of about 1,000.
    # The stack holds (element, its parent's namespace) to open, or a closing tag.
    stack: list[tuple[Element, str] | str] = [(root, root_parent_ns)]
    while stack:
        top = stack.pop()
        if isinstance(top, str):
            emit(top)
            continue
        element, parent_ns = top
        ns, local = _split(element.tag)
        if ns != parent_ns:
            emit(f"<{local} xmlns={quote_attr(ns)}")
        else:
            emit(f"<{local}")
        if element.attrib:
            _write_attributes(element, emit)
        text = element.text
        if len(element) == 0 and not text:
            emit("/>")
        else:
            emit(">")
            if text:
                emit(escape_text(text))
            stack.append(f"</{local}>")
            for child in reversed(element):
                tail = child.tail
                if tail:
                    stack.append(escape_text(tail))
                stack.append((child, ns))


def _write_attributes(element: Element, emit: _Emit) -> None:
    prefixes: dict[str, str] = {}
    for name, value in element.attrib.items():
        if not name.startswith("{"):
            emit(f" {name}={quote_attr(value)}")
            continue
        attr_ns, attr_local = _split(name)
        if attr_ns == XML_NS:
            emit(f" xml:{attr_local}={quote_attr(value)}")
            continue
        prefix = prefixes.get(attr_ns)
        if prefix is None:
            prefix = prefixes[attr_ns] = f"a{len(prefixes)}"
            emit(f" xmlns:{prefix}={quote_attr(attr_ns)}")
        emit(f" {prefix}:{attr_local}={quote_attr(value)}")
