"""What a disco answer from upstream becomes when the proxy relays it.

Clients talk to a proxy address as to any pubsub service, so what they discover there
must lead back to that address: a listed node names the proxy address that was
queried, never upstream (a client opening it would bypass the cache), and the service
introduces itself as Herald, with upstream's features plus those Herald adds.
"""

from __future__ import annotations

from collections.abc import Iterable
from xml.etree import ElementTree as ET

from component.xmpp.namespaces import DISCO_INFO_NS, DISCO_ITEMS_NS

IDENTITY_NAME = "Herald pubsub proxy"


def as_proxy(
    children: Iterable[ET.Element],
    upstream: str,
    address: str,
    features: Iterable[str] = (),
) -> list[ET.Element]:
    """Upstream's disco answer as the proxy address `address` gives it.

    Items whose jid is the proxied service `upstream` name `address` instead; pubsub
    identities carry Herald's name; `features` are added where upstream lacks them.
    The elements are changed in place and returned.
    """
    out = list(children)
    for answer in out:
        if answer.tag == f"{{{DISCO_ITEMS_NS}}}query":
            for item in answer.iter(f"{{{DISCO_ITEMS_NS}}}item"):
                if item.get("jid", "").lower() == upstream.lower():
                    item.set("jid", address)
        elif answer.tag == f"{{{DISCO_INFO_NS}}}query":
            for identity in answer.iter(f"{{{DISCO_INFO_NS}}}identity"):
                if (identity.get("category"), identity.get("type")) == ("pubsub", "service"):
                    identity.set("name", IDENTITY_NAME)
            have = {f.get("var") for f in answer.iter(f"{{{DISCO_INFO_NS}}}feature")}
            for var in features:
                if var not in have:
                    ET.SubElement(answer, f"{{{DISCO_INFO_NS}}}feature", {"var": var})
                    have.add(var)
    return out
