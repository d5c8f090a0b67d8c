"""Stanza errors: the <error/> element every refusal carries, with a readable text."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from component.xmpp.namespaces import COMPONENT_NS, STANZAS_NS, XML_NS


def make_error(
    condition: str, text: str, etype: str = "cancel", specific: str | None = None
) -> ET.Element:
    """An <error/> element with a defined condition and an English text.

    `specific` is an application-specific condition, as {namespace}name (XEP-0060's
    pubsub#errors ones, say); it follows the text, as RFC 6120 orders them.
    """
    error = ET.Element(f"{{{COMPONENT_NS}}}error", {"type": etype})
    ET.SubElement(error, f"{{{STANZAS_NS}}}{condition}")
    text_el = ET.SubElement(error, f"{{{STANZAS_NS}}}text")
    text_el.text = text
    text_el.set(f"{{{XML_NS}}}lang", "en")
    if specific is not None:
        ET.SubElement(error, specific)
    return error
