"""Presence-based delivery for the subscriptions Herald holds: the decisions (pure).

XEP-0060 §12.2 (pubsub#presence_based_delivery, a node option: notify available
subscribers only) and §6.3 (pubsub#show-values, a subscription option: notify only
while the subscriber's <show/> is one of the listed values; "online" stands for
available with no <show/>). Herald learns presence from the server (XEP-0356
presence permission); what it learned about one bare JID is a mapping resource ->
Resource, updated here from the values of each presence stanza.

A subscription to a bare JID is notified at the bare JID, which the server delivers
to its available resources of non-negative priority (RFC 6121 §8.5.2.1.1) and stores
offline when there is none: only those resources count. A subscription to a full JID
counts that resource alone, whatever its priority.

When Herald cannot know (Status UNKNOWN: the subscriber's server does not tell it),
nothing is withheld: a lost notification is worse for a subscriber than one more
stored offline, and show-values are refused at subscribe time for such JIDs
(component/pubsub/subscriptions.py), so they never silently stop applying.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SHOW_VALUES = frozenset({"away", "chat", "dnd", "online", "xa"})
ONLINE = "online"  # available without <show/>


@dataclass(frozen=True)
class Resource:
    """One available resource: its show value ("online" for none) and priority."""

    show: str = ONLINE
    priority: int = 0


Resources = Mapping[str, Resource]  # resource -> what it last announced


@dataclass(frozen=True)
class Status:
    """What Herald knows of a subscribed JID: unknown, or the show values of the
    resources a notification to it would reach (empty: unavailable)."""

    known: bool
    shows: frozenset[str] = frozenset()

    @property
    def available(self) -> bool:
        return bool(self.shows)


UNKNOWN = Status(known=False)


def show_of(text: str | None) -> str:
    """A <show/> text as a show value; anything RFC 6121 does not define is "online"."""
    value = (text or "").strip()
    return value if value in SHOW_VALUES and value != ONLINE else ONLINE


def priority_of(text: str | None) -> int:
    """A <priority/> text (RFC 6121 §4.7.2.3: -128..127, default 0); garbage is 0."""
    try:
        value = int((text or "0").strip())
    except ValueError:
        return 0
    return max(-128, min(127, value))


def observed(
    resources: Resources, resource: str, ptype: str | None, show: str | None, priority: str | None
) -> dict[str, Resource]:
    """The resources of a bare JID after a presence of type `ptype` from `resource`.

    Available (no type) records the resource; unavailable or error (RFC 6120 §8.3:
    the resource is gone) forgets it; other types (subscribe, probe...) say nothing
    about availability and change nothing.
    """
    updated = dict(resources)
    if ptype is None or ptype == "":
        updated[resource] = Resource(show_of(show), priority_of(priority))
    elif ptype in ("unavailable", "error"):
        updated.pop(resource, None)
    return updated


def status_of(jid: str, resources: Resources | None) -> Status:
    """What a notification to `jid` would find; `resources` None when Herald cannot know."""
    if resources is None:
        return UNKNOWN
    resource = jid.partition("/")[2]
    if resource:
        found = resources.get(resource)
        return Status(True, frozenset() if found is None else frozenset({found.show}))
    return Status(True, frozenset(r.show for r in resources.values() if r.priority >= 0))


def withheld(options: Mapping[str, Any], presence_based: bool, status: Status) -> str | None:
    """Why a notification is not sent for a subscription with these options, or None
    to send it: "unavailable" (a presence-based node, or show-values set, and no
    resource reached) or "show" (show-values set, and no reached resource shows one
    of them)."""
    if not status.known:
        return None
    wanted = options.get("pubsub#show-values") or []
    if not status.available:
        return "unavailable" if presence_based or wanted else None
    if wanted and not status.shows & set(wanted):
        return "show"
    return None
