"""A component that completes the XEP-0114 handshake and then never answers anything.

It stands in for an upstream service that has hung, to test bounded waits; given an
identity, it answers disco#info with it (and nothing else), standing in for a local
component that is not a pubsub service. It keeps the IQs it received.
"""

from __future__ import annotations

import asyncio
import hashlib
import re


class SilentComponent:
    """Connects as `jid` and reads (and drops) every stanza until closed."""

    def __init__(
        self, jid: str, secret: str, port: int, identity: tuple[str, str] | None = None
    ) -> None:
        self.jid = jid
        self.secret = secret
        self.port = port
        self.identity = identity  # (category, type) to answer disco#info with
        self.received = 0
        self.iqs: list[str] = []  # every complete <iq/> received, as text
        self._buffer = ""
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        """Connect and finish the handshake."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writer = writer
        writer.write(
            (
                "<stream:stream xmlns='jabber:component:accept' "
                f"xmlns:stream='http://etherx.jabber.org/streams' to='{self.jid}'>"
            ).encode()
        )
        header = b""
        while b"id=" not in header or not header.rstrip().endswith(b">"):
            header += await asyncio.wait_for(reader.read(4096), 5)
        match = re.search(rb"id=['\"]([^'\"]+)['\"]", header)
        assert match is not None, header
        digest = hashlib.sha1(match.group(1) + self.secret.encode()).hexdigest()
        writer.write(f"<handshake>{digest}</handshake>".encode())
        reply = await asyncio.wait_for(reader.read(4096), 5)
        if b"<handshake" not in reply:
            raise RuntimeError(f"handshake refused: {reply!r}")
        self._task = asyncio.create_task(self._drain(reader))

    async def _drain(self, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(65536):
            self.received += chunk.count(b"<iq")
            self._buffer += chunk.decode(errors="replace")
            end = 0
            for found in re.finditer(r"<iq\b[^>]*/>|<iq\b.*?</iq>", self._buffer, re.S):
                self.iqs.append(found.group())
                self._answer(found.group())
                end = found.end()
            # Keep only an <iq/> still arriving: other stanzas (messages) are dropped.
            pending = self._buffer.find("<iq", end)
            self._buffer = self._buffer[pending:] if pending >= 0 else self._buffer[-2:]

    def _answer(self, iq: str) -> None:
        if self.identity is None or "disco#info" not in iq or self._writer is None:
            return
        if re.search(r"<query[^>]*\bnode=", iq):
            return  # a node's metadata: as hung as the rest of the service
        attrs = dict(re.findall(r"(\w+)=['\"]([^'\"]*)['\"]", iq.split(">", 1)[0]))
        category, kind = self.identity
        self._writer.write(
            (
                f"<iq type='result' id='{attrs.get('id', '')}' from='{self.jid}' "
                f"to='{attrs.get('from', '')}'><query xmlns='http://jabber.org/protocol/"
                f"disco#info'><identity category='{category}' type='{kind}'/></query></iq>"
            ).encode()
        )

    def send(self, text: str) -> None:
        """Write raw stanzas: as a trusted component it may send from any JID of its
        server (a remote domain minting JIDs, in the rate-limit tests)."""
        assert self._writer is not None
        self._writer.write(text.encode())

    async def stop(self) -> None:
        """Close the connection."""
        if self._task is not None:
            self._task.cancel()
        if self._writer is not None:
            self._writer.close()
