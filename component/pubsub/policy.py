"""Who may use the proxy for what, and which services it may reach (pure).

The proxy faces the whole federation. Requesters from `pubsub.local_domains` may use
every proxy address and write through it; anyone else may only read at the bare
proxy JID (the service the operator chose to proxy). No requester makes Herald reach
an IP literal or one of Herald's own JIDs: the server would dial whatever it is given.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection


def requester_refusal(
    requester_domain: str, local_domains: Collection[str], escaped: bool, reading: bool
) -> str | None:
    """Why this requester may not make this request; None when it may."""
    if requester_domain.lower() in local_domains:
        return None
    domains = ", ".join(sorted(local_domains))
    if escaped:
        return f"Only users of {domains} may reach other services through this proxy."
    if not reading:
        return f"Only users of {domains} may write or subscribe through this proxy."
    return None


def target_refusal(target_domain: str, own_domains: Collection[str]) -> str | None:
    """Why no request may go to this service; None when it may."""
    domain = target_domain.lower().strip("[]")
    try:
        ipaddress.ip_address(domain)
    except ValueError:
        pass
    else:
        return "The proxy reaches XMPP services by name, never an IP address."
    if domain in own_domains:
        return "That address is one of Herald's own services, not a pubsub service."
    return None
