"""A stdlib-only XMPP load generator: one plaintext c2s stream, SASL PLAIN, many IQs in flight.

slixmpp spends more CPU per stanza than the servers it would be measuring, and on a
2-core machine the load generator shares the CPUs with everything it measures. This
client does the minimum: requests are pre-formatted strings, replies are parsed by
the C XML parser (xml.etree's XMLPullParser) and matched to requests by id.

Also used by bench/memory_component.py for the XEP-0114 side (StreamParser).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

STREAM_NS = "http://etherx.jabber.org/streams"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION_NS = "urn:ietf:params:xml:ns:xmpp-session"
CLIENT_NS = "jabber:client"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"


class StreamParser:
    """Feeds stream bytes to the C parser and returns each complete top-level stanza."""

    def __init__(self) -> None:
        self._parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self._root: ET.Element | None = None
        self.header: dict[str, str] = {}
        self.closed = False

    def feed(self, data: bytes) -> list[ET.Element]:
        self._parser.feed(data)
        done: list[ET.Element] = []
        depth = self._depth
        events: Iterator[tuple[str, ET.Element]] = self._parser.read_events()  # type: ignore[assignment]
        for event, elem in events:
            if event == "start":
                depth += 1
                if depth == 1:
                    self._root = elem
                    self.header = dict(elem.attrib)
            else:
                depth -= 1
                if depth == 1:
                    done.append(elem)
                    assert self._root is not None
                    self._root.remove(elem)  # keep the stream's tree from growing
                elif depth == 0:
                    self.closed = True
        self._depth = depth
        return done


class XmppError(RuntimeError):
    """The server refused something during setup."""


def error_condition(stanza: ET.Element) -> str:
    """The defined condition of an error stanza, for messages."""
    error = next((c for c in stanza if c.tag.endswith("}error")), None)
    if error is None:
        return "no <error/>"
    names = [c.tag.partition("}")[2] for c in error if c.tag.startswith(f"{{{STANZAS_NS}}}")]
    text = next((c.text for c in error if c.tag.endswith("}text")), None)
    return ", ".join(n for n in names if n != "text") + (f" ({text})" if text else "")


@dataclass
class LoadResult:
    """One measured batch: latencies in seconds, wall time, errors, reply sizes."""

    latencies: list[float]
    wall: float
    errors: int
    reply_bytes: int
    first_error: str | None = None
    cpu: dict[str, float] = field(default_factory=dict)  # seconds, per process name

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall if self.wall > 0 else 0.0

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile, in seconds."""
        ordered = sorted(self.latencies)
        if not ordered:
            return math.nan
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        return ordered[rank - 1]


