"""One component connection (XEP-0114) per service, kept up across server restarts."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from typing import Any
from xml.etree import ElementTree as ET

from slixmpp import JID, ComponentXMPP
from slixmpp.jid import InvalidJID
from slixmpp.stanza import Handshake, Iq, StreamError
from slixmpp.xmlstream import StanzaBase

from component import metrics
from component.xmpp.answering import ROOT_STANZAS, error_reply, may_answer, payload_problem
from component.xmpp.backoff import Backoff
from component.xmpp.errors import make_error
from component.xmpp.namespaces import COMPONENT_NS
from component.xmpp.privilege import HostPrivileges, parse_advertisement
from component.xmpp.stanzasize import answers, size_over, size_refusal
from component.xmpp.xmltext import serialize

log = logging.getLogger(__name__)

STANZA_TAGS = frozenset(f"{{{COMPONENT_NS}}}{name}" for name in ("message", "presence", "iq"))
IQ_TAG = f"{{{COMPONENT_NS}}}iq"
# slixmpp answers a get or set through Iq.reply(), which deep-copies the stanza
# recursively: about 490 levels exhaust Python's recursion limit, inside the stream's
# data_received, and the stream drops. No real request comes near this depth.
MAX_DEPTH = 128


class ServiceComponent(ComponentXMPP):
    """A ComponentXMPP that reconnects by itself and reports its state.

    Subclasses add their disco identity and handlers in ``setup()``.
    """

    #: label value for metrics and log lines: "multicast" or "pubsub"
    service_name = "service"
    #: stanzas larger than this are refused before any handler runs (None: no limit)
    max_stanza_bytes: int | None = None

    def __init__(
        self, jid: str, secret: str, host: str, port: int, trusted_hosts: frozenset[str]
    ) -> None:
        # Hosts whose XEP-0356 advertisements count (anyone can send one over s2s), and
        # what they granted.
        self.trusted_hosts = trusted_hosts
        self.privileges: dict[str, HostPrivileges] = {}
        # fix_error_ns: without it every error from Prosody parses as
        # feature-not-implemented, because slixmpp looks in jabber:client.
        super().__init__(jid, secret, host, port, fix_error_ns=True)  # type: ignore[no-untyped-call]
        self.backoff = Backoff()
        self.connected_event = asyncio.Event()
        self._closing = False
        self._reconnect_task: asyncio.Task[None] | None = None
        # Herald's own stanza classes: they never answer a result or an error.
        for slixmpp_class, ours in ROOT_STANZAS:
            self.remove_stanza(slixmpp_class)
            self.register_stanza(ours)
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("disconnected", self._on_disconnected)
        self.add_event_handler("stream_error", self._on_stream_error)
        self.add_event_handler("connection_failed", self._on_connection_failed)
        metrics.COMPONENT_CONNECTED.labels(service=self.service_name).set(0)
        self.setup()
        # Each service answers disco itself. slixmpp's xep_0030 (which a plugin may pull
        # in) stores every disco#info result it receives, asked for or not, forever:
        # 2,000 unsolicited ones grew Herald by ~100 MiB. Its handlers must never run.
        self.remove_handler("Disco Info")
        self.remove_handler("Disco Items")

    def setup(self) -> None:
        """Register the service's identity, features and handlers."""

    # -- receiving ----------------------------------------------------------

    def _spawn_event(self, xml: ET.Element) -> None:
        # The server may accept a JID slixmpp's stricter stringprep rejects (an emoji
        # resource: unassigned in Python's Unicode 3.2). slixmpp would raise in every
        # handler reading it, log a traceback and answer even a result with an error.
        if xml.tag in STANZA_TAGS and not (self._jids_parse(xml) and self._size_fits(xml)):
            return
        if xml.tag == IQ_TAG and xml.get("type") in ("get", "set") and _deeper_than(xml, MAX_DEPTH):
            self._refuse_deep(xml)
            return
        if xml.tag == IQ_TAG and (problem := payload_problem(xml)) is not None:
            # Answered here, before handlers: one per payload would each answer it.
            log.info(
                "%s: %s from %r: %s", self.service_name, xml.get("type"), xml.get("from"), problem
            )
            self.send_element(error_reply(xml, "bad-request", problem))
            return
        super()._spawn_event(xml)

    def _refuse_deep(self, iq: ET.Element) -> None:
        log.info(
            "%s: %s from %r nested deeper than %d elements; answered not-acceptable",
            self.service_name,
            iq.get("type"),
            iq.get("from", ""),
            MAX_DEPTH,
        )
        # not-acceptable rather than policy-violation: slixmpp clients cannot parse the
        # latter (it is missing from their condition list) and their request would hang.
        text = (
            f"The stanza is nested more than {MAX_DEPTH} elements deep; Herald does not handle it."
        )
        self.send_element(error_reply(iq, "not-acceptable", text))

    def size_limited(self, xml: ET.Element) -> bool:
        """Whether max_stanza_bytes applies to this stanza (to every one, by default)."""
        return True

    def refused_for_size(self, xml: ET.Element) -> None:
        """Called for each stanza refused or dropped for its size (metrics)."""

    def _size_fits(self, xml: ET.Element) -> bool:
        limit = self.max_stanza_bytes
        if limit is None or not self.size_limited(xml):
            return True
        size = size_over(xml, limit)
        if size is None:
            return True
        answer = answers(xml)
        log.info(
            "%s: %s %s from %r is over max_stanza_bytes (%d+ of %d): %s",
            self.service_name,
            xml.get("type", "normal"),
            xml.tag.rpartition("}")[2],
            xml.get("from", ""),
            size,
            limit,
            "answered not-acceptable" if answer else "dropped",
        )
        self.refused_for_size(xml)
        if answer:
            key = f"{self.service_name}.max_stanza_bytes"
            self.send_element(size_refusal(xml, self.boundjid.bare, limit, key))
        return False

    def _jids_parse(self, xml: ET.Element) -> bool:
        """True when the stanza's JIDs parse; otherwise answer it if it wants an answer."""
        bad = _unparsable_jid(xml)
        if bad is None:
            return True
        attr, value, reason = bad
        kind, itype = xml.tag.rpartition("}")[2], xml.get("type", "")
        # Never answer a result or an error (RFC 6120 §8.2.3), nor a presence; a
        # server or service (no user part) is not bounced either.
        answer = may_answer(kind, itype, xml.get("from", ""))
        log.info(
            "%s: %s %s from %r: cannot parse its %s %r (%s)%s",
            self.service_name,
            itype or "normal",
            kind,
            xml.get("from", ""),
            attr,
            value,
            reason,
            "; answered jid-malformed" if answer else "; dropped",
        )
        if answer:
            frm = xml.get("to") or self.boundjid.bare
            if kind == "message":
                frm = self.boundjid.bare if attr == "to" else frm
            reply = ET.Element(
                f"{{{COMPONENT_NS}}}{kind}",
                {"type": "error", "from": frm, "to": xml.get("from", "")},
            )
            if xml.get("id") is not None:
                reply.set("id", xml.get("id", ""))
            text = f"Herald cannot handle the address {value!r}: {reason}."
            reply.append(make_error("jid-malformed", text, "modify"))
            self.send_element(reply)
        return False

    # -- privileges (XEP-0356) ----------------------------------------------

    def take_privileges(self, sender: JID, xml: ET.Element) -> bool:
        """Keep the permissions a message from one of our own hosts advertises.

        True when the message is an advertisement (kept, or ignored as coming from
        a host that is not ours): it needs no other handling, and no answer.
        """
        granted = parse_advertisement(sender.bare, xml)
        if granted is None:
            return False
        if granted.host not in self.trusted_hosts:
            log.warning(
                "%s: ignoring a privilege advertisement from %s", self.service_name, sender.bare
            )
            return True
        self.privileges[granted.host] = granted
        log.info("%s: %s grants %s", self.service_name, granted.host, granted.summary())
        self.privileges_granted(granted)
        return True

    def privileges_granted(self, granted: HostPrivileges) -> None:
        """Called with each advertisement kept."""

    # -- sending -------------------------------------------------------------

    def send(self, data: StanzaBase | str, use_filters: bool = True) -> None:
        # Every stanza object leaves through our serialiser: slixmpp's drops namespaced
        # attributes (an Atom <link thr:count='5'/> loses its count) from payloads
        # forwarded upstream. No outgoing filters are registered on components. The
        # handshake stays an object: slixmpp lets only that through before the session.
        if (
            isinstance(data, Iq)
            and data["type"] in ("get", "set")
            and not self.connected_event.is_set()
        ):
            # slixmpp would queue it and send it after the next connection, long after
            # its caller gave up (a replayed unsubscribe would silently unsubscribe us).
            log.debug("%s: not connected; request %s not sent", self.service_name, data["id"])
            return
        if isinstance(data, StanzaBase) and not isinstance(data, Handshake):
            data = serialize(data.xml, COMPONENT_NS)
        super().send(data, use_filters)

    @staticmethod
    def stanza_text(xml: ET.Element) -> str:
        """A stanza built as an ElementTree element (component namespace), as text."""
        return serialize(xml, COMPONENT_NS)

    def send_element(self, xml: ET.Element) -> None:
        """Send a stanza built as an ElementTree element."""
        self.send_raw(self.stanza_text(xml))

    # -- connection state --------------------------------------------------

    def connection_made(self, transport: Any, send_event: bool = True) -> None:
        super().connection_made(transport, send_event)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Stanzas are small and latency-sensitive; never let Nagle batch them.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def reschedule_connection_attempt(self) -> asyncio.Future[Any] | None:
        # Replace slixmpp's unjittered 1, 3, 7 ... 300 s schedule with ours.
        if self._current_connection_attempt is None or self._closing:
            return None
        self._connect_loop_wait = self.backoff.next_delay()
        log.info(
            "%s: next connection attempt to %s:%s in %.1f s",
            self.service_name,
            self.server_host,
            self.server_port,
            self._connect_loop_wait,
        )
        self._current_connection_attempt = asyncio.ensure_future(self._connect_loop())
        return self._current_connection_attempt

    def _on_session_start(self, _event: Any) -> None:
        self.backoff.reset()
        self.connected_event.set()
        metrics.COMPONENT_CONNECTED.labels(service=self.service_name).set(1)
        log.info(
            "%s: connected to %s:%s as %s",
            self.service_name,
            self.server_host,
            self.server_port,
            self.boundjid.bare,
        )

    def _on_stream_error(self, error: StreamError) -> None:
        log.warning(
            "%s: the server closed the stream: %s%s",
            self.service_name,
            error["condition"],
            f" ({error['text']})" if error["text"] else "",
        )

    def _on_connection_failed(self, reason: Any) -> None:
        log.warning(
            "%s: cannot connect to %s:%s: %s",
            self.service_name,
            self.server_host,
            self.server_port,
            reason,
        )

    def _on_disconnected(self, reason: Any) -> None:
        was_connected = self.connected_event.is_set()
        self.connected_event.clear()
        # What the server granted held for that stream: the next one advertises anew.
        self.privileges.clear()
        metrics.COMPONENT_CONNECTED.labels(service=self.service_name).set(0)
        if self._closing:
            return
        delay = self.backoff.next_delay()
        if was_connected:
            metrics.COMPONENT_RECONNECTS.labels(service=self.service_name).inc()
        log.warning(
            "%s: disconnected (%s); reconnecting in %.1f s",
            self.service_name,
            reason or "connection lost",
            delay,
        )
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.ensure_future(self._reconnect_after(delay))

    async def _reconnect_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if not self._closing:
            self.connect()

    def start(self) -> None:
        """Begin connecting; returns at once, the connection is kept up in the background."""
        self._closing = False
        self.connect()

    async def close(self, wait: float = 2.0) -> None:
        """Close the stream politely, then stop reconnecting."""
        self._closing = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        self.cancel_connection_attempt()
        if self.transport is not None:
            await self.disconnect(wait=wait, reason="shutting down")
        metrics.COMPONENT_CONNECTED.labels(service=self.service_name).set(0)


