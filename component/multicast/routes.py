"""How a copy may leave Herald with the original sender as `from` (pure decision).

A component may only send from its own domain; anything else makes the server close
the stream. Two routes keep the original sender: the server trusts the component
(trusted), or XEP-0356 privileged messages (privileged, message only, bare JID).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from component.xmpp.privilege import HostPrivileges

SenderMode = Literal["auto", "trusted", "privileged"]


@dataclass(frozen=True)
class Route:
    """Either a way to send (`mode`, and for privileged the host's grant) or a refusal."""

    mode: Literal["trusted", "privileged"] | None
    privileges: HostPrivileges | None = None
    condition: str = ""
    text: str = ""


def choose_route(
    configured: SenderMode,
    kind: Literal["message", "presence"],
    sender_domain: str,
    granted: dict[str, HostPrivileges],
) -> Route:
    """The route for a stanza of kind from a sender of sender_domain."""
    host = granted.get(sender_domain)
    usable = host if host is not None and host.can_send_messages() else None
    if configured == "trusted" or (
        configured == "auto" and not any(g.can_send_messages() for g in granted.values())
    ):
        return Route(mode="trusted")
    # privileged, or auto with privileges advertised
    if kind == "presence":
        return Route(
            mode=None,
            condition="feature-not-implemented",
            text="This multicast service sends through XEP-0356 privileged messages, "
            "which cannot carry presence; presence multicast is not available here.",
        )
    if usable is None:
        return Route(
            mode=None,
            condition="service-unavailable",
            text=f"This multicast service has no permission from the server to send "
            f"messages on behalf of users of {sender_domain}.",
        )
    return Route(mode="privileged", privileges=usable)


def overlapping_routes(configured: SenderMode, granted: HostPrivileges) -> tuple[bool, str] | None:
    """What to log when a host grants the message privilege: (is it a warning, text).

    Two routes to send as users must never be open together. Over a session that holds
    the message privilege, Prosody's mod_privilege obeys a <privilege/> envelope by the
    session, whatever the envelope's `from`: trusted-mode copies sent through it would
    make Herald a carrier of envelopes if anything let one through. Herald cannot see
    validate_from_addresses or check_from, so with `auto` (privileged once granted, and
    then nothing else is sent as a user) it only says so.
    """
    if not granted.can_send_messages():
        return None
    if configured == "trusted":
        return True, (
            f"{granted.host} grants the XEP-0356 message privilege, and sender_mode is "
            "'trusted': two routes to send as users are open. Keep one: remove the "
            "message privilege from the server's configuration, or set sender_mode = "
            "'privileged' and let the server check this component's 'from' again "
            "(Prosody validate_from_addresses, ejabberd check_from)."
        )
    if configured == "auto":
        return False, (
            f"{granted.host} grants the XEP-0356 message privilege: copies go as privileged "
            "messages. The server should not also trust this component's 'from' "
            "(Prosody validate_from_addresses = false, ejabberd check_from: false): keep "
            "one route."
        )
    return None
