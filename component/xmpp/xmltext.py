"""Serialising payload XML without losing anything (pure).

slixmpp's serialiser drops namespaced attributes other than xml:* (an Atom
``<link thr:count='5'/>`` loses its count), and ElementTree's renames every namespace
to ns0:, ns1:. This one keeps default namespaces as ``xmlns=`` and declares a prefix
only for namespaced attributes.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape, quoteattr

from component.xmpp.namespaces import XML_NS


def _split(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def serialize(element: Element, parent_ns: str = "") -> str:
    """element as XML text, in a context whose default namespace is parent_ns."""
    parts: list[str] = []
    _write(element, parent_ns, parts)
    return "".join(parts)


def _write(element: Element, parent_ns: str, out: list[str]) -> None:
    ns, local = _split(element.tag)
    out.append(f"<{local}")
    if ns != parent_ns:
        out.append(f" xmlns={quoteattr(ns)}")
    prefixes: dict[str, str] = {}
    for name, value in element.attrib.items():
        attr_ns, attr_local = _split(name)
        if not attr_ns:
            out.append(f" {attr_local}={quoteattr(value)}")
        elif attr_ns == XML_NS:
            out.append(f" xml:{attr_local}={quoteattr(value)}")
        else:
            prefix = prefixes.get(attr_ns)
            if prefix is None:
                prefix = prefixes[attr_ns] = f"a{len(prefixes)}"
                out.append(f" xmlns:{prefix}={quoteattr(attr_ns)}")
            out.append(f" {prefix}:{attr_local}={quoteattr(value)}")
    children = list(element)
    if not children and not element.text:
        out.append("/>")
    else:
        out.append(">")
        if element.text:
            out.append(escape(element.text))
        for child in children:
            _write(child, ns, out)
            if child.tail:
                out.append(escape(child.tail))
        out.append(f"</{local}>")
