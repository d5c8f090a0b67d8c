"""Refusals at the pubsub edge: the error a request is answered with, and the
checks on an IQ's shape that every proxied handler shares."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from slixmpp.xmlstream import StanzaBase

from component.xmpp.errors import make_error


class Refused(Exception):
    """Answer the request with this error element."""

    def __init__(self, error: ET.Element) -> None:
        super().__init__("refused")
        self.error = error


def only_child(iq: StanzaBase, tag: str) -> ET.Element:
    """The IQ's single payload, which must be the element the handler matched."""
    children = list(iq.xml)
    if len(children) != 1 or children[0].tag != tag:
        raise Refused(
            make_error("bad-request", "An IQ must carry exactly one payload element.", "modify")
        )
    return children[0]


def no_such_node(service: str, node: str) -> ET.Element:
    return make_error("item-not-found", f"There is no node {node!r} on {service}.")
