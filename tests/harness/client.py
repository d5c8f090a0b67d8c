"""An ordinary slixmpp client for the integration tests, set up for a plaintext loopback Prosody."""

from __future__ import annotations

import asyncio
from typing import Any

from slixmpp import ClientXMPP


class TestClient(ClientXMPP):  # type: ignore[misc]
    """A user's client. Filters mod_privilege's empty <privilege/> greeting."""

    __test__ = False  # not a pytest class

    def __init__(self, jid: str, password: str, plugins: tuple[str, ...] = ("xep_0030",)) -> None:
        super().__init__(
            jid, password, plugin_config={"feature_mechanisms": {"unencrypted_scram": True}}
        )
        self.enable_direct_tls = False
        self.enable_starttls = False
        self.enable_plaintext = True
        for plugin in plugins:
            self.register_plugin(plugin)
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.presences: asyncio.Queue[Any] = asyncio.Queue()
        self.online = asyncio.Event()
        self._available = asyncio.Event()
        self.add_event_handler("session_start", self._started)
        self.add_event_handler("message", self._message)
        self.add_event_handler("message_error", self._message)
        self.add_event_handler("presence", self._presence)

    async def _started(self, _event: Any) -> None:
        # Online once the server has our initial presence: it reflects it back to us
        # (RFC 6121 4.2.2). Before that, a message to our bare JID from another
        # connection may be stored offline rather than delivered.
        self._available.clear()
        self.send_presence()
        await asyncio.wait_for(self._available.wait(), 10)
        self.online.set()

    def _message(self, msg: Any) -> None:
        if msg.xml.find("{urn:xmpp:privilege:2}privilege") is not None:
            return
        self.messages.put_nowait(msg)

    def _presence(self, pres: Any) -> None:
        if pres["from"] == self.boundjid:
            self._available.set()
        elif pres["from"].bare != self.boundjid.bare:
            self.presences.put_nowait(pres)

    async def start(self, port: int, timeout: float = 10.0) -> None:
        """Connect to 127.0.0.1:port and wait for the session."""
        self.connect(host="127.0.0.1", port=port)
        await asyncio.wait_for(self.online.wait(), timeout)

    async def stop(self) -> None:
        """Disconnect and wait for it."""
        await self.disconnect(wait=1)
