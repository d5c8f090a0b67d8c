"""Subscriptions Herald holds itself at its proxy addresses: the decisions (pure).

XEP-0060 §6.1 (subscribe), §6.2 (unsubscribe), §6.3 (subscription options) and §5.6
(a subscriber's subscriptions), for the subscriptions of one proxy address and one
node, taken as values. Each function returns what to do, or raises Refusal with the
error the XEP names. Nothing here reads or writes anything.

A JID's subscriptions are told apart by subid. A subscribe that repeats one the JID
already holds, with the same options, returns that subscription (a client
re-subscribing at start-up gets no duplicate); other options make a new one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree as ET

from component.pubsub.availability import SHOW_VALUES
from component.storage.subscriptions_repo import LocalSubscription
from component.xmpp.namespaces import DATA_FORMS_NS, PUBSUB_EVENT_NS, SHIM_NS
from component.xmpp.xmltext import quote_attr

OPTIONS_FORM_TYPE = "http://jabber.org/protocol/pubsub#subscribe_options"
Options = dict[str, Any]  # field var -> value (str) or values (list[str])

BOOLEAN_FIELDS = frozenset({"pubsub#deliver", "pubsub#digest", "pubsub#include_body"})
ACCEPTED_FIELDS = BOOLEAN_FIELDS | {
    "pubsub#digest_frequency",
    "pubsub#expire",
    "pubsub#subscription_type",
    "pubsub#subscription_depth",
    "pubsub#show-values",
}


class Refusal(Exception):
    """A request the XEP says to refuse: condition, type, text, pubsub#errors condition."""

    def __init__(
        self,
        condition: str,
        text: str,
        etype: str = "modify",
        pubsub_condition: str | None = None,
        feature: str | None = None,
    ) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text
        self.etype = etype
        self.pubsub_condition = pubsub_condition
        self.feature = feature  # for pubsub#errors <unsupported feature='...'/>


@dataclass(frozen=True)
class Subscribed:
    """A subscribe's outcome: the subscription to answer with, and whether it is new."""

    subid: str
    options: Options
    new: bool


@dataclass(frozen=True)
class Delivery:
    """One notification to send: from a proxy address to a subscriber, with the
    subids to name in SHIM headers (empty when the subscriber holds only one)."""

    address: str
    to: str
    subids: tuple[str, ...]


def bare(jid: str) -> str:
    """The bare part of a normalised JID string."""
    return jid.partition("/")[0]


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true")


def _check_owner(requester_bare: str, jid: str, condition: str, pubsub: str | None) -> None:
    if bare(jid) != requester_bare:
        raise Refusal(
            condition,
            f"{requester_bare} may not act on the subscriptions of {jid}.",
            "modify" if condition == "bad-request" else "auth",
            pubsub,
        )


def read_options(form: ET.Element | None) -> Options | None:
    """The fields of a submitted subscribe_options form; None without a form.

    Raises Refusal (bad-request, invalid-options) for a form that is no such form
    or names a field this service does not know.
    """
    if form is None:
        return None
    if form.tag != f"{{{DATA_FORMS_NS}}}x" or form.get("type") not in ("submit", None):
        raise Refusal(
            "bad-request",
            "Options come as a data form of type submit.",
            "modify",
            "invalid-options",
        )
    options: Options = {}
    for field in form.findall(f"{{{DATA_FORMS_NS}}}field"):
        var = field.get("var", "")
        values = [v.text or "" for v in field.findall(f"{{{DATA_FORMS_NS}}}value")]
        if var == "FORM_TYPE":
            if values != [OPTIONS_FORM_TYPE]:
                raise Refusal(
                    "bad-request",
                    f"The form must be {OPTIONS_FORM_TYPE}.",
                    "modify",
                    "invalid-options",
                )
            continue
        if var not in ACCEPTED_FIELDS:
            raise Refusal(
                "bad-request", f"Unknown subscription option {var!r}.", "modify", "invalid-options"
            )
        if var in BOOLEAN_FIELDS:
            if len(values) != 1 or values[0].strip().lower() not in ("0", "1", "true", "false"):
                raise Refusal(
                    "bad-request", f"{var} takes one boolean value.", "modify", "invalid-options"
                )
            options[var] = "1" if _truthy(values[0]) else "0"
        elif var == "pubsub#show-values":
            unknown = sorted(set(values) - SHOW_VALUES)
            if unknown:
                raise Refusal(
                    "bad-request",
                    f"pubsub#show-values takes {', '.join(sorted(SHOW_VALUES))}, not {unknown}.",
                    "modify",
                    "invalid-options",
                )
            options[var] = values
        else:
            options[var] = values[0] if values else ""
    return options


