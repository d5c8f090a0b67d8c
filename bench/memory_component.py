"""The ceilings for any component: a raw XEP-0114 component with no XML library overhead.

Run as its own process (as Herald is):

    python -m bench.memory_component --port 5347 --jid mem.localhost --secret S \\
        --payload FILE [--upstream pubsub-origin.localhost]

It speaks the XEP-0114 handshake over an asyncio socket and finds stanza boundaries
with expat (byte offsets, no tree), so replies are built by splicing bytes. What it
does with an IQ get carrying <pubsub/> depends on the address it was sent to:

  mem.localhost            answers from memory: the pre-serialized <pubsub/> read from
                           FILE (a 20-item page), changing only id, from and to. The
                           ceiling for a cache hit.
  self@mem.localhost       forwards the request to --upstream as the component itself,
                           and relays the reply's children verbatim. The floor for a
                           proxy that forwards as itself (open nodes).
  user@mem.localhost       forwards it as the requesting user through a XEP-0356
                           privileged IQ (urn:xmpp:privilege:2), and relays the
                           forwarded reply's children verbatim. The floor for Herald's
                           miss path on a node no rule syncs.
  check@mem.localhost      first asks --upstream, as the component, for the node's
                           disco#info; if its metadata form says pubsub#access_model
                           is open, forwards the request as self@ does, else answers
                           forbidden. The floor for Herald's miss path where the server
                           grants no IQ permission (ejabberd 23.01): two round trips.

It is also the floor for fan-out (bench/pubsub_fanout.py): a pubsub subscribe (IQ set)
to mem.localhost records the subscriber, and the first one of a node subscribes the
component itself upstream (the result goes back once upstream's comes); each event
notification upstream then sends is spliced into one copy per subscriber of its node,
from mem.localhost, written 64 copies at a time as Herald writes its own.

Other IQ gets get an empty result, other IQ sets service-unavailable; other messages
(the server's privilege advertisement included) and presences are ignored. It prints "ready" once
the server accepted the handshake and exits at the end of the stream or on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import re
import signal
import socket
import sys
from xml.parsers import expat
from xml.sax.saxutils import quoteattr

COMPONENT_NS = "jabber:component:accept"
STREAM_NS = "http://etherx.jabber.org/streams"
PRIVILEGE_NS = "urn:xmpp:privilege:2"
DISCO_INFO_NS = "http://jabber.org/protocol/disco#info"
END_TAG = re.compile(rb"</([^\s>]+)\s*>")
ATTR = re.compile(rb"""\s([\w:]+)=(?:'([^']*)'|"([^"]*)")""")
NODE = re.compile(rb"""<items\b[^>]*?\snode=(?:'([^']*)'|"([^"]*)")""")
SUBSCRIBE = re.compile(rb"<subscribe\b[^>]*>")
EVENT_NS = b"http://jabber.org/protocol/pubsub#event"
FAN_OUT_BATCH = 64  # copies per write, as Herald's fan_out.WRITE_BATCH
# the first <value/> of the access_model field of a node's metadata form
OPEN = re.compile(rb"""var=['"]pubsub#access_model['"][^>]*>\s*<value>open</value>""")
FORWARD_AS = {"self": "self", "check": "check"}  # localpart -> mode; anything else: "user"


class SpanParser:
    """Splits a stream into top-level stanzas: (name, attributes, raw bytes) each."""

    def __init__(self) -> None:
        self._parser = expat.ParserCreate()
        self._parser.StartElementHandler = self._start
        self._parser.EndElementHandler = self._end
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]
        self._depth = 0
        self._begin = 0
        self._name = ""
        self._attrs: dict[str, str] = {}
        self._done: list[tuple[str, dict[str, str], bytes]] = []
        self.header: dict[str, str] = {}
        self.closed = False

    def feed(self, data: bytes) -> list[tuple[str, dict[str, str], bytes]]:
        self._buf += data
        self._parser.Parse(data, False)
        done, self._done = self._done, []
        return done

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        self._depth += 1
        if self._depth == 2:
            self._begin = self._parser.CurrentByteIndex
            self._name, self._attrs = name, attrs
        elif self._depth == 1:
            self.header = attrs

    def _end(self, name: str) -> None:
        self._depth -= 1
        if self._depth == 1:
            # expat stands at the start of the end tag, or just past an empty element
            # (ejabberd answers the handshake with <handshake/>)
            at = self._parser.CurrentByteIndex - self._base
            closing = END_TAG.match(self._buf, at)
            end = closing.end() if closing and closing[1] == name.encode() else at
            begin = self._begin - self._base
            self._done.append((self._name, self._attrs, bytes(self._buf[begin:end])))
            del self._buf[:end]
            self._base += end
        elif self._depth == 0:
            self.closed = True


