"""XEP-0356 privileges: what the server granted us, and wrapping stanzas to use them.

Both namespaces are accepted: ejabberd 23.01 speaks ``urn:xmpp:privilege:1``, Prosody's
mod_privilege ``urn:xmpp:privilege:2`` (which adds the IQ permission).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

from component.xmpp.namespaces import CLIENT_NS, COMPONENT_NS, FORWARD_NS

PRIVILEGE_NAMESPACES = ("urn:xmpp:privilege:2", "urn:xmpp:privilege:1")


@dataclass(frozen=True)
class HostPrivileges:
    """The permissions one server host granted, as advertised after the handshake."""

    host: str
    namespace: str
    roster: str = "none"
    message: str = "none"
    presence: str = "none"
    iq: dict[str, str] = field(default_factory=dict)  # namespace -> get | set | both

    def summary(self) -> str:
        """The permissions, for a log line."""
        iq = ", ".join(f"{ns}={kind}" for ns, kind in self.iq.items()) or "none"
        return (
            f"{self.namespace} (message={self.message}, presence={self.presence}, "
            f"roster={self.roster}, iq: {iq})"
        )

    def can_send_messages(self) -> bool:
        """Whether we may send messages on behalf of this host's users."""
        return self.message == "outgoing"

    def can_iq(self, namespace: str, iq_type: str) -> bool:
        """Whether we may send an IQ of iq_type ("get"/"set") in namespace as a user."""
        granted = self.iq.get(namespace, "none")
        return granted == "both" or granted == iq_type


def parse_advertisement(host: str, message: ET.Element) -> HostPrivileges | None:
    """The privileges in a server's <message><privilege/></message>, or None if absent."""
    for namespace in PRIVILEGE_NAMESPACES:
        privilege = message.find(f"{{{namespace}}}privilege")
        if privilege is None:
            continue
        perms: dict[str, str] = {}
        iq: dict[str, str] = {}
        for perm in privilege.findall(f"{{{namespace}}}perm"):
            access = perm.get("access", "")
            if access == "iq":
                # iter(), not findall(): Prosody's mod_privilege (2023-02) forgets to close
                # each <namespace/>, so they arrive nested inside one another.
                for ns in perm.iter(f"{{{namespace}}}namespace"):
                    if ns.get("ns"):
                        iq[ns.get("ns", "")] = ns.get("type", "none")
            elif access in ("roster", "message", "presence"):
                perms[access] = perm.get("type", "none")
        return HostPrivileges(host=host, namespace=namespace, iq=iq, **perms)
    return None


def _to_client_namespace(element: ET.Element) -> ET.Element:
    # The forwarded stanza must be in jabber:client; Prosody rejects jabber:component:accept
    # ("invalid forwarded <message/> element").
    result = copy.deepcopy(element)
    for node in result.iter():
        if node.tag.startswith(f"{{{COMPONENT_NS}}}"):
            node.tag = f"{{{CLIENT_NS}}}" + node.tag.split("}", 1)[1]
    return result


def wrap_message(privileges: HostPrivileges, component_jid: str, inner: ET.Element) -> ET.Element:
    """A privileged-message envelope sending `inner` (from a user of privileges.host)."""
    ns = privileges.namespace
    outer = ET.Element(f"{{{COMPONENT_NS}}}message", {"from": component_jid, "to": privileges.host})
    privilege = ET.SubElement(outer, f"{{{ns}}}privilege")
    forwarded = ET.SubElement(privilege, f"{{{FORWARD_NS}}}forwarded")
    forwarded.append(_to_client_namespace(inner))
    return outer