def check_supported(options: Mapping[str, Any], presence_known: bool = False) -> None:
    """Refuse options Herald does not carry out (rather than accept and ignore them);
    show-values only where Herald knows the subscriber's presence (`presence_known`)."""
    if _truthy(options.get("pubsub#digest", "0")):
        raise Refusal(
            "feature-not-implemented",
            "Herald does not send digests.",
            "cancel",
            "unsupported",
            "subscription-options",
        )
    if options.get("pubsub#show-values") and not presence_known:
        raise Refusal(
            "bad-request",
            "The server does not tell Herald this JID's presence, so pubsub#show-values"
            " cannot apply: leave it empty.",
            "modify",
            "invalid-options",
        )
    if options.get("pubsub#subscription_type", "items") not in ("items", ""):
        raise Refusal(
            "feature-not-implemented",
            "Herald's subscriptions deliver items only.",
            "cancel",
            "unsupported",
            "subscription-options",
        )


def subscribe(
    requester_bare: str,
    jid: str | None,
    held: Sequence[LocalSubscription],
    options: Options | None,
    new_subid: str,
    presence_known: bool = False,
) -> Subscribed:
    """XEP-0060 §6.1: subscribe `jid` to a node where it holds `held` (same address
    and node, any JID: only those of `jid` count); `presence_known` as for
    check_supported."""
    if jid is None:
        raise Refusal("bad-request", "A subscribe needs a jid attribute.", "modify", "jid-required")
    _check_owner(requester_bare, jid, "bad-request", "invalid-jid")
    wanted = dict(options or {})
    check_supported(wanted, presence_known)
    for sub in held:
        if sub.subscriber == jid and sub.options == wanted:
            return Subscribed(sub.subid, sub.options, new=False)
    return Subscribed(new_subid, wanted, new=True)


def _one_of(
    requester_bare: str,
    jid: str | None,
    subid: str | None,
    held: Sequence[LocalSubscription],
    mismatch: str,
) -> LocalSubscription:
    """The subscription a §6.2/§6.3 request names, or the refusal the XEP gives."""
    if jid is None:
        raise Refusal("bad-request", "The request needs a jid attribute.", "modify", "jid-required")
    _check_owner(requester_bare, jid, mismatch, None if mismatch == "forbidden" else "invalid-jid")
    mine = [s for s in held if s.subscriber == jid]
    if not mine:
        raise Refusal(
            "unexpected-request",
            f"{jid} is not subscribed to this node.",
            "cancel",
            "not-subscribed",
        )
    if subid is None:
        if len(mine) > 1:
            raise Refusal(
                "bad-request",
                f"{jid} holds {len(mine)} subscriptions here: name one by subid.",
                "modify",
                "subid-required",
            )
        return mine[0]
    for sub in mine:
        if sub.subid == subid:
            return sub
    raise Refusal(
        "not-acceptable",
        f"No subscription of {jid} has subid {subid!r}.",
        "modify",
        "invalid-subid",
    )


def unsubscribe(
    requester_bare: str, jid: str | None, subid: str | None, held: Sequence[LocalSubscription]
) -> LocalSubscription:
    """XEP-0060 §6.2: the subscription to end."""
    return _one_of(requester_bare, jid, subid, held, "forbidden")


