"""A component that completes the XEP-0114 handshake and then never answers anything.

It stands in for an upstream service that has hung, to test bounded waits.
"""

from __future__ import annotations

import asyncio
import hashlib
import re


class SilentComponent:
    """Connects as `jid` and reads (and drops) every stanza until closed."""

    def __init__(self, jid: str, secret: str, port: int) -> None:
        self.jid = jid
        self.secret = secret
        self.port = port
        self.received = 0
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
