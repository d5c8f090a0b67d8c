"""Who may use the proxy for what, and which services it may reach (pure).

The proxy faces the whole federation. Requesters from `pubsub.local_domains` may use
every proxy address and write through it; anyone else may only read at the bare
proxy JID (the service the operator chose to proxy). No requester makes Herald reach
an IP literal or one of Herald's own JIDs: the server would dial whatever it is given.
Nor a host of the local server that is not a pubsub service (the server's own domain,
a MUC component): Herald, privileged there, must not become a way to send them pubsub
requests. Such a host is only used once its disco#info shows a pubsub service.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable


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


def needs_pubsub_identity(
    target_user: str | None, target_domain: str, local_domains: Collection[str], upstream: str
) -> bool:
    """Whether a target may be used only once its disco#info shows a pubsub service.

    That is a host of the local server: a domain of `local_domains` or a subdomain of
    one (where servers put their components; Herald cannot list them, and a subdomain
    that is in fact elsewhere only costs one disco#info). A user part means an
    account's PEP, and the configured upstream is a pubsub service by configuration.
    """
    domain = target_domain.lower().rstrip(".")
    if target_user or domain == upstream.lower().rstrip("."):
        return False
    return any(domain == local or domain.endswith(f".{local}") for local in local_domains)


def is_pubsub_service(identities: Iterable[tuple[str, str]]) -> bool:
    """Whether a disco#info answer's (category, type) identities show a pubsub service."""
    return ("pubsub", "service") in {(c.lower(), t.lower()) for c, t in identities}


def not_pubsub_service(target: str) -> str:
    """The refusal's text for a local host that is not a pubsub service."""
    return (
        f"{target} is a host of this server that is not a pubsub service; Herald does not proxy it."
    )