def inner(raw: bytes) -> bytes:
    """The children of a stanza, verbatim (its start and end tags cut off)."""
    start = raw.index(b">") + 1
    if raw[start - 2 : start] == b"/>":
        return b""
    return raw[start : raw.rindex(b"</")]


def forwarded_iq(raw: bytes) -> tuple[dict[bytes, bytes], bytes]:
    """The attributes and children of the <iq/> inside a privileged reply's <forwarded/>."""
    at = raw.index(b"<iq", raw.index(b"<forwarded"))
    head_end = raw.index(b">", at) + 1
    attrs = {m[1]: m[2] or m[3] for m in ATTR.finditer(raw[at:head_end])}
    if raw[head_end - 2 : head_end] == b"/>":
        return attrs, b""
    outer_end = raw.rindex(b"</")
    return attrs, raw[head_end : raw.rindex(b"</iq>", 0, outer_end)]


class MemoryComponent(asyncio.Protocol):
    def __init__(self, jid: str, secret: str, payload: bytes, upstream: str) -> None:
        self.jid = jid
        self.secret = secret
        self.payload = payload
        self.upstream = upstream
        self.parser = SpanParser()
        self.transport: asyncio.Transport | None = None
        self.ready = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()
        self.answered = 0
        self.forwarded = 0
        self._ids = itertools.count()
        # our request id -> (client's id, client's JID, mode, the client's payload)
        self._pending: dict[str, tuple[str, str, str, bytes]] = {}
        self._subscribers: dict[bytes, list[bytes]] = {}  # node -> quoted subscriber JIDs
        self.fanned = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(
            f"<stream:stream xmlns='{COMPONENT_NS}' xmlns:stream='{STREAM_NS}' "
            f"to='{self.jid}'>".encode()
        )

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        had_header = bool(self.parser.header)
        stanzas = self.parser.feed(data)
        if not had_header and self.parser.header:
            digest = hashlib.sha1((self.parser.header["id"] + self.secret).encode()).hexdigest()
            self.transport.write(f"<handshake>{digest}</handshake>".encode())
        out = []
        for name, attrs, raw in stanzas:
            if name == "iq":
                out.append(self._iq(attrs, raw))
            elif name == "message" and EVENT_NS in raw:
                self._fan_out(raw)
            elif name == "handshake":
                self.ready.set_result(None)
            elif name == "stream:error" and not self.ready.done():
                self.ready.set_exception(RuntimeError(f"stream error: {raw!r}"))
        if out:
            self.transport.write(b"".join(out))
        if self.parser.closed:
            self.transport.close()

    def _iq(self, attrs: dict[str, str], raw: bytes) -> bytes:
        iq_type, iq_id = attrs.get("type"), attrs.get("id", "")
        if iq_type in ("result", "error"):
            return self._relay(iq_id, iq_type, raw)
        sender, to = attrs.get("from", ""), attrs.get("to", self.jid)
        head = f"id={quoteattr(iq_id)} from={quoteattr(to)} to={quoteattr(sender)}"
        if iq_type == "get" and b"http://jabber.org/protocol/pubsub" in raw:
            local = to.partition("@")[0] if "@" in to else ""
            if not local:
                self.answered += 1
                return b"<iq type='result' " + head.encode() + b">" + self.payload + b"</iq>"
            return self._forward(iq_id, sender, FORWARD_AS.get(local, "user"), inner(raw))
        if iq_type == "get":
            return f"<iq type='result' {head}/>".encode()
        found = SUBSCRIBE.search(raw) if iq_type == "set" else None
        if found is not None:
            return self._subscribe(iq_id, sender, found[0])
        return (
            f"<iq type='error' {head}><error type='cancel'><service-unavailable "
            "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        ).encode()

    def _forward(self, client_id: str, client: str, mode: str, payload: bytes) -> bytes:
        our_id = f"f{next(self._ids)}"
        self._pending[our_id] = (client_id, client, mode, payload)
        if mode == "check":
            found = NODE.search(payload)
            node = (found[1] or found[2] or b"") if found else b""
            return (
                f"<iq type='get' id='{our_id}' from='{self.jid}' to='{self.upstream}'>"
                f"<query xmlns='{DISCO_INFO_NS}' node='".encode()
                + node
                + b"'/></iq>"
            )
        if mode == "self":
            return (
                f"<iq type='get' id='{our_id}' from='{self.jid}' to='{self.upstream}'>".encode()
                + payload
                + b"</iq>"
            )
        user = quoteattr(client.partition("/")[0])
        return (
            f"<iq type='get' id='{our_id}' from='{self.jid}' to={user}>"
            f"<privileged_iq xmlns='{PRIVILEGE_NS}'><iq xmlns='jabber:client' type='get' "
            f"id='{our_id}' from={user} to='{self.upstream}'>".encode()
            + payload
            + b"</iq></privileged_iq></iq>"
        )

    def _subscribe(self, client_id: str, client: str, element: bytes) -> bytes:
        attrs = {m[1]: m[2] or m[3] for m in ATTR.finditer(element)}
        node, jid = attrs.get(b"node", b""), attrs.get(b"jid", b"")
        subscribers = self._subscribers.setdefault(node, [])
        subscribers.append(quoteattr(jid.decode()).encode())
        if len(subscribers) > 1:
            return (
                f"<iq type='result' id={quoteattr(client_id)} from='{self.jid}' "
                f"to={quoteattr(client)}/>"
            ).encode()
        our_id = f"f{next(self._ids)}"
        self._pending[our_id] = (client_id, client, "subscribe", b"")
        return (
            f"<iq type='set' id='{our_id}' from='{self.jid}' to='{self.upstream}'>"
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe node=".encode()
            + quoteattr(node.decode()).encode()
            + f" jid='{self.jid}'/></pubsub></iq>".encode()
        )

    def _fan_out(self, raw: bytes) -> None:
        assert self.transport is not None
        found = NODE.search(raw)
        node = (found[1] or found[2] or b"") if found else b""
        event = inner(raw)
        head = f"<message from='{self.jid}' to=".encode()
        batch: list[bytes] = []
        for jid in self._subscribers.get(node, ()):
            batch.append(head + jid + b">" + event + b"</message>")
            if len(batch) == FAN_OUT_BATCH:
                self.transport.write(b"".join(batch))
                self.fanned += len(batch)
                batch.clear()
        if batch:
            self.transport.write(b"".join(batch))
            self.fanned += len(batch)

    def _relay(self, our_id: str, iq_type: str, raw: bytes) -> bytes:
        pending = self._pending.pop(our_id, None)
        if pending is None:
            return b""
        client_id, client, mode, payload = pending
        if mode == "subscribe":
            return (
                f"<iq type='{iq_type}' id={quoteattr(client_id)} from='{self.jid}' "
                f"to={quoteattr(client)}/>"
            ).encode()
        if mode == "check":
            if iq_type == "result" and OPEN.search(raw):
                return self._forward(client_id, client, "self", payload)
            return (
                f"<iq type='error' id={quoteattr(client_id)} from='{self.jid}' "
                f"to={quoteattr(client)}><error type='auth'><forbidden "
                "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
            ).encode()
        children = inner(raw)
        if mode == "user" and iq_type == "result":
            attrs, children = forwarded_iq(raw)
            iq_type = attrs.get(b"type", b"error").decode()
        self.forwarded += 1
        return (
            f"<iq type='{iq_type}' id={quoteattr(client_id)} from='{self.jid}' "
            f"to={quoteattr(client)}>".encode()
            + children
            + b"</iq>"
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(f"connection lost before handshake: {exc}"))
        if not self.lost.done():
            self.lost.set_result(None)


async def main(args: argparse.Namespace, payload: bytes) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _, protocol = await loop.create_connection(
        lambda: MemoryComponent(args.jid, args.secret, payload, args.upstream),
        args.host,
        args.port,
    )
    await asyncio.wait_for(protocol.ready, 10)
    print("ready", flush=True)
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({stopper, protocol.lost}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if protocol.transport is not None and not protocol.transport.is_closing():
        protocol.transport.write(b"</stream:stream>")
        protocol.transport.close()
    print(
        f"answered {protocol.answered}, forwarded {protocol.forwarded},"
        f" fanned out {protocol.fanned}",
        flush=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jid", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--payload", required=True, help="file holding the <pubsub/> XML")
    parser.add_argument("--upstream", default="pubsub-origin.localhost")
    arguments = parser.parse_args()
    with open(arguments.payload, "rb") as f:
        data = f.read()
    try:
        asyncio.run(main(arguments, data))
    except Exception as exc:
        print(f"memory component failed: {exc}", file=sys.stderr)
        sys.exit(1)
