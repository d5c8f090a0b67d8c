"""The subscriptions Herald holds itself, at the XMPP edge.

A subscribe at a proxy address to a node Herald may share is answered by Herald: it
stores the subscription, makes sure it is itself subscribed upstream (once per node,
the subscription the synchroniser also uses), and delivers each upstream
notification to every local subscriber from the address it subscribed at. The
decisions are in component/pubsub/subscriptions.py; this module carries them out,
with held_upstream.py (Herald's own upstream subscription), fan_out.py (the copies
of a notification) and held_last.py (the last item sent to a new subscriber).

Requests about subscriptions Herald does not hold (a node it may not share, a JID
subscribed upstream directly) are left to the caller, which forwards them as the user.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from xml.etree import ElementTree as ET

from slixmpp.jid import JID, InvalidJID

from component import metrics
from component.background import Background
from component.pubsub import last_published
from component.pubsub import subscriptions as core
from component.pubsub.access import NodeMeta, access_of
from component.pubsub.cache import Cache
from component.pubsub.decision import Action, Situation, decide
from component.pubsub.fan_out import fan_out
from component.pubsub.held_last import LastItems
from component.pubsub.held_upstream import HeraldUpstream
from component.pubsub.requests import PubsubRequest
from component.pubsub.subscriptions import Refusal
from component.pubsub.upstream import Upstream, UpstreamError
from component.storage import subscriptions_repo as repo
from component.storage.subscriptions_repo import LocalSubscription
from component.xmpp.errors import make_error
from component.xmpp.namespaces import PUBSUB_ERRORS_NS, PUBSUB_EVENT_NS, PUBSUB_NS
from component.xmpp.xmltext import serialize

log = logging.getLogger(__name__)

SUBSCRIBE_FEATURES = (
    "http://jabber.org/protocol/pubsub#subscribe",
    "http://jabber.org/protocol/pubsub#subscription-options",
    "http://jabber.org/protocol/pubsub#presence-notifications",  # presence_edge.py
)
HELD_ACTIONS = frozenset({"subscribe", "unsubscribe", "options", "subscriptions"})

RECHECK_EVERY = 60.0  # seconds between re-checks that a held node is still shareable

NodeKey = tuple[str, str]
# Whether the node may be shared now: True, False, or None when it does not exist.
MayShare = Callable[[str, str], Awaitable[bool | None]]
Send = Callable[[str], None]


@dataclass(frozen=True)
class HeldAnswer:
    """The reply's children, and what to do once the reply is sent (the last item)."""

    children: list[ET.Element]
    then: Callable[[], None] | None = None


class HeldRefusal(Exception):
    """Answer the request with this error element."""

    def __init__(self, error: ET.Element) -> None:
        super().__init__("refused")
        self.error = error


def refusal_error(refusal: Refusal) -> ET.Element:
    """The <error/> a core Refusal stands for."""
    specific = None
    if refusal.pubsub_condition is not None:
        specific = f"{{{PUBSUB_ERRORS_NS}}}{refusal.pubsub_condition}"
    error = make_error(refusal.condition, refusal.text, refusal.etype, specific)
    if refusal.feature is not None and specific is not None:
        error[-1].set("feature", refusal.feature)
    return error