def _unparsable_jid(xml: ET.Element) -> tuple[str, str, str] | None:
    """The first of to/from that slixmpp cannot parse: (attribute, value, why)."""
    for attr in ("to", "from"):
        value = xml.get(attr)
        if not value:
            continue
        try:
            JID(value)
        except InvalidJID as exc:
            return attr, value, str(exc).replace("\u2019", "'")
    return None


class _HandshakeRedactor(logging.Filter):
    """slixmpp logs every sent byte at debug level; the handshake is derived from the secret."""

    _pattern = re.compile(r"(<handshake[^>]*>)[^<]*(</handshake>)")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(
                self._pattern.sub(r"\1[redacted]\2", a) if isinstance(a, str) else a
                for a in record.args
            )
        if isinstance(record.msg, str) and "handshake" in record.msg:
            record.msg = self._pattern.sub(r"\1[redacted]\2", record.msg)
        return True


def install_log_redaction() -> None:
    """Keep the handshake digest out of slixmpp's debug log."""
    logging.getLogger("slixmpp.xmlstream.xmlstream").addFilter(_HandshakeRedactor())


def _deeper_than(root: ET.Element, limit: int) -> bool:
    """Whether any element lies more than `limit` levels below root (root is level 1)."""
    stack = [(root, 1)]
    while stack:
        element, level = stack.pop()
        if level > limit:
            return True
        if len(element):
            stack.extend((child, level + 1) for child in element)
    return False