class RawClient(asyncio.Protocol):
    """A logged-in c2s stream that sends raw XML and matches IQ replies by id."""

    def __init__(self, jid: str, password: str) -> None:
        user, _, rest = jid.partition("@")
        self.user = user
        self.domain, _, self.resource = rest.partition("/")
        self.password = password
        self.full_jid = ""
        self.transport: asyncio.Transport | None = None
        self.parser = StreamParser()
        self._inbox: asyncio.Queue[ET.Element] = asyncio.Queue()
        self._waiters: dict[str, Callable[[ET.Element], None]] = {}
        self._lost = asyncio.get_running_loop().create_future()
        self._seq = 0
        self.bytes_in = 0

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        for stanza in self.parser.feed(data):
            waiter = (
                self._waiters.pop(stanza.get("id", ""), None)
                if stanza.tag.endswith("}iq")
                else None
            )
            if waiter is not None:
                waiter(stanza)
            elif stanza.tag != f"{{{CLIENT_NS}}}message":  # mod_privilege greets with one
                self._inbox.put_nowait(stanza)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(exc)
        for waiter in list(self._waiters.values()):
            waiter(ET.Element("lost"))
        self._waiters.clear()

    # -- setup -----------------------------------------------------------------------

    def send(self, data: str | bytes) -> None:
        assert self.transport is not None
        self.transport.write(data.encode() if isinstance(data, str) else data)

    def _open_stream(self) -> None:
        self.parser = StreamParser()
        self.send(
            f"<?xml version='1.0'?><stream:stream to='{self.domain}' xmlns='{CLIENT_NS}' "
            f"xmlns:stream='{STREAM_NS}' version='1.0'>"
        )

    async def _next(self, timeout: float = 5.0) -> ET.Element:
        return await asyncio.wait_for(self._inbox.get(), timeout)

    async def _features(self) -> ET.Element:
        while True:
            stanza = await self._next()
            if stanza.tag == f"{{{STREAM_NS}}}features":
                return stanza
            if stanza.tag == f"{{{STREAM_NS}}}error":
                raise XmppError(f"stream error: {[c.tag for c in stanza]}")

    async def login(self, host: str, port: int, timeout: float = 10.0) -> None:
        """Connect, authenticate with SASL PLAIN over plaintext, and bind the resource."""
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.create_connection(lambda: self, host, port), timeout)
        self._open_stream()
        features = await self._features()
        mechanisms = {m.text or "" for m in features.iter(f"{{{SASL_NS}}}mechanism")}
        if "PLAIN" not in mechanisms:
            raise XmppError(f"the server offers no PLAIN (offers {sorted(mechanisms)})")
        token = base64.b64encode(f"\0{self.user}\0{self.password}".encode()).decode()
        self.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{token}</auth>")
        outcome = await self._next()
        if outcome.tag != f"{{{SASL_NS}}}success":
            raise XmppError(f"SASL PLAIN failed for {self.user}: {[c.tag for c in outcome]}")
        self._open_stream()
        features = await self._features()
        resource = f"<resource>{self.resource}</resource>" if self.resource else ""
        bound = await self.iq(
            f"<iq type='set' id='{{id}}'><bind xmlns='{BIND_NS}'>{resource}</bind></iq>"
        )
        self.full_jid = bound.findtext(f"{{{BIND_NS}}}bind/{{{BIND_NS}}}jid") or ""
        session = features.find(f"{{{SESSION_NS}}}session")
        if session is not None and session.find(f"{{{SESSION_NS}}}optional") is None:
            await self.iq(f"<iq type='set' id='{{id}}'><session xmlns='{SESSION_NS}'/></iq>")

    def next_id(self) -> str:
        self._seq += 1
        return f"r{self._seq}"

    async def iq(self, template: str, timeout: float = 10.0, check: bool = True) -> ET.Element:
        """Send one IQ (template with an '{id}' placeholder) and wait for its reply."""
        iq_id = self.next_id()
        future: asyncio.Future[ET.Element] = asyncio.get_running_loop().create_future()

        def on_reply(stanza: ET.Element) -> None:
            if not future.done():
                future.set_result(stanza)

        self._waiters[iq_id] = on_reply
        self.send(template.replace("{id}", iq_id))
        try:
            reply = await asyncio.wait_for(future, timeout)
        finally:
            self._waiters.pop(iq_id, None)
        if check and reply.get("type") != "result":
            raise XmppError(f"IQ {iq_id} failed: {error_condition(reply)}")
        return reply

    async def close(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        with contextlib.suppress(Exception):
            self.send("</stream:stream>")
            await asyncio.wait_for(asyncio.shield(self._lost), 2)
        self.transport.close()

    # -- load ------------------------------------------------------------------------

    async def load(
        self, template: str, count: int, inflight: int, timeout: float = 60.0
    ) -> LoadResult:
        """Send `count` copies of template (with '{id}'), `inflight` at a time.

        Each reply immediately releases the next request. Returns every request's
        latency; a reply of type error counts as an error (its latency is not kept).
        """
        head, _, tail = template.partition("{id}")
        head_b, tail_b = head.encode(), tail.encode()
        loop = asyncio.get_running_loop()
        finished = loop.create_future()
        latencies: list[float] = []
        state = {"sent": 0, "done": 0, "errors": 0}
        first_error: list[str] = []
        prefix = f"L{self.next_id()}-"
        write = self.send
        clock = time.perf_counter

        def send_one() -> None:
            n = state["sent"]
            state["sent"] = n + 1
            iq_id = f"{prefix}{n}"
            started = clock()

            def on_reply(stanza: ET.Element) -> None:
                elapsed = clock() - started
                if stanza.get("type") == "result":
                    latencies.append(elapsed)
                else:
                    state["errors"] += 1
                    if not first_error:
                        first_error.append(error_condition(stanza))
                state["done"] += 1
                if state["sent"] < count:
                    send_one()
                elif state["done"] == count and not finished.done():
                    finished.set_result(None)

            self._waiters[iq_id] = on_reply
            write(head_b + iq_id.encode() + tail_b)

        bytes_before = self.bytes_in
        began = clock()
        for _ in range(min(inflight, count)):
            send_one()
        try:
            await asyncio.wait_for(finished, timeout)
        finally:
            for key in [k for k in self._waiters if k.startswith(prefix)]:
                del self._waiters[key]
        wall = clock() - began
        return LoadResult(
            latencies,
            wall,
            state["errors"],
            (self.bytes_in - bytes_before) // max(1, count),
            next(iter(first_error), None),
        )