class HeldSubscriptions:
    """Subscriptions held at the proxy: requests, upstream subscription, fan-out."""

    def __init__(
        self, cache: Cache, upstream: Upstream, proxy_jid: str, send: Send, may_share: MayShare
    ) -> None:
        self.sessions = cache.sessions
        self.cache = cache
        self.upstream = upstream
        self.proxy_jid = proxy_jid
        self.send = send
        self.may_share = may_share
        self._by_node: dict[NodeKey, list[LocalSubscription]] = {}
        self.herald_upstream = HeraldUpstream(cache, upstream, proxy_jid, self.holds, self.recheck)
        self.last_items = LastItems(upstream, proxy_jid, send)
        self._checked: dict[NodeKey, float] = {}
        self._background = Background("pubsub: held subscriptions")
        # Presence-based delivery (component/pubsub/presence_edge.py) replaces these.
        self.withheld: Callable[[LocalSubscription], bool] | None = None
        self.knows_presence: Callable[[str], bool] = lambda _jid: False

    # -- state ------------------------------------------------------------------------

    async def load(self) -> None:
        """Read every stored subscription (at start-up)."""
        async with self.sessions() as session:
            subs = await repo.all_subscriptions(session)
        self._by_node.clear()
        for sub in subs:
            self._by_node.setdefault((sub.service, sub.node), []).append(sub)
        self._gauge()

    def holds(self, service: str, node: str) -> bool:
        """Whether local subscribers need Herald's upstream subscription to the node."""
        return bool(self._by_node.get((service, node)))

    def subscribed_upstream(self, service: str, node: str) -> bool:
        """Whether Herald's upstream subscription to the node is made since it connected."""
        return self.herald_upstream.subscribed(service, node)

    def reconnected(self) -> None:
        """Subscribe upstream again for every held node (see HeraldUpstream)."""
        self.herald_upstream.reconnected(list(self._by_node))

    def _gauge(self) -> None:
        metrics.PUBSUB_LOCAL_SUBSCRIPTIONS.set(sum(len(s) for s in self._by_node.values()))

    async def close(self) -> None:
        await self.herald_upstream.close()
        await self.last_items.close()
        await self._background.close()

    # -- requests ---------------------------------------------------------------------

    async def handle(
        self,
        requester: str,
        address: str,
        service: str,
        request: PubsubRequest,
        payload: ET.Element,
    ) -> HeldAnswer | None:
        """Answer a subscription request Herald holds, or None when it is not Herald's
        to answer (forward it as the user)."""
        answer = await self._answer(requester, address, service, request, payload)
        return HeldAnswer(answer) if isinstance(answer, list) else answer

    async def _answer(
        self,
        requester: str,
        address: str,
        service: str,
        request: PubsubRequest,
        payload: ET.Element,
    ) -> list[ET.Element] | HeldAnswer | None:
        action = payload[0]
        jid = _normalised(action.get("jid"))
        node = request.node
        requester_bare = core.bare(requester)
        try:
            if request.action == "subscriptions":
                return self._subscriptions(address, requester_bare, node)
            if node is None:
                return None  # a collection or service-wide request: upstream's
            held = self._by_node.get((service, node), [])
            here = [s for s in held if s.address == address]
            if request.action == "subscribe":
                options_el = payload.find(f"{{{PUBSUB_NS}}}options")
                form = None if options_el is None else next(iter(options_el), None)
                return await self._subscribe(
                    requester_bare, address, service, node, jid, here, core.read_options(form)
                )
            if not any(s.subscriber == jid for s in here):
                return None  # not held here: perhaps subscribed upstream directly
            if request.action == "unsubscribe":
                chosen = core.unsubscribe(requester_bare, jid, action.get("subid"), here)
                await self._drop([chosen])
                return []
            chosen = core.options_of(requester_bare, jid, action.get("subid"), here)
            if request.iq_type == "get":
                return [self._options_reply(chosen, core.options_form(chosen.options))]
            form = next(iter(action), None)
            options = core.read_options(form)
            if options is None:
                raise Refusal(
                    "bad-request",
                    "Setting options needs a submitted form.",
                    "modify",
                    "invalid-options",
                )
            core.check_supported(options, self.knows_presence(chosen.subscriber))
            async with self.sessions() as session:
                await repo.set_options(session, chosen.subid, options)
            self._replace(chosen, LocalSubscription(**{**chosen.__dict__, "options": options}))
            return []
        except Refusal as refusal:
            raise HeldRefusal(refusal_error(refusal)) from None

    async def _subscribe(
        self,
        requester_bare: str,
        address: str,
        service: str,
        node: str,
        jid: str | None,
        here: list[LocalSubscription],
        options: core.Options | None,
    ) -> HeldAnswer | None:
        shareable = await self.may_share(service, node)
        if shareable is None:
            raise HeldRefusal(make_error("item-not-found", f"There is no node {node!r}."))
        if not shareable:
            return None
        known = jid is not None and self.knows_presence(jid)
        outcome = core.subscribe(requester_bare, jid, here, options, uuid.uuid4().hex, known)
        assert jid is not None  # core.subscribe refuses a request without one
        if outcome.new:
            await asyncio.shield(self.herald_upstream.ensure(service, node))
            sub = LocalSubscription(
                address,
                service,
                node,
                jid,
                core.bare(jid),
                outcome.subid,
                outcome.options,
                datetime.now(UTC),
            )
            async with self.sessions() as session:
                await repo.add(session, sub)
            self._by_node.setdefault((service, node), []).append(sub)
            self._gauge()
        held = self._by_node.get((service, node), [])
        sub = next(s for s in held if s.subid == outcome.subid)
        delivery = last_published.delivery_for(sub, held)
        pubsub = ET.Element(f"{{{PUBSUB_NS}}}pubsub")
        ET.SubElement(
            pubsub,
            f"{{{PUBSUB_NS}}}subscription",
            {"node": node, "jid": jid, "subid": outcome.subid, "subscription": "subscribed"},
        )
        # A repeated subscribe too: upstream sends the last item on each (Prosody's
        # and ejabberd's direct subscribers get it again).
        return HeldAnswer(
            [pubsub], lambda: self.last_items.send_after_subscribe(service, node, delivery)
        )

    def _subscriptions(
        self, address: str, requester_bare: str, node: str | None
    ) -> list[ET.Element] | None:
        mine = [
            s
            for subs in self._by_node.values()
            for s in subs
            if s.address == address
            and s.subscriber_bare == requester_bare
            and (node is None or s.node == node)
        ]
        if not mine:
            return None
        pubsub = ET.Element(f"{{{PUBSUB_NS}}}pubsub")
        listing = ET.SubElement(
            pubsub, f"{{{PUBSUB_NS}}}subscriptions", {} if node is None else {"node": node}
        )
        for s in mine:
            ET.SubElement(
                listing,
                f"{{{PUBSUB_NS}}}subscription",
                {
                    "node": s.node,
                    "jid": s.subscriber,
                    "subid": s.subid,
                    "subscription": "subscribed",
                },
            )
        return [pubsub]

    @staticmethod
    def _options_reply(sub: LocalSubscription, form: ET.Element) -> ET.Element:
        pubsub = ET.Element(f"{{{PUBSUB_NS}}}pubsub")
        options = ET.SubElement(
            pubsub,
            f"{{{PUBSUB_NS}}}options",
            {"node": sub.node, "jid": sub.subscriber, "subid": sub.subid},
        )
        options.append(form)
        return pubsub

    def _replace(self, old: LocalSubscription, new: LocalSubscription) -> None:
        subs = self._by_node.get((old.service, old.node), [])
        self._by_node[(old.service, old.node)] = [new if s.subid == old.subid else s for s in subs]

    async def _drop(self, gone: list[LocalSubscription]) -> None:
        """Forget these subscriptions; release upstream where none is left."""
        async with self.sessions() as session:
            await repo.remove(session, [s.subid for s in gone])
        ids = {s.subid for s in gone}
        for key in {(s.service, s.node) for s in gone}:
            left = [s for s in self._by_node.get(key, []) if s.subid not in ids]
            if left:
                self._by_node[key] = left
            else:
                self._by_node.pop(key, None)
                await self.herald_upstream.release(*key)
        self._gauge()

    # -- notifications ----------------------------------------------------------------

    def notified(self, service: str, event: ET.Element) -> None:
        """Deliver an upstream <event/> to the node's local subscribers."""
        for child in event:
            node = child.get("node")
            if node is None:
                continue
            subs = self._by_node.get((service, node))
            if not subs:
                continue
            kind = child.tag.partition("}")[2]
            if kind == "subscription" and child.get("jid", "").partition("/")[0] == self.proxy_jid:
                # Herald's own subscription changed: whether the node is still ours to
                # share is checked again; its subscribers are not told of Herald's.
                if child.get("subscription") != "subscribed":
                    self._background.start(self.recheck(service, node))
                continue
            fan_out(self.send, subs, serialize(child, PUBSUB_EVENT_NS), self.withheld)
            if kind == "delete":
                self._background.start(self._drop(list(subs)))
            elif kind == "configuration":
                self._background.start(self.recheck(service, node))

    # -- shareability -----------------------------------------------------------------

    async def upkeep(self, now: float) -> None:
        """Re-check, now and then, that each held node may still be shared (and end
        the last-item probes left subscribed upstream)."""
        await self.last_items.upkeep()
        for service, node in list(self._by_node):
            if now - self._checked.get((service, node), 0.0) >= RECHECK_EVERY:
                await self.recheck(service, node)
        self._checked = {k: v for k, v in self._checked.items() if k in self._by_node}

    async def recheck(self, service: str, node: str) -> None:
        """Check the node now; if Herald may no longer share it, end its subscriptions
        (each subscriber is told, subscription='none', as a pubsub service does)."""
        key = (service, node)
        self._checked[key] = asyncio.get_running_loop().time()
        try:
            shareable = await self.may_share(service, node)
        except UpstreamError as exc:
            log.info("pubsub: cannot re-check %s/%s: %s", service, node, exc.condition)
            return
        subs = list(self._by_node.get(key, []))
        if shareable or not subs:
            return
        for sub in subs:
            self.send(core.ended_text(sub))
        log.info(
            "pubsub: %s/%s no longer shareable: %d local subscriptions ended",
            service,
            node,
            len(subs),
        )
        await self._drop(subs)


def by_read_decision(node_meta: Callable[[str, str], Awaitable[NodeMeta]]) -> MayShare:
    """Whether a node may be shared, as the read decision says for a fresh access
    check (a PEP service never: its metadata is hidden from Herald)."""

    async def may_share(service: str, node: str) -> bool | None:
        pep = "@" in service
        access = None if pep else access_of(await node_meta(service, node))
        action = decide(Situation("read", access=access, pep=pep, privileged=True))
        if action is Action.REFUSE_MISSING:
            return None
        return action in (Action.AS_HERALD, Action.FROM_CACHE)

    return may_share


def _normalised(jid: str | None) -> str | None:
    """The jid attribute as a normalised JID string; jid-malformed when it is none."""
    if jid is None:
        return None
    try:
        return str(JID(jid))
    except InvalidJID:
        raise HeldRefusal(make_error("jid-malformed", f"{jid!r} is not a JID.", "modify")) from None
