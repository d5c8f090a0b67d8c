"""Whether hosts of the local server are pubsub services, learnt from their disco#info.

The rule (policy.needs_pubsub_identity) says which targets need the check. Herald
asks each such host once, as itself, and keeps the answer for a while: `KnownHosts`
is the bounded memo (pure; the caller passes the time), `LocalHosts` asks, with one
question in flight per host however many requests wait for it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Collection
from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

from slixmpp.jid import JID

from component.pubsub.policy import is_pubsub_service, needs_pubsub_identity, not_pubsub_service
from component.pubsub.upstream import UpstreamError
from component.xmpp.namespaces import DISCO_INFO_NS

if TYPE_CHECKING:
    from component.pubsub.upstream import Upstream

# A host's components change with the server's configuration, rarely: ten minutes
# of a stale answer is the price of one disco#info per host, not per request.
HOST_TTL = 600.0
HOST_LIMIT = 1_000
# Conditions that say nothing about what the host is: asked again next time.
TRANSIENT = frozenset({"remote-server-timeout"})


class KnownHosts:
    """A bounded memo: host -> (is a pubsub service, when learnt)."""

    def __init__(self, ttl: float = HOST_TTL, limit: int = HOST_LIMIT) -> None:
        self.ttl = ttl
        self.limit = limit
        self._seen: OrderedDict[str, tuple[bool, float]] = OrderedDict()

    def known(self, host: str, now: float) -> bool | None:
        """What was learnt within the ttl; None when unknown or stale."""
        found = self._seen.get(host)
        if found is None:
            return None
        if now - found[1] >= self.ttl:
            del self._seen[host]
            return None
        return found[0]

    def note(self, host: str, pubsub: bool, now: float) -> None:
        """Record what the host is; the oldest entries go past the limit."""
        self._seen[host] = (pubsub, now)
        self._seen.move_to_end(host)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)


class LocalHosts:
    """Refuses targets that are local hosts but not pubsub services."""

    def __init__(
        self,
        upstream: Upstream,
        local_domains: Collection[str],
        upstream_jid: str,
        memo: KnownHosts | None = None,
    ) -> None:
        self.upstream = upstream
        self.local_domains = local_domains
        self.upstream_jid = upstream_jid
        self.memo = memo or KnownHosts()
        self._asking: dict[str, asyncio.Task[bool]] = {}

    async def refusal(self, target: str) -> str | None:
        """Why the target may not be used (a local host, not a pubsub service); None
        when it may. Raises UpstreamError when the host did not answer in time."""
        jid = JID(target)
        if not needs_pubsub_identity(jid.user, jid.domain, self.local_domains, self.upstream_jid):
            return None
        host = jid.domain.lower()
        pubsub = self.memo.known(host, asyncio.get_running_loop().time())
        if pubsub is None:
            # shielded: a requester that goes away does not cancel the others' answer
            pubsub = await asyncio.shield(self._ask(host))
        return None if pubsub else not_pubsub_service(target)

    def _ask(self, host: str) -> asyncio.Task[bool]:
        task = self._asking.get(host)
        if task is None:
            task = asyncio.create_task(self._disco(host))
            self._asking[host] = task
            task.add_done_callback(lambda done: self._asked(host, done))
        return task

    def _asked(self, host: str, task: asyncio.Task[bool]) -> None:
        self._asking.pop(host, None)
        if not task.cancelled():
            task.exception()  # retrieved here too: every waiter may have gone

    async def _disco(self, host: str) -> bool:
        asked = asyncio.get_running_loop().time()
        try:
            reply = await self.upstream.as_herald(
                "get", host, ET.Element(f"{{{DISCO_INFO_NS}}}query")
            )
        except UpstreamError as exc:
            if exc.condition in TRANSIENT:
                raise
            pubsub = False  # a pubsub service answers disco#info (XEP-0060 §5.1)
        else:
            identities = (
                (i.get("category", ""), i.get("type", ""))
                for i in reply.iter(f"{{{DISCO_INFO_NS}}}identity")
            )
            pubsub = is_pubsub_service(identities)
        self.memo.note(host, pubsub, asked)
        return pubsub
