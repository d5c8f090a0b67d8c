"""A component on slixmpp's test transport, for golden-XML stream tests.

Stanzas are fed in as XML text and what the component sends is compared, after C14N
canonicalisation, with the exact XML expected. (SlixTest's own `send()` compares
through stanza objects, which silently drops elements no registered plugin knows,
such as <addresses/> and <privilege/>.) An attribute written as "*" in the expected
XML matches any value, for ids the component makes up; expect() returns what was sent.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree as ET
from xml.etree.ElementTree import canonicalize

from slixmpp.test import SlixTest
from slixmpp.test import TestTransport as _Transport
from slixmpp.test.mocksocket import TestSocket as _Socket
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component.storage import migrate
from component.storage.engine import create_engine, session_factory
from component.xmpp.connection import ServiceComponent

STREAM_NS = "jabber:component:accept"


class StreamTest(SlixTest):
    """Runs one component against the test transport, with a fresh SQLite database."""

    def boot(
        self, make: Callable[[async_sessionmaker[AsyncSession]], ServiceComponent]
    ) -> asyncio.AbstractEventLoop:
        self.tmp = tempfile.TemporaryDirectory()
        # SlixTest drives asyncio.get_event_loop(); pytest-asyncio may have left none set.
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.engine = create_engine(f"sqlite+aiosqlite:///{Path(self.tmp.name) / 'h.db'}")
        loop.run_until_complete(migrate.upgrade(self.engine))
        self.mode = "component"
        self.xmpp = make(session_factory(self.engine))
        self.xmpp._always_send_everything = True
        self.xmpp.connection_made(_Transport(self.xmpp))
        self.xmpp.session_bind_event.set()
        self.xmpp.default_lang = None
        self.xmpp.peer_default_lang = None
        self.xmpp.data_received(self.xmpp.stream_header)
        self.wait_for_send_queue()
        assert isinstance(self.xmpp.socket, _Socket)
        self.xmpp.socket.next_sent()  # stream header
        self.xmpp.socket.next_sent()  # handshake
        self.xmpp.use_message_ids = False
        self.xmpp.connected_event.set()  # the handshake went through: the session is up
        self.pending: list[str] = []
        return loop

    def tearDown(self) -> None:
        super().tearDown()
        loop = asyncio.get_event_loop()
        loop.run_until_complete(self.engine.dispose())
        loop.close()
        asyncio.set_event_loop(None)
        self.tmp.cleanup()

    def deliver(self, stanza: str) -> None:
        self.recv(stanza)
        self.wait_(0.05)

    def _next_stanza(self) -> str | None:
        # One write may carry several stanzas (a fan-out is sent in one batch).
        if not self.pending:
            self.wait_for_send_queue()
            assert isinstance(self.xmpp.socket, _Socket)
            sent = self.xmpp.socket.next_sent(0.2)
            if sent is None:
                return None
            text = sent.decode() if isinstance(sent, bytes) else sent
            wrapper = ET.fromstring(f'<w xmlns="{STREAM_NS}">{text}</w>')
            self.pending.extend(ET.tostring(child, encoding="unicode") for child in wrapper)
        return self.pending.pop(0)

    def expect(self, xml: str | None) -> ET.Element | None:
        """The next stanza sent is exactly xml (None: nothing more was sent)."""
        sent = self._next_stanza()
        if xml is None:
            assert sent is None, f"unexpected stanza sent: {sent!r}"
            return None
        assert sent is not None, "nothing was sent"
        # Expected stanzas are written without the stream's default namespace.
        root = xml.replace("\n", "").lstrip()
        tag = root[1 : root.index(" ")]
        root = root.replace(f"<{tag} ", f'<{tag} xmlns="{STREAM_NS}" ', 1)
        got, wanted = ET.fromstring(sent), ET.fromstring(root)
        _fill_wildcards(wanted, got)
        assert canonicalize(sent, strip_text=True, rewrite_prefixes=True) == canonicalize(
            ET.tostring(wanted, encoding="unicode"), strip_text=True, rewrite_prefixes=True
        )
        return got


def _fill_wildcards(wanted: ET.Element, got: ET.Element) -> None:
    for name, value in wanted.attrib.items():
        if value == "*" and name in got.attrib:
            wanted.set(name, got.attrib[name])
    for want_child, got_child in zip(wanted, got, strict=False):
        _fill_wildcards(want_child, got_child)
