"""Serialising the copies of one multicast stanza without re-serialising its payload.

A fan-out to N recipients sends N stanzas that differ only in `to` and the header. The
payload is serialised once; each copy is a short opening tag, that string, and a header
string cached per distinct header (all to/cc recipients share one).
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

from component.multicast.addresses import ADDRESSES_TAG, AddressList, render_addresses
from component.xmpp.namespaces import COMPONENT_NS
from component.xmpp.xmltext import serialize


class CopyWriter:
    """Turns (to, header) pairs into the XML of copies of `original`."""

    def __init__(self, original: ET.Element) -> None:
        self._tag = original.tag
        self._attrib = dict(original.attrib)
        self._payload = [child for child in original if child.tag != ADDRESSES_TAG]
        parent_ns = self._tag[1:].partition("}")[0] if self._tag.startswith("{") else ""
        self._parent_ns = parent_ns
        self._payload_xml = "".join(serialize(child, parent_ns) for child in self._payload)
        self._closing = f"</{self._tag.rpartition('}')[2]}>"
        self._headers: dict[int, tuple[AddressList, ET.Element, str]] = {}

    def _header(self, addresses: AddressList) -> tuple[ET.Element, str]:
        # Keyed by identity: the planner hands every to/cc copy the same header object;
        # the object is kept in the entry so its id cannot be reused while cached.
        cached = self._headers.get(id(addresses))
        if cached is None:
            element = render_addresses(addresses)
            cached = (addresses, element, serialize(element, self._parent_ns))
            self._headers[id(addresses)] = cached
        return cached[1], cached[2]

    def text(self, to: str, addresses: AddressList) -> str:
        """A copy addressed to `to`, as XML text for the component stream."""
        opening = serialize(ET.Element(self._tag, {**self._attrib, "to": to}), COMPONENT_NS)
        if not opening.endswith("/>"):
            raise ValueError(f"unexpected serialisation of an empty element: {opening!r}")
        _, header = self._header(addresses)
        return opening[:-2].rstrip() + ">" + self._payload_xml + header + self._closing

    def element(self, to: str, addresses: AddressList, sender: str | None = None) -> ET.Element:
        """A copy as an element (for wrapping), optionally with another `from`."""
        xml = ET.Element(self._tag, {**self._attrib, "to": to})
        if sender is not None:
            xml.set("from", sender)
        xml.extend(self._payload)
        xml.append(self._header(addresses)[0])
        return xml