def options_of(
    requester_bare: str, jid: str | None, subid: str | None, held: Sequence[LocalSubscription]
) -> LocalSubscription:
    """XEP-0060 §6.3: the subscription whose options are read or set."""
    return _one_of(requester_bare, jid, subid, held, "forbidden")


def deliveries(
    subs: Iterable[LocalSubscription],
    withheld: Callable[[LocalSubscription], bool] | None = None,
) -> list[Delivery]:
    """Who gets a notification: one message per (address, subscriber), naming every
    subid when the subscriber holds more than one; pubsub#deliver=0 ones get none,
    nor those `withheld` says to hold back (presence-based delivery)."""
    grouped: dict[tuple[str, str], list[LocalSubscription]] = {}
    for sub in subs:
        grouped.setdefault((sub.address, sub.subscriber), []).append(sub)
    out = []
    for (address, to), group in grouped.items():
        wanted = [
            s.subid
            for s in group
            if _truthy(s.options.get("pubsub#deliver", "1")) and not (withheld and withheld(s))
        ]
        if wanted:
            out.append(Delivery(address, to, tuple(wanted) if len(group) > 1 else ()))
    return out


def options_form(options: Mapping[str, Any]) -> ET.Element:
    """The subscribe_options form (type form) with the subscription's current values."""
    form = ET.Element(f"{{{DATA_FORMS_NS}}}x", {"type": "form"})
    fields: list[tuple[str, str, list[str]]] = [
        ("FORM_TYPE", "hidden", [OPTIONS_FORM_TYPE]),
        ("pubsub#deliver", "boolean", [str(options.get("pubsub#deliver", "1"))]),
        ("pubsub#digest", "boolean", [str(options.get("pubsub#digest", "0"))]),
        ("pubsub#include_body", "boolean", [str(options.get("pubsub#include_body", "0"))]),
    ]
    for var, ftype, values in fields:
        field = ET.SubElement(form, f"{{{DATA_FORMS_NS}}}field", {"var": var, "type": ftype})
        for value in values:
            ET.SubElement(field, f"{{{DATA_FORMS_NS}}}value").text = value
    shows = ET.SubElement(
        form, f"{{{DATA_FORMS_NS}}}field", {"var": "pubsub#show-values", "type": "list-multi"}
    )
    for value in options.get("pubsub#show-values") or []:
        ET.SubElement(shows, f"{{{DATA_FORMS_NS}}}value").text = value
    for value in sorted(SHOW_VALUES):
        option = ET.SubElement(shows, f"{{{DATA_FORMS_NS}}}option", {"label": value})
        ET.SubElement(option, f"{{{DATA_FORMS_NS}}}value").text = value
    return form


def notification_text(delivery: Delivery, inner: str, trailer: str = "") -> str:
    """The <message/> carrying one event child (`inner`, serialised in the pubsub#event
    namespace) to a subscriber, with SHIM SubID headers when it holds several, and
    `trailer` (serialised in jabber:component:accept, such as a <delay/>) last."""
    headers = ""
    if delivery.subids:
        headers = (
            f"<headers xmlns={quote_attr(SHIM_NS)}>"
            + "".join(f'<header name="SubID">{_text(s)}</header>' for s in delivery.subids)
            + "</headers>"
        )
    return (
        f"<message from={quote_attr(delivery.address)} to={quote_attr(delivery.to)}>"
        f"<event xmlns={quote_attr(PUBSUB_EVENT_NS)}>{inner}</event>{headers}{trailer}</message>"
    )


def ended_text(sub: LocalSubscription) -> str:
    """The notice a pubsub service sends when it ends a subscription (subscription='none')."""
    return (
        f"<message from={quote_attr(sub.address)} to={quote_attr(sub.subscriber)}>"
        f"<event xmlns={quote_attr(PUBSUB_EVENT_NS)}><subscription node={quote_attr(sub.node)}"
        f" jid={quote_attr(sub.subscriber)} subid={quote_attr(sub.subid)}"
        ' subscription="none"/></event></message>'
    )


def _text(value: str) -> str:
    return quote_attr(value)[1:-1]
