"""The ``atom`` parser: XEP-0277 microblog items (Atom entries) to a JSON-able dict.

Output keys, each present only when the entry has it: ``id``, ``title``, ``summary``,
``content`` with ``content_type`` (``text``, ``html``, ``xhtml`` or a media type),
``published``, ``updated`` (as given), ``author`` (``name``, ``uri``, ``email``).
``categories`` (terms) and ``links`` (``rel``, ``href``, ``type``, ``title``) are
always lists. A payload that is not an Atom entry gives ``{}``.
"""

from __future__ import annotations

import logging
from typing import Any
from xml.etree.ElementTree import Element

log = logging.getLogger(__name__)

ATOM_NS = "http://www.w3.org/2005/Atom"
XHTML_NS = "http://www.w3.org/1999/xhtml"
_A = f"{{{ATOM_NS}}}"


def parse_atom(payload: Element) -> dict[str, Any]:
    """Extract the searchable fields of an Atom entry; never raises."""
    if not isinstance(payload, Element) or payload.tag != f"{_A}entry":
        return {}
    result: dict[str, Any] = {}
    try:
        _fill(payload, result)
    except Exception:
        # Stored data is best effort: a surprise in one field must not lose the others,
        # nor stop the raw item from being cached.
        log.debug("unexpected Atom entry shape; keeping a partial parse", exc_info=True)
    return result


def _fill(entry: Element, result: dict[str, Any]) -> None:
    result["categories"] = [
        term for cat in entry.findall(f"{_A}category") if (term := cat.get("term", "").strip())
    ]
    result["links"] = [link for elem in entry.findall(f"{_A}link") if (link := _link(elem))]
    for key in ("id", "published", "updated"):
        elem = entry.find(f"{_A}{key}")
        if elem is not None and (text := _text(elem)):
            result[key] = text
    for key in ("title", "summary"):
        elem = entry.find(f"{_A}{key}")
        if elem is not None and (text := _text(elem)):
            result[key] = text
    content = _pick_content(entry.findall(f"{_A}content"))
    if content is not None and (text := _text(content)):
        result["content"] = text
        result["content_type"] = content.get("type", "text")
    author = entry.find(f"{_A}author")
    if author is not None:
        fields = {}
        for key in ("name", "uri", "email"):
            elem = author.find(f"{_A}{key}")
            if elem is not None and (text := _text(elem)):
                fields[key] = text
        if fields:
            result["author"] = fields


def _text(elem: Element) -> str:
    """The text of an Atom text construct; for XHTML, the text content of its div."""
    source = elem
    if elem.get("type") == "xhtml":
        div = elem.find(f"{{{XHTML_NS}}}div")
        if div is not None:
            source = div
    return _inner_text(source).strip()


def _inner_text(elem: Element) -> str:
    # Element.itertext() would include the text of comments and processing instructions.
    parts = [elem.text or ""]
    for child in elem:
        if isinstance(child.tag, str):
            parts.append(_inner_text(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _pick_content(contents: list[Element]) -> Element | None:
    """XEP-0277 allows a plain-text and an XHTML body side by side: prefer the text."""
    for content in contents:
        if content.get("type", "text") == "text":
            return content
    return contents[0] if contents else None


def _link(elem: Element) -> dict[str, str]:
    href = elem.get("href", "").strip()
    if not href:
        return {}
    # RFC 4287 §4.2.7.2: a link without rel is an "alternate" link.
    link = {"rel": elem.get("rel") or "alternate", "href": href}
    for key in ("type", "title"):
        if value := elem.get(key):
            link[key] = value
    return link
