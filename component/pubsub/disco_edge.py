"""The edge of service discovery at proxy addresses: disco#info and #items, proxied.

Disco is answered from upstream (as Herald, or as the user for a node's items list,
which is content), with Herald's own features added: RSM, the XEP-0050 commands for
admins, search on nodes searched from the cache, and held subscriptions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

from slixmpp.xmlstream import StanzaBase

from component.pubsub.admin_commands import COMMANDS_NS
from component.pubsub.decision import Action
from component.pubsub.discovery import as_proxy
from component.pubsub.held import SUBSCRIBE_FEATURES
from component.pubsub.node_state import NodeState
from component.pubsub.refused import only_child
from component.pubsub.search import add_search_features
from component.pubsub.sync_upstream import RSM_FEATURE
from component.xmpp.errors import make_error
from component.xmpp.namespaces import DISCO_INFO_NS, DISCO_ITEMS_NS

if TYPE_CHECKING:
    from component.pubsub.service import PubsubComponent


class ProxyDisco:
    """Answers disco queries at the component and its proxy addresses."""

    def __init__(self, component: PubsubComponent) -> None:
        self.component = component

    async def on_disco(self, iq: StanzaBase) -> None:
        pubsub = self.component
        if iq["type"] == "set":  # every set gets an answer (RFC 6120 §8.2.3)
            text = "Service discovery is queried with type='get'; it has no 'set'."
            pubsub._reply(iq, [make_error("bad-request", text, "modify")], "error")
            return
        if iq["type"] != "get":
            return
        found = iq.xml.find(f"{{{DISCO_INFO_NS}}}query")
        if found is None:
            found = iq.xml.find(f"{{{DISCO_ITEMS_NS}}}query")
        if found is not None:
            tag = found.tag
            await pubsub._serve(iq, "disco", lambda: self.disco(iq, tag))

    async def disco(self, iq: StanzaBase, tag: str) -> str:
        pubsub = self.component
        asked = only_child(iq, tag)
        namespace = tag[1:].partition("}")[0]
        service = await pubsub.targeting.target(iq, reading=True)
        node = asked.get("node")
        if namespace == DISCO_ITEMS_NS and node == COMMANDS_NS and not iq["to"].user:
            # XEP-0050 command list: answered here, never by upstream
            pubsub._reply(iq, [pubsub.admin_commands.listing(iq["from"].bare)])
            return "bypass"
        query = ET.Element(f"{{{namespace}}}query", {} if node is None else {"node": node})
        action = Action.AS_HERALD
        if namespace == DISCO_ITEMS_NS and node is not None:
            action, _ = await pubsub.deciding.decide(iq, "listing", service, node, None, _always)
        if action in (Action.FROM_CACHE, Action.AS_HERALD):
            reply = await pubsub.upstream.as_herald("get", service, query)
        else:
            # A node's items list is content: only as the user, or if in the cache.
            reply = await pubsub.targeting.as_user(iq, namespace, service, query)
        children = list(reply)
        if namespace == DISCO_INFO_NS and node is None:
            added = [RSM_FEATURE]
            if pubsub.admin_commands.is_admin(iq["from"].bare) and not iq["to"].user:
                added.append(COMMANDS_NS)  # only admins have commands to run
            for answer in children:
                if answer.tag != f"{{{DISCO_INFO_NS}}}query":
                    continue
                for var in added:
                    if answer.find(f"{{{DISCO_INFO_NS}}}feature[@var='{var}']") is None:
                        ET.SubElement(answer, f"{{{DISCO_INFO_NS}}}feature", {"var": var})
        elif namespace == DISCO_INFO_NS and node and pubsub.searching.searchable(service, node):
            for answer in children:
                if answer.tag == f"{{{DISCO_INFO_NS}}}query":
                    add_search_features(answer)
        features = SUBSCRIBE_FEATURES if node is None else ()
        pubsub._reply(iq, as_proxy(children, service, str(iq["to"]), features))
        return "bypass"


async def _always(_node: NodeState) -> bool:
    return True
