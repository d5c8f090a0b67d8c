"""XEP-0050 ad-hoc commands on the pubsub JID, for the JIDs in pubsub.admins only:
``stats``, ``resync`` and ``purge``, the same operations as `herald cache`.

Everyone else finds no command in the list and gets forbidden on executing one. A
two-stage command (form, then submission) keeps only a bounded table of open
session ids, each for its requester and command; a client may also submit the form
in its first request. slixmpp's xep_0050 plugin is not used: it would need
slixmpp's own disco, which the proxy replaces, and it keeps every session that a
client abandons.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from xml.etree import ElementTree as ET

from component.cache_admin import operations as ops
from component.cache_admin.durations import parse_duration
from component.cache_admin.render import size, stats_json
from component.pubsub.admin_watch import AdminWatch
from component.xmpp.dataforms import Field, make_form, single, values_of
from component.xmpp.namespaces import DATA_FORMS_NS, DISCO_ITEMS_NS

COMMANDS_NS: Final = "http://jabber.org/protocol/commands"
COMMANDS: Final = {
    "stats": "Cache statistics",
    "resync": "Fetch a cached node again",
    "purge": "Purge cached nodes",
}
MAX_SESSIONS: Final = 64  # open two-stage sessions kept; the oldest go first
SESSION_TTL: Final = 600.0  # seconds a form stays valid
LISTED: Final = 50  # purged nodes named in the result; the count covers the rest


class CommandError(Exception):
    """Answer with this stanza error (condition, text, type, XEP-0050 condition)."""

    def __init__(
        self, condition: str, text: str, etype: str = "modify", specific: str | None = None
    ) -> None:
        super().__init__(text)
        self.condition, self.text, self.etype = condition, text, etype
        self.specific = None if specific is None else f"{{{COMMANDS_NS}}}{specific}"


@dataclass(frozen=True)
class _Session:
    requester: str
    node: str
    opened: float


class AdminCommands:
    """The commands, their sessions, and who may see and run them."""

    def __init__(
        self,
        admins: Iterable[str],
        proxy_jid: str,
        upstream: str,
        db: ops.Sessions,
        watch: AdminWatch,
    ) -> None:
        self.admins = frozenset(a.lower() for a in admins)
        self.proxy_jid = proxy_jid
        self.upstream = upstream
        self.db = db
        self.watch = watch
        self._open: OrderedDict[str, _Session] = OrderedDict()

    def is_admin(self, bare_jid: str) -> bool:
        """Whether this bare JID is in pubsub.admins."""
        return bare_jid.lower() in self.admins

    def listing(self, bare_jid: str) -> ET.Element:
        """disco#items on the commands node: the commands for admins, none for others."""
        query = ET.Element(f"{{{DISCO_ITEMS_NS}}}query", {"node": COMMANDS_NS})
        if self.is_admin(bare_jid):
            for node, name in COMMANDS.items():
                attrs = {"jid": self.proxy_jid, "node": node, "name": name}
                ET.SubElement(query, f"{{{DISCO_ITEMS_NS}}}item", attrs)
        return query

    async def execute(self, requester: str, bare_jid: str, command: ET.Element) -> ET.Element:
        """Run one step of a command; the <command/> to answer with, or CommandError."""
        if not self.is_admin(bare_jid):
            raise CommandError(
                "forbidden", "Only the administrators in pubsub.admins may run commands.", "auth"
            )
        node = command.get("node", "")
        if node not in COMMANDS:
            raise CommandError("item-not-found", f"There is no command {node!r}.", "cancel")
        action = command.get("action", "execute")
        if action not in ("execute", "complete", "cancel"):
            raise CommandError(
                "bad-request", f"Action {action!r} is not offered here.", specific="bad-action"
            )
        sessionid = command.get("sessionid")
        form = command.find(f"{{{DATA_FORMS_NS}}}x[@type='submit']")
        if action == "cancel":
            if sessionid is not None:
                self._take(sessionid, requester, node)
            return _response(node, sessionid or _new_id(), "canceled")
        if sessionid is not None:
            if form is None:
                raise CommandError(
                    "bad-request", "Submit the command's form.", specific="bad-payload"
                )
            if not self._take(sessionid, requester, node):
                raise CommandError(
                    "bad-request",
                    "This session is unknown or has expired; execute the command again.",
                    specific="bad-sessionid",
                )
        if node == "stats":
            return await self._stats(sessionid or _new_id())
        if form is None:
            sessionid = self._open_session(requester, node)
            response = _response(node, sessionid, "executing")
            actions = ET.SubElement(response, f"{{{COMMANDS_NS}}}actions", {"execute": "complete"})
            ET.SubElement(actions, f"{{{COMMANDS_NS}}}complete")
            response.append(self._form(node))
            return response
        values = values_of(form)
        sessionid = sessionid or _new_id()
        if node == "resync":
            return await self._resync(sessionid, values)
        return await self._purge(sessionid, values)

    # -- sessions -------------------------------------------------------------------

    def _open_session(self, requester: str, node: str) -> str:
        now = asyncio.get_running_loop().time()
        for key, session in list(self._open.items()):
            if now - session.opened > SESSION_TTL:
                del self._open[key]
        while len(self._open) >= MAX_SESSIONS:
            self._open.popitem(last=False)
        sessionid = _new_id()
        self._open[sessionid] = _Session(requester, node, now)
        return sessionid

    def _take(self, sessionid: str, requester: str, node: str) -> bool:
        session = self._open.get(sessionid)
        if session is None or (session.requester, session.node) != (requester, node):
            return False
        del self._open[sessionid]
        return asyncio.get_running_loop().time() - session.opened <= SESSION_TTL

    # -- the commands ---------------------------------------------------------------

    def _form(self, node: str) -> ET.Element:
        service = Field("service", label="Service JID", values=(self.upstream,), required=True)
        if node == "resync":
            return make_form(
                "form",
                "Fetch a cached node again",
                [service, Field("node", label="Node", required=True)],
                "Herald serves the node from upstream until the fetch completes.",
            )
        return make_form(
            "form",
            "Purge cached nodes",
            [
                Field("service", label="Service JID (empty: any)"),
                Field("node", label="Node name, or a glob such as blog-*"),
                Field("idle-for", label="Not requested for (90s, 15m, 12h, 7d, 2w)"),
            ],
            "Give at least one condition; every one given must hold.",
        )

    async def _stats(self, sessionid: str) -> ET.Element:
        data = stats_json(await ops.stats(self.db))
        nodes = data["nodes"]
        fields = [
            Field("nodes", label="Nodes", values=(str(nodes["total"]),)),
            *(
                Field(f"nodes-{state}", label=f"Nodes {state}", values=(str(count),))
                for state, count in nodes.items()
                if state != "total"
            ),
            Field("items", label="Items", values=(str(data["items"]),)),
            Field("bytes", label="Bytes", values=(str(data["bytes"]),)),
            Field(
                "services",
                "text-multi",
                "Per service",
                [
                    f"{s['service']}: {s['nodes']['total']} nodes, {s['items']} items, "
                    f"{size(s['bytes'])}"
                    for s in data["services"]
                ],
            ),
        ]
        response = _response(node="stats", sessionid=sessionid, status="completed")
        _note(response, f"{nodes['total']} nodes, {data['items']} items, {size(data['bytes'])}.")
        response.append(make_form("result", "Pubsub cache statistics", fields))
        return response

    async def _resync(self, sessionid: str, values: dict[str, list[str]]) -> ET.Element:
        service = single(values, "service") or self.upstream
        node = single(values, "node")
        if node is None:
            raise CommandError("bad-request", "Say which node.", specific="bad-payload")
        try:
            await ops.request_resync(self.db, service, node, datetime.now(UTC))
        except ops.NoSuchNode as exc:
            raise CommandError("item-not-found", f"{str(exc).capitalize()}.", "cancel") from None
        await self.watch.poll()  # here at once, not at the next poll
        response = _response("resync", sessionid, "completed")
        _note(response, f"Fetching {node!r} of {service} again.")
        return response

    async def _purge(self, sessionid: str, values: dict[str, list[str]]) -> ET.Element:
        idle = single(values, "idle-for")
        try:
            which = ops.PurgeFilter(
                service=single(values, "service"),
                node=single(values, "node"),
                idle_for=None if idle is None else parse_duration(idle),
            )
            found = await ops.purge(self.db, which, datetime.now(UTC))
        except ValueError as exc:
            raise CommandError("bad-request", str(exc), specific="bad-payload") from None
        await self.watch.poll()
        items = sum(s.items for s in found)
        response = _response("purge", sessionid, "completed")
        _note(response, f"Purged {len(found)} nodes ({items} items).")
        names = [f"{s.node.service} {s.node.name} ({s.items} items)" for s in found[:LISTED]]
        if len(found) > LISTED:
            names.append(f"... and {len(found) - LISTED} more")
        fields = [
            Field("nodes", label="Nodes purged", values=(str(len(found)),)),
            Field("items", label="Items purged", values=(str(items),)),
            Field("purged", "text-multi", "Purged", names),
        ]
        response.append(make_form("result", "Purged cached nodes", fields))
        return response


def _new_id() -> str:
    return secrets.token_hex(8)


def _response(node: str, sessionid: str, status: str) -> ET.Element:
    return ET.Element(
        f"{{{COMMANDS_NS}}}command", {"node": node, "sessionid": sessionid, "status": status}
    )


def _note(response: ET.Element, text: str) -> None:
    ET.SubElement(response, f"{{{COMMANDS_NS}}}note", {"type": "info"}).text = text
