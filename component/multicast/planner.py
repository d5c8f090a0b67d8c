"""The pure XEP-0033 §6 delivery planner: from one addressed stanza to the copies to send.

The edge calls `remote_domains()` to learn which domains to discover, then `plan()` with
what discovery found. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from component.multicast.addresses import (
    Address,
    AddressList,
    AddressType,
    jid_domain,
    normalize_jid,
)
from component.multicast.carriage import domain_recipient_refusal

Route = Literal["local", "remote_service", "remote_direct"]
PlanCondition = Literal["bad-request", "forbidden", "not-acceptable", "jid-malformed"]


class RemoteSupport(BaseModel):
    """What discovery found for a remote domain; `service_jid` None means no service."""

    model_config = ConfigDict(frozen=True)

    service_jid: str | None = None
    max_per_stanza: int | None = Field(default=None, ge=1)

    @field_validator("service_jid")
    @classmethod
    def _normalize_service(cls, value: str | None) -> str | None:
        return None if value is None else normalize_jid(value)


class PlanRequest(BaseModel):
    """One stanza to plan: the outer `from`, its kind and header, and the service's policy.

    `kind` does not change the plan (§6 treats message and presence alike); it is carried
    so the edge and metrics see one value. A remote domain missing from `remote_support`
    is served directly, as if it had no multicast service.
    """

    model_config = ConfigDict(frozen=True)

    sender: str
    kind: Literal["message", "presence"]
    addresses: AddressList
    local_domains: frozenset[str]
    remote_support: Mapping[str, RemoteSupport] = Field(default_factory=dict)
    max_recipients: int = Field(ge=1)
    # Herald's own service domains (multicast, pubsub): never a recipient, or the
    # service would hand the stanza back to itself.
    own_domains: frozenset[str] = frozenset()

    @field_validator("sender")
    @classmethod
    def _normalize_sender(cls, value: str) -> str:
        return normalize_jid(value)

    @field_validator("local_domains", "own_domains")
    @classmethod
    def _normalize_domains(cls, value: frozenset[str]) -> frozenset[str]:
        return frozenset(jid_domain(d) for d in value)

    @field_validator("remote_support")
    @classmethod
    def _normalize_remote(cls, value: Mapping[str, RemoteSupport]) -> dict[str, RemoteSupport]:
        return {jid_domain(domain): support for domain, support in value.items()}


class PlanError(BaseModel):
    """Why the stanza is rejected: a stanza-error condition and a readable text."""

    model_config = ConfigDict(frozen=True)

    condition: PlanCondition
    text: str


class Copy(BaseModel):
    """One stanza to send: its outer `to`, its route, and the exact header it carries.

    `recipients` lists the JIDs this copy delivers to (one for local and direct copies,
    the handed-off ones for a remote service), for metrics and presence tracking.
    """

    model_config = ConfigDict(frozen=True)

    to: str
    route: Route
    addresses: AddressList
    recipients: tuple[str, ...]


class DeliveryPlan(BaseModel):
    """Either an error and no copy at all, or the copies to send."""

    model_config = ConfigDict(frozen=True)

    copies: tuple[Copy, ...] = ()
    error: PlanError | None = None

    @model_validator(mode="after")
    def _error_means_nothing_sent(self) -> DeliveryPlan:
        if self.error is not None and self.copies:
            raise ValueError("a rejected stanza must not be delivered to anyone")
        return self


def _reject(request: PlanRequest) -> PlanError | None:
    header = request.addresses
    if not header.addresses:
        return PlanError(condition="bad-request", text="The <addresses/> element is empty.")
    if not header.recipients():
        return PlanError(
            condition="bad-request", text="There is no to, cc or bcc address to deliver to."
        )
    pending = header.undelivered()
    if not pending:
        return PlanError(
            condition="bad-request",
            text="Every to, cc and bcc address is already marked delivered.",
        )
    for address in pending:
        if address.domain is not None and address.domain in request.own_domains:
            # §6: an address the server cannot deliver to is refused with Forbidden.
            return PlanError(
                condition="forbidden",
                text=f"Cannot deliver to {address.jid}: {address.domain} is this "
                "server's own service, not a recipient.",
            )
    refusal = domain_recipient_refusal(pending)
    if refusal is not None:
        return PlanError(condition="forbidden", text=refusal)
    sender_domain = jid_domain(request.sender)
    if sender_domain not in request.local_domains:
        for address in pending:
            domain = address.domain
            if domain is not None and domain not in request.local_domains:
                return PlanError(
                    condition="forbidden",
                    text=f"Relaying denied: senders from {sender_domain} may only "
                    f"address this server's users, not {domain}.",
                )
    if len(pending) > request.max_recipients:
        return PlanError(
            condition="not-acceptable",
            text=f"Too many recipients: {len(pending)} to, cc and bcc addresses; "
            f"the limit is {request.max_recipients}.",
        )
    for address in pending:
        if address.uri is not None:
            return PlanError(
                condition="jid-malformed",
                text=f"Cannot deliver to the URI {address.uri!r}: this service only "
                "delivers to JIDs.",
            )
        if address.jid is None:
            label = address.desc if address.desc is not None else address.node
            return PlanError(
                condition="jid-malformed",
                text=f"The {address.type} address {label!r} has no jid to deliver to.",
            )
    return None


def _recipients(header: AddressList) -> dict[str, int]:
    """Map each JID to deliver to onto its primary entry's index, in order of appearance.

    A JID already marked delivered in any entry is not delivered again. The primary entry
    is the one a remote service receives undelivered: the first to/cc, else the first bcc.
    """
    entries = header.addresses
    done = {a.normalized_jid for a in entries if a.is_recipient and a.delivered}
    primary: dict[str, int] = {}
    for index, address in enumerate(entries):
        jid = address.normalized_jid
        if not address.is_recipient or address.delivered or jid is None or jid in done:
            continue
        current = primary.get(jid)
        if current is None or (
            entries[current].type is AddressType.BCC and address.type is not AddressType.BCC
        ):
            primary[jid] = index
    return primary


class _HeaderBuilder:
    """Builds each copy's header from one precomputed base, so N copies cost O(N) each
    only in what differs: a fan-out to 1,000 bcc recipients must not cost 1,000,000 steps.

    In the base, every to/cc is marked delivered, every bcc is stripped, and other
    entries are kept. A copy adds back its own recipient's bcc entries, and a remote
    service's copy restores its handed-off entries (undelivered, bcc included).
    """

    def __init__(self, header: AddressList) -> None:
        self._entries = header.addresses
        base: list[Address] = []
        self._slot: list[int] = []  # for each entry: its position in base, or the insert point
        self._in_base: list[bool] = []
        self._own_bcc: dict[str, list[int]] = {}
        for index, address in enumerate(self._entries):
            self._slot.append(len(base))
            if not address.is_recipient:
                base.append(address)
                self._in_base.append(True)
            elif address.type is AddressType.BCC:
                self._in_base.append(False)
                jid = address.normalized_jid
                if jid is not None and not address.delivered:
                    self._own_bcc.setdefault(jid, []).append(index)
            else:
                base.append(address.marked_delivered())
                self._in_base.append(True)
        self._base = tuple(base)
        self._base_list = AddressList.model_construct(addresses=self._base)

    def build(self, own: str | None, handoff: frozenset[int]) -> AddressList:
        """The header for a copy to `own` (None for a service), restoring `handoff`."""
        extras = sorted({*handoff, *(self._own_bcc.get(own, ()) if own is not None else ())})
        if not extras:
            return self._base_list
        entries = list(self._base)
        # Walk backwards so earlier insert points stay valid.
        for index in reversed(extras):
            slot = self._slot[index]
            if self._in_base[index]:
                entries[slot] = self._entries[index]
            else:
                entries.insert(slot, self._entries[index])
        return AddressList.model_construct(addresses=tuple(entries))


def _chunks(items: list[str], size: int | None) -> Iterator[list[str]]:
    step = size or len(items)
    for start in range(0, len(items), step):
        yield items[start : start + step]


def remote_domains(request: PlanRequest) -> frozenset[str]:
    """The remote domains to discover before planning; none if the stanza will be rejected.

    Rejected stanzas need no discovery, so a refused sender cannot make us probe domains.
    """
    if _reject(request) is not None:
        return frozenset()
    return frozenset(
        domain
        for domain in map(jid_domain, _recipients(request.addresses))
        if domain not in request.local_domains
    )


def plan(request: PlanRequest) -> DeliveryPlan:
    """Plan the delivery of one stanza following XEP-0033 §6."""
    error = _reject(request)
    if error is not None:
        return DeliveryPlan(error=error)
    header = request.addresses
    primary = _recipients(header)
    headers = _HeaderBuilder(header)
    by_domain: dict[str, list[str]] = {}
    for jid in primary:
        by_domain.setdefault(jid_domain(jid), []).append(jid)
    copies: list[Copy] = []
    served_domains: set[str] = set()
    for jid in primary:
        domain = jid_domain(jid)
        support = request.remote_support.get(domain)
        if domain in request.local_domains or support is None or support.service_jid is None:
            route: Route = "local" if domain in request.local_domains else "remote_direct"
            copies.append(
                # model_construct: every value here was validated on the way in, and a
                # 1,000-recipient fan-out should not validate 1,000 copies again.
                Copy.model_construct(
                    to=jid,
                    route=route,
                    addresses=headers.build(jid, frozenset()),
                    recipients=(jid,),
                )
            )
        elif domain not in served_domains:
            served_domains.add(domain)
            same_domain = by_domain[domain]
            for chunk in _chunks(same_domain, support.max_per_stanza):
                handoff = frozenset(primary[j] for j in chunk)
                copies.append(
                    Copy.model_construct(
                        to=support.service_jid,
                        route="remote_service",
                        addresses=headers.build(None, handoff),
                        recipients=tuple(chunk),
                    )
                )
    return DeliveryPlan(copies=tuple(copies))
