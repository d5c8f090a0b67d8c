"""Reading a node's metadata (disco#info) upstream, as Herald.

Every read also lands in the OpenNodes memo (pubsub/openness.py), so a node found
closed for any reason stops being read as Herald on the miss path at once.
"""

from __future__ import annotations

import asyncio
from xml.etree import ElementTree as ET

from component.pubsub.access import NodeMeta, access_of, parse_node_meta
from component.pubsub.openness import OpenNodes
from component.pubsub.upstream import Upstream, UpstreamError
from component.xmpp.namespaces import DISCO_INFO_NS

# How long a node's metadata saying "open" lets misses on it be read as Herald. Served
# nodes are re-verified as often (Prosody 0.12 sends no configuration notifications).
OPEN_FOR = 5.0


class NodeMetadata:
    """Reads node metadata upstream and remembers briefly which nodes were open."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.open_nodes = OpenNodes(ttl=OPEN_FOR)

    async def read(self, service: str, node: str) -> NodeMeta:
        """disco#info on the node, as Herald; a missing node is exists=False."""
        query = ET.Element(f"{{{DISCO_INFO_NS}}}query", {"node": node})
        key = (service, node)
        # What the answer says holds from when it was asked, not from when it came.
        asked = asyncio.get_running_loop().time()
        try:
            reply = await self.upstream.as_herald("get", service, query)
        except UpstreamError as exc:
            if exc.condition != "item-not-found":
                self.open_nodes.forget(key)
                raise
            meta = NodeMeta(exists=False)
        else:
            found = reply.find(f"{{{DISCO_INFO_NS}}}query")
            # An answer without a <query/> proves nothing, not even that the node is gone.
            meta = NodeMeta(exists=True) if found is None else parse_node_meta(found)
        self.open_nodes.note(key, access_of(meta), asked)
        return meta
