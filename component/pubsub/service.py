"""The pubsub component: a transparent caching proxy in front of XEP-0060 services.

Items reads of nodes that are in sync and open are answered from the cache. Everything
else goes upstream: as Herald only when the answer is one anyone could read, else as
the requesting user through a XEP-0356 privileged IQ, else it is refused. Herald never
hands a requester what it read as itself from a node that is not open.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from xml.etree import ElementTree as ET

from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.handler import CoroutineCallback
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component import metrics
from component.background import Background
from component.config import PubsubSettings
from component.pubsub.admin_commands import COMMANDS_NS, AdminCommands
from component.pubsub.admin_watch import AdminWatch
from component.pubsub.cache import Cache
from component.pubsub.command_edge import on_command
from component.pubsub.deciding import Deciding
from component.pubsub.disco_edge import ProxyDisco
from component.pubsub.held import (
    HELD_ACTIONS,
    HeldAnswer,
    HeldRefusal,
    HeldSubscriptions,
    by_read_decision,
)
from component.pubsub.item_intake import CacheLimits
from component.pubsub.local_hosts import LocalHosts
from component.pubsub.message_edge import on_message
from component.pubsub.presence_edge import Presences
from component.pubsub.presence_edge import attach as attach_presences
from component.pubsub.reading import Reading
from component.pubsub.refused import Refused, only_child
from component.pubsub.requests import (
    PubsubRequest,
    RequestError,
    parse_request,
)
from component.pubsub.rules import Registry
from component.pubsub.search import MAM_NS
from component.pubsub.searching import Searching
from component.pubsub.stanzas import written_events
from component.pubsub.sync import Synchroniser
from component.pubsub.targeting import Targeting
from component.pubsub.upstream import Upstream, UpstreamError
from component.storage.engine import ping
from component.xmpp.connection import ServiceComponent
from component.xmpp.errors import make_error
from component.xmpp.matching import StanzaMatch
from component.xmpp.namespaces import (
    COMPONENT_NS,
    DISCO_INFO_NS,
    DISCO_ITEMS_NS,
    PUBSUB_ERRORS_NS,
    PUBSUB_NS,
    PUBSUB_OWNER_NS,
)
from component.xmpp.privilege import HostPrivileges
from component.xmpp.xmltext import serialize

log = logging.getLogger(__name__)

DATABASE_RETRY = 0.5  # seconds between tries of a database that went away

KINDS = frozenset(
    {
        "items",
        "publish",
        "retract",
        "subscribe",
        "unsubscribe",
        "create",
        "delete",
        "purge",
        "configure",
        "affiliations",
        "subscriptions",
        "options",
        "default",
    }
)
UPKEEP_EVERY = 30.0
GAUGES_EVERY = 2.0  # seconds: how far the cached-items gauge may lag behind notifications


class PubsubComponent(ServiceComponent):
    """The caching proxy: routes each request to the cache, upstream, or a refusal."""

    service_name = "pubsub"

    def __init__(
        self,
        settings: PubsubSettings,
        host: str,
        port: int,
        sessions: async_sessionmaker[AsyncSession],
        registry: Registry,
        trusted_hosts: frozenset[str],
        own_jids: frozenset[str] = frozenset(),
        redoable: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self.settings = settings
        self.max_stanza_bytes = settings.max_stanza_bytes
        self.local_domains = frozenset(d.lower() for d in settings.local_domains)
        # Herald's own services: never a target (e.g. the multicast JID, escaped).
        self.own_domains = frozenset(
            j.lower().partition("@")[2] or j.lower() for j in {settings.jid, *own_jids}
        )
        self.upstream_jid = settings.upstream
        self.registry = registry
        self.cache = Cache(
            sessions, settings.max_items_per_node, settings.memory_cache_bytes, redoable
        )
        self._upkeep_task: asyncio.Task[None] | None = None
        self._gauges_task: asyncio.Task[None] | None = None
        self._verified: dict[int, float] = {}
        self._background = Background("pubsub: background work")
        super().__init__(
            settings.jid, settings.secret.get_secret_value(), host, port, trusted_hosts
        )
        self.upstream = Upstream(self, timeout=settings.upstream_timeout)
        self.local_hosts = LocalHosts(self.upstream, self.local_domains, self.upstream_jid)
        self.synchroniser = Synchroniser(
            self.upstream,
            self.cache,
            registry,
            self.boundjid.bare,
            serialize,
            settings.reconcile_interval,
            CacheLimits(settings.max_item_bytes, settings.max_nodes_per_service),
        )
        self.open_nodes = self.synchroniser.open_nodes
        self.presences = Presences(settings.presence_based_delivery, self.boundjid.bare)
        self.held = HeldSubscriptions(
            self.cache,
            self.upstream,
            self.boundjid.bare,
            self.send_raw,
            by_read_decision(self.presences.watching(self.synchroniser.node_meta)),
        )
        attach_presences(self, self.held, self.presences)
        self.synchroniser.keeps_subscription = self.held.holds
        self.admin_watch = AdminWatch(self.cache, self.synchroniser)
        self._admin_task: asyncio.Task[None] | None = None
        self._resync_task: asyncio.Task[None] | None = None
        self._redo: set[int] = set()  # node ids to re-fetch once the database answers
        self._flush_task: asyncio.Task[None] | None = None
        self.admin_commands = AdminCommands(
            settings.admins, self.boundjid.bare, self.upstream_jid, sessions, self.admin_watch
        )
        self.reading = Reading(self)
        self.searching = Searching(self)
        self.targeting = Targeting(self)
        self.disco = ProxyDisco(self)
        self.deciding = Deciding(self, self._verified)

    def size_limited(self, xml: ET.Element) -> bool:
        # Requests only: results and notifications are answers from services Herald
        # itself asks or subscribes to (a whole node's items); dropping one would leave
        # a request unanswered or the cache stale. Their items face max_item_bytes.
        return xml.tag == f"{{{COMPONENT_NS}}}iq" and xml.get("type") in ("get", "set")

    def setup(self) -> None:
        # Disco is proxied: _on_disco answers it (slixmpp's xep_0030 is not loaded).
        for path, handler in (
            (f"{{{PUBSUB_NS}}}pubsub", self._on_pubsub),
            (f"{{{PUBSUB_OWNER_NS}}}pubsub", self._on_pubsub),
            (f"{{{DISCO_INFO_NS}}}query", self._on_disco),
            (f"{{{DISCO_ITEMS_NS}}}query", self._on_disco),
            (f"{{{MAM_NS}}}query", self._on_search),
        ):
            self.register_handler(
                CoroutineCallback(f"proxy {path}", StanzaMatch("iq", path), handler)
            )
        self.register_handler(
            CoroutineCallback("proxy message", StanzaMatch("message"), self._on_message)
        )
        self.register_handler(
            CoroutineCallback(
                "admin commands",
                StanzaMatch("iq", f"{{{COMMANDS_NS}}}command"),
                self._on_command,
            )
        )
        self.add_event_handler("session_start", self._on_connected)

    async def prepare(self) -> None:
        """Load the cache index and gauges from the database, before connecting."""
        await self.admin_watch.skip_past()  # what is logged until now is in the load
        await self.cache.load()
        await self.held.load()

    async def close(self, wait: float = 2.0) -> None:
        for loop_task in (self._upkeep_task, self._gauges_task):
            if loop_task is not None:
                loop_task.cancel()
        if self._flush_task is not None:
            # Awaited: it may be in a session, which must end before the engine goes.
            self._flush_task.cancel()
            await asyncio.gather(self._flush_task, return_exceptions=True)
        await self.deciding.close()
        if self._admin_task is not None:
            # Awaited: it reads the database every second, and must be out of its
            # session before the engine is disposed.
            self._admin_task.cancel()
            await asyncio.gather(self._admin_task, return_exceptions=True)
        await self._background.close()
        await self.held.close()
        await self.admin_watch.close()
        await self.synchroniser.close()
        await super().close(wait)

    def privileges_granted(self, granted: HostPrivileges) -> None:
        self.presences.granted(granted)

    def _on_connected(self, _event: Any) -> None:
        if self._upkeep_task is None or self._upkeep_task.done():
            self._upkeep_task = asyncio.create_task(self._upkeep())
        if self._gauges_task is None or self._gauges_task.done():
            self._gauges_task = asyncio.create_task(self._gauges())
        if self.cache.unflushed.tracking and (self._flush_task is None or self._flush_task.done()):
            self._flush_task = asyncio.create_task(self.cache.unflushed.run())
        if self._admin_task is None or self._admin_task.done():
            self._admin_task = asyncio.create_task(self.admin_watch.run())
        # Notifications sent while we were away are lost: re-fetch every synced node.
        self.synchroniser.resync_all()
        self.held.reconnected()

    def database_lost(self) -> None:
        """A statement found its database connection dead: the server crashed or
        restarted, and may have lost the last group writes (committed without waiting
        for its disk; pubsub/unflushed.py). The nodes written since the last commit
        that waited are not answered from the cache until re-fetched, which starts
        once the database answers again."""
        lost = self.cache.unflushed.lost()
        for node in self.cache.nodes():
            if node.id in lost:
                self.cache.unconfirm(node)
        self._redo |= lost
        if self._redo and (self._resync_task is None or self._resync_task.done()):
            log.warning(
                "pubsub: the database connection was lost; re-fetching the %d nodes"
                " written since its disk last confirmed them",
                len(self._redo),
            )
            self._resync_task = self._background.start(self._resync_once_database_answers())

    async def _resync_once_database_answers(self) -> None:
        while True:
            try:
                await ping(self.cache.sessions)
                break
            except Exception:  # down a while yet
                await asyncio.sleep(DATABASE_RETRY)
        redo, self._redo = self._redo, set()
        self.synchroniser.refetch(redo)

    async def _gauges(self) -> None:
        while True:
            await asyncio.sleep(GAUGES_EVERY)
            try:
                await self.cache.gauges.refresh_if_stale()
            except Exception as exc:  # the database may be down for a while
                log.warning("pubsub: cannot refresh the cache gauges: %s", str(exc)[:200])

    async def _upkeep(self) -> None:
        from datetime import timedelta

        idle = timedelta(seconds=self.settings.node_idle_timeout)
        while True:
            await asyncio.sleep(UPKEEP_EVERY)
            # Paused while disconnected: every upstream step would fail, and the
            # reconnect re-fetches the cached nodes anyway.
            await self.connected_event.wait()
            try:
                await self.synchroniser.upkeep(idle)
                await self.held.upkeep(asyncio.get_running_loop().time())
                self.cache.forget_gone(self._verified)
            except Exception:
                log.exception("pubsub: upkeep failed")

    # -- helpers -------------------------------------------------------------------

    def _reply(self, iq: StanzaBase, children: list[ET.Element], itype: str = "result") -> None:
        out = ET.Element(
            f"{{{COMPONENT_NS}}}iq",
            {"type": itype, "id": iq["id"], "from": str(iq["to"]), "to": str(iq["from"])},
        )
        out.extend(children)
        self.send_element(out)

    # -- pubsub ----------------------------------------------------------------------

    async def _serve(self, iq: StanzaBase, kind: str, work: Callable[[], Awaitable[str]]) -> None:
        """Run a request's handling; every failure becomes an error reply, and counted."""
        started = time.perf_counter()
        result = "error"
        try:
            result = await work()
        except Refused as refused:
            self._reply(iq, [refused.error], "error")
        except UpstreamError as exc:
            self._reply(iq, [exc.error], "error")
        except Exception:
            log.exception("pubsub: failed on a %s request from %s", kind, iq["from"])
            self._reply(iq, [make_error("internal-server-error", "The proxy failed.")], "error")
        finally:
            metrics.PUBSUB_REQUESTS.labels(kind=kind, result=result).inc()
            log.debug(
                "pubsub: %s %s in %.1f ms", kind, result, (time.perf_counter() - started) * 1000
            )

    async def _on_pubsub(self, iq: StanzaBase) -> None:
        if iq["type"] not in ("get", "set"):
            return
        found = iq.xml.find(f"{{{PUBSUB_NS}}}pubsub")
        if found is None:
            found = iq.xml.find(f"{{{PUBSUB_OWNER_NS}}}pubsub")
        if found is None:
            return
        matched = found
        action = matched[0].tag.partition("}")[2] if len(matched) else ""
        kind = action if action in KINDS else "other"
        await self._serve(iq, kind, lambda: self._pubsub(iq, matched.tag))

    async def _pubsub(self, iq: StanzaBase, tag: str) -> str:
        payload = only_child(iq, tag)
        try:
            request = parse_request(iq["type"], payload)
        except RequestError as exc:
            specific = exc.pubsub_condition and f"{{{PUBSUB_ERRORS_NS}}}{exc.pubsub_condition}"
            raise Refused(make_error(exc.condition, exc.text, "modify", specific)) from None
        service = await self.targeting.target(iq, reading=request.is_items_read)
        if request.is_items_read:
            return await self.reading.answer(iq, service, request)
        if request.namespace == PUBSUB_NS and request.action in HELD_ACTIONS:
            held = await self._held(iq, service, request, payload)
            if held is not None:
                self._reply(iq, held.children)
                if held.then is not None:
                    held.then()  # after the reply, as upstream does
                return "hit"
        # Writes and owner requests only ever go upstream as the user.
        reply = await self.targeting.as_user(iq, request.namespace, service, payload)
        if request.node is not None and self.cache.node(service, request.node) is not None:
            # Applied before the answer, so the client's next read already sees it.
            await self.synchroniser.written(service, written_events(request, payload, reply))
        self._reply(iq, list(reply))
        return "bypass"

    async def _held(
        self, iq: StanzaBase, service: str, request: PubsubRequest, payload: ET.Element
    ) -> HeldAnswer | None:
        """A subscription request Herald answers itself, or None (go as the user)."""
        try:
            return await self.held.handle(str(iq["from"]), str(iq["to"]), service, request, payload)
        except HeldRefusal as refusal:
            raise Refused(refusal.error) from None

    # -- search (XEP-0442) -----------------------------------------------------------

    async def _on_search(self, iq: StanzaBase) -> None:
        if iq["type"] in ("get", "set"):
            await self._serve(iq, "search", lambda: self.searching.answer(iq))

    async def _on_disco(self, iq: StanzaBase) -> None:
        await self.disco.on_disco(iq)

    async def _on_command(self, iq: StanzaBase) -> None:
        await on_command(self, iq)

    async def _on_message(self, msg: StanzaBase) -> None:
        await on_message(self, msg)
