"""The multicast service's disco at the XMPP edge: what it says of itself, and asking others.

Answers to Herald's own queries are read from the reply it awaited (slixmpp matches it
by id and sender); disco results nobody asked for reach no handler that keeps them.
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

from slixmpp.exceptions import IqError, IqTimeout

from component.multicast.addresses import ADDRESS_NS
from component.multicast.discovery import DiscoError, DiscoInfo
from component.xmpp.connection import ServiceComponent
from component.xmpp.dataforms import values_of
from component.xmpp.disco import INFO_QUERY, ITEMS_QUERY, Identity, OwnDisco, read_info, read_items
from component.xmpp.namespaces import DATA_FORMS_NS
from component.xmpp.numbers import count_in

DISCO_TIMEOUT = 5.0


def multicast_disco(max_recipients: int) -> OwnDisco:
    """The service's identity and feature, and its limits as ejabberd advertises its own
    (a XEP-0128 form with FORM_TYPE = the address namespace)."""
    form = ET.Element(f"{{{DATA_FORMS_NS}}}x", {"type": "result"})
    for var, value, ftype in (
        ("FORM_TYPE", ADDRESS_NS, "hidden"),
        ("message", str(max_recipients), None),
        ("presence", str(max_recipients), None),
    ):
        field = ET.SubElement(form, f"{{{DATA_FORMS_NS}}}field", {"var": var})
        if ftype is not None:
            field.set("type", ftype)
        ET.SubElement(field, f"{{{DATA_FORMS_NS}}}value").text = value
    return OwnDisco(
        identities=(Identity("service", "multicast", "Herald multicast"),),
        features=(ADDRESS_NS,),
        forms=(form,),
    )


class ComponentDisco:
    """DiscoClient over the component's stream, turning replies into plain values."""

    def __init__(self, component: ServiceComponent) -> None:
        self._component = component

    async def _ask(self, jid: str, tag: str) -> ET.Element:
        iq = self._component.make_iq_get(ito=jid, ifrom=self._component.boundjid.bare)
        iq.xml.append(ET.Element(tag))
        try:
            reply = await iq.send(timeout=DISCO_TIMEOUT)  # type: ignore[no-untyped-call]
        except IqError as exc:
            raise DiscoError(exc.iq["error"]["condition"]) from None
        except IqTimeout:
            raise DiscoError("no answer", timeout=True) from None
        xml: ET.Element = reply.xml
        return xml

    async def info(self, jid: str) -> DiscoInfo:
        """disco#info of jid: its features and any XEP-0033 limits form."""
        answer = read_info(await self._ask(jid, INFO_QUERY))
        return DiscoInfo(answer.features, _limits(answer.query))

    async def items(self, jid: str) -> list[str]:
        """disco#items of jid: the items' JIDs."""
        return read_items(await self._ask(jid, ITEMS_QUERY))


def _limits(query: ET.Element) -> dict[str, int]:
    """The message/presence limits of a XEP-0128 form with FORM_TYPE = address."""
    for form in query.findall(f"{{{DATA_FORMS_NS}}}x"):
        fields = values_of(form)
        if fields.get("FORM_TYPE") != [ADDRESS_NS]:
            continue
        limits: dict[str, int] = {}
        for kind in ("message", "presence"):
            limit = count_in((fields.get(kind) or [""])[0], minimum=1)
            if limit is not None:
                limits[kind] = limit
        return limits
    return {}
