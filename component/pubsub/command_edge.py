"""The edge of the XEP-0050 admin commands: executed at the component's own JID only."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from slixmpp.xmlstream import StanzaBase

from component.pubsub.admin_commands import COMMANDS_NS, CommandError
from component.xmpp.errors import make_error

if TYPE_CHECKING:
    from component.pubsub.service import PubsubComponent

log = logging.getLogger(__name__)


async def on_command(pubsub: PubsubComponent, iq: StanzaBase) -> None:
    """Execute one command request and answer it (every failure as a stanza error)."""
    if iq["type"] not in ("get", "set"):
        return
    command = iq.xml.find(f"{{{COMMANDS_NS}}}command")
    if command is None:
        return
    try:
        if iq["to"].user:
            raise CommandError(
                "feature-not-implemented",
                f"Commands are offered at {pubsub.boundjid.bare} only, not proxied.",
                "cancel",
            )
        if iq["type"] != "set":
            raise CommandError("bad-request", "Commands are executed with type='set'.")
        answer = await pubsub.admin_commands.execute(str(iq["from"]), iq["from"].bare, command)
    except CommandError as exc:
        error = make_error(exc.condition, exc.text, exc.etype, exc.specific)
        pubsub._reply(iq, [error], "error")
    except Exception:
        log.exception("pubsub: command %r from %s failed", command.get("node"), iq["from"])
        pubsub._reply(iq, [make_error("internal-server-error", "The command failed.")], "error")
    else:
        pubsub._reply(iq, [answer])
