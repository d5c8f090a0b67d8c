"""XEP-0033 address headers: pydantic models, parsing and rendering (pure, no I/O)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from enum import StrEnum
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from slixmpp.jid import JID, InvalidJID

from component.xmpp.xmltext import serialize

ADDRESS_NS = "http://jabber.org/protocol/address"
ADDRESSES_TAG = f"{{{ADDRESS_NS}}}addresses"
ADDRESS_TAG = f"{{{ADDRESS_NS}}}address"

AddressErrorCondition = Literal["bad-request", "jid-malformed", "not-acceptable"]


class AddressError(Exception):
    """An address header that breaks XEP-0033 §4; `condition` is the stanza error to return."""

    def __init__(self, condition: AddressErrorCondition, text: str) -> None:
        super().__init__(text)
        self.condition: AddressErrorCondition = condition
        self.text = text


class AddressType(StrEnum):
    """The address types of XEP-0033 §4.6 (v1.2.1, including `ofrom`)."""

    TO = "to"
    CC = "cc"
    BCC = "bcc"
    REPLYTO = "replyto"
    REPLYROOM = "replyroom"
    NOREPLY = "noreply"
    OFROM = "ofrom"


RECIPIENT_TYPES = frozenset({AddressType.TO, AddressType.CC, AddressType.BCC})


@lru_cache(maxsize=4096)
def _split_jid(value: str) -> tuple[str, str]:
    try:
        jid = JID(value)
    except InvalidJID as exc:
        raise AddressError("jid-malformed", f"{value!r} is not a valid JID: {exc}.") from exc
    if not jid.domain:
        raise AddressError("jid-malformed", f"{value!r} is not a valid JID: it has no domain.")
    return jid.full, jid.domain.lower()


def normalize_jid(value: str) -> str:
    """Return the canonical full JID; raise AddressError('jid-malformed') when invalid."""
    return _split_jid(value)[0]


def jid_domain(value: str) -> str:
    """Return the lowercased host part of a JID; raise AddressError('jid-malformed')."""
    return _split_jid(value)[1]


class Address(BaseModel):
    """One `<address/>`. `jid` keeps the text as received so re-rendering is faithful."""

    model_config = ConfigDict(frozen=True)

    type: AddressType
    jid: str | None = None
    uri: str | None = None
    node: str | None = None
    desc: str | None = None
    delivered: bool = False

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> AddressType:
        # An unknown type is not an "extension" (those are child elements), and guessing
        # whether it names a recipient risks silent non-delivery, so it is refused.
        try:
            return AddressType(value)
        except ValueError:
            raise AddressError("bad-request", f"Unknown address type {value!r}.") from None

    @field_validator("jid")
    @classmethod
    def _valid_jid(cls, value: str | None) -> str | None:
        if value is not None:
            normalize_jid(value)
        return value

    @model_validator(mode="after")
    def _section_4_rules(self) -> Address:
        if self.jid is not None and self.uri is not None:
            raise AddressError("bad-request", "An address may not have both a jid and a uri.")
        if self.uri is not None and self.node is not None:
            raise AddressError("bad-request", "An address may not have both a uri and a node.")
        # §4.6.6: noreply "contains no actual address information"; §4 exempts it.
        if (
            self.type is not AddressType.NOREPLY
            and self.jid is None
            and self.uri is None
            and self.node is None
            and self.desc is None
        ):
            raise AddressError(
                "bad-request", f"The {self.type} address needs a jid, uri, node or desc."
            )
        return self

    @property
    def is_recipient(self) -> bool:
        """True for to, cc and bcc: the types a multicast service delivers to."""
        return self.type in RECIPIENT_TYPES

    @property
    def normalized_jid(self) -> str | None:
        """The canonical full JID, used to compare and deduplicate recipients."""
        return None if self.jid is None else normalize_jid(self.jid)

    @property
    def domain(self) -> str | None:
        """The lowercased host part of the JID, or None without a JID."""
        return None if self.jid is None else jid_domain(self.jid)

    def marked_delivered(self) -> Address:
        """This address with delivered='true'."""
        return self if self.delivered else self.model_copy(update={"delivered": True})


class AddressList(BaseModel):
    """An ordered `<addresses/>` header; order is kept because copies mirror it."""

    model_config = ConfigDict(frozen=True)

    addresses: tuple[Address, ...] = ()

    def recipients(self) -> tuple[Address, ...]:
        """The to, cc and bcc addresses."""
        return tuple(a for a in self.addresses if a.is_recipient)

    def undelivered(self) -> tuple[Address, ...]:
        """The to, cc and bcc addresses not yet marked delivered."""
        return tuple(a for a in self.addresses if a.is_recipient and not a.delivered)

    def of_type(self, *types: AddressType) -> tuple[Address, ...]:
        """The addresses of the given types, in order."""
        return tuple(a for a in self.addresses if a.type in types)


def _parse_delivered(value: str | None) -> bool:
    # The schema fixes the value to 'true'; xs:boolean spellings are tolerated.
    if value is None or value in ("false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise AddressError("bad-request", f"Invalid delivered value {value!r}.")


def header_size(elem: ET.Element) -> int:
    """The header's size in bytes, serialized as UTF-8 (what every copy repeats).

    Herald's own serializer, not ET.tostring: that one recurses, and a header nested
    about a thousand deep would raise RecursionError (found by the fuzzer).
    """
    return len(serialize(elem).encode("utf-8"))


def check_header_limits(
    count: int, size: int, max_addresses: int | None, max_bytes: int | None
) -> AddressError | None:
    """The error for a header over the limits, or None. `count` is its <address/>
    elements of any type: delivered, replyto and the like are repeated in every copy
    as much as recipients are."""
    if max_addresses is not None and count > max_addresses:
        return AddressError(
            "not-acceptable",
            f"Too many addresses: {count} <address/> elements of any type; "
            f"the limit is {max_addresses}.",
        )
    if max_bytes is not None and size > max_bytes:
        return AddressError(
            "not-acceptable",
            f"The <addresses/> header is too large: {size} bytes; the limit is {max_bytes}.",
        )
    return None


def parse_addresses(
    elem: ET.Element, max_addresses: int | None = None, max_bytes: int | None = None
) -> AddressList:
    """Parse an `<addresses/>` element, ignoring unknown children and attributes (§4.7).

    Limits are checked before any address is parsed, so a huge header costs one pass.
    """
    if elem.tag != ADDRESSES_TAG:
        raise AddressError("bad-request", f"Expected <addresses xmlns='{ADDRESS_NS}'/>.")
    if max_addresses is not None or max_bytes is not None:
        count = sum(1 for child in elem if child.tag == ADDRESS_TAG)
        # Counted first: a header over max_addresses is not serialized at all.
        size = 0 if max_addresses is not None and count > max_addresses else header_size(elem)
        error = check_header_limits(count, size, max_addresses, max_bytes)
        if error is not None:
            raise error
    parsed: list[Address] = []
    for child in elem:
        if child.tag != ADDRESS_TAG:
            continue
        attrs = child.attrib
        if "type" not in attrs:
            raise AddressError("bad-request", "An address has no type attribute.")
        parsed.append(
            Address(
                type=attrs["type"],
                jid=attrs.get("jid"),
                uri=attrs.get("uri"),
                node=attrs.get("node"),
                desc=attrs.get("desc"),
                delivered=_parse_delivered(attrs.get("delivered")),
            )
        )
    return AddressList(addresses=tuple(parsed))


def render_addresses(addresses: AddressList) -> ET.Element:
    """Render the header back to an `<addresses/>` element."""
    root = ET.Element(ADDRESSES_TAG)
    for address in addresses.addresses:
        attrs = {"type": address.type.value}
        for name in ("jid", "uri", "node", "desc"):
            value = getattr(address, name)
            if value is not None:
                attrs[name] = value
        if address.delivered:
            attrs["delivered"] = "true"
        ET.SubElement(root, ADDRESS_TAG, attrs)
    return root
