"""What the multicast service refuses to carry for a user, whoever the recipient (pure).

Herald sends copies as the user through its own component session. Prosody's
mod_privilege (prosody-modules 2023-02) acts on a <privilege/> message addressed to a
host according to the *session* that delivered it, not the message's `from`: over a
session that holds the message privilege, a user's copy addressed to the server,
carrying a privilege envelope, would make the server send whatever message the envelope
holds, from whomever it names. So Herald never is the carrier:

- recipients without a user part (servers and components: the local domain, remote
  domains, any service) are refused. A JID without a localpart is never a person or a
  room, which is what a multicast service delivers to, and the rule needs no discovery,
  which a remote could answer falsely or slowly;
- a stanza carrying any urn:xmpp:privilege:* element, or a XEP-0297 <forwarded/> as a
  direct child (the shape a server unwraps), is refused, to any recipient.
"""

from __future__ import annotations

from collections.abc import Iterable
from xml.etree import ElementTree as ET

from component.multicast.addresses import Address

PRIVILEGE_PREFIX = "{urn:xmpp:privilege:"
FORWARDED_TAG = "{urn:xmpp:forward:0}forwarded"


def is_user_or_room(jid: str) -> bool:
    """Whether a (valid) JID has a user part: a person or a room, not a server or service."""
    return "@" in jid.partition("/")[0]


def domain_recipient_refusal(recipients: Iterable[Address]) -> str | None:
    """Why one of these recipients may not be delivered to, or None."""
    for address in recipients:
        if address.jid is not None and not is_user_or_room(address.jid):
            return (
                f"Cannot deliver to {address.jid}: it is a server or a service, not a "
                "user or a room; this multicast service delivers only to addresses "
                "with a user part."
            )
    return None


def envelope_refusal(stanza: ET.Element) -> str | None:
    """Why a user's stanza may not be carried (it holds an envelope), or None."""
    for child in stanza:
        if child.tag == FORWARDED_TAG:
            return (
                "This multicast service does not carry a stanza with a top-level "
                "<forwarded xmlns='urn:xmpp:forward:0'/>: a server may unwrap it."
            )
    for element in stanza.iter():
        if element.tag.startswith(PRIVILEGE_PREFIX):
            namespace = element.tag[1:].partition("}")[0]
            return (
                f"This multicast service does not carry a stanza with a {namespace} "
                "element: XEP-0356 envelopes are for the server's privileged entities."
            )
    return None
