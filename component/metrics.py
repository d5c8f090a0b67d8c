"""Every Prometheus metric Herald exports, and the HTTP listener serving them.

Labels are bounded by design: service names, stanza kinds and results, never JIDs
or node names.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)

import component

log = logging.getLogger(__name__)

# The *_created series double the exposition for no operational value.
disable_created_metrics()  # type: ignore[no-untyped-call]

BUILD_INFO = Info("herald_build", "Herald build information")
BUILD_INFO.info({"version": component.__version__})

COMPONENT_CONNECTED = Gauge(
    "herald_component_connected",
    "1 while the service's component stream to the XMPP server is up",
    ["service"],
)
COMPONENT_RECONNECTS = Counter(
    "herald_component_reconnects",
    "Times a service lost its component stream and started reconnecting",
    ["service"],
)

PUBSUB_REQUESTS = Counter(
    "herald_pubsub_requests",
    "Pubsub requests handled by the proxy",
    ["kind", "result"],
)
PUBSUB_UPSTREAM_SECONDS = Histogram(
    "herald_pubsub_upstream_request_seconds",
    "Latency of requests Herald sent upstream",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PUBSUB_UPSTREAM_REQUESTS = Counter(
    "herald_pubsub_upstream_requests",
    "Requests Herald sent upstream, by outcome",
    # ok | error (an XMPP error reply) | timeout | disconnected (not sent: the stream
    # to the server was down, so the request failed at once)
    ["outcome"],
)
PUBSUB_SYNC_RUNS = Counter(
    "herald_pubsub_sync_runs",
    "Node synchronisations finished, by result",
    ["result"],  # completed | failed
)
PUBSUB_CACHED_NODES = Gauge(
    "herald_pubsub_cached_nodes", "Nodes in the cache, by sync state", ["sync_state"]
)
PUBSUB_CACHED_ITEMS = Gauge("herald_pubsub_cached_items", "Items held in the cache")
PUBSUB_LOCAL_SUBSCRIPTIONS = Gauge(
    "herald_pubsub_local_subscriptions", "Subscriptions Herald holds itself at its proxy addresses"
)
PUBSUB_NOTIFICATIONS_FANNED_OUT = Counter(
    "herald_pubsub_notifications_fanned_out",
    "Notifications Herald delivered to local subscribers",
)
PUBSUB_UPSTREAM_NOTIFICATIONS_SAVED = Counter(
    "herald_pubsub_upstream_notifications_saved",
    "Notifications upstream did not send because Herald fanned one out locally",
)
PUBSUB_NOTIFICATIONS_WITHHELD = Counter(
    "herald_pubsub_notifications_withheld",
    "Local subscriptions not notified because of the subscriber's presence"
    " (presence-based delivery, pubsub#show-values)",
    ["reason"],
)

MULTICAST_STANZAS = Counter(
    "herald_multicast_stanzas",
    "Stanzas received by the multicast service",
    ["stanza", "result"],
)
MULTICAST_RECIPIENTS = Counter(
    "herald_multicast_recipients",
    "Copies sent by the multicast service, by route",
    ["route"],
)

MULTICAST_REMOTE_DISCO = Counter(
    "herald_multicast_remote_disco_lookups",
    "Remote multicast-support look-ups, answered from the cache (hit) or by disco (miss)",
    ["result"],  # hit | miss
)
MULTICAST_REMOTE_DISCO_SECONDS = Histogram(
    "herald_multicast_remote_disco_seconds",
    "Time spent discovering a remote domain's multicast service",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

DB_QUERY_SECONDS = Histogram(
    "herald_db_query_seconds",
    "Latency of database operations",
    ["operation"],  # a fixed name per repository function
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

for _service in ("multicast", "pubsub"):
    COMPONENT_CONNECTED.labels(service=_service)
    COMPONENT_RECONNECTS.labels(service=_service)
for _stanza in ("message", "presence"):
    for _result in ("delivered", "rejected"):
        MULTICAST_STANZAS.labels(stanza=_stanza, result=_result)
for _route in ("local", "remote_service", "remote_direct"):
    MULTICAST_RECIPIENTS.labels(route=_route)
for _result in ("hit", "miss"):
    MULTICAST_REMOTE_DISCO.labels(result=_result)
for _outcome in ("ok", "error", "timeout", "disconnected"):
    PUBSUB_UPSTREAM_REQUESTS.labels(outcome=_outcome)
for _result in ("completed", "failed"):
    PUBSUB_SYNC_RUNS.labels(result=_result)
for _reason in ("unavailable", "show"):
    PUBSUB_NOTIFICATIONS_WITHHELD.labels(reason=_reason)
for _result in ("hit", "miss", "bypass", "error"):
    PUBSUB_REQUESTS.labels(kind="items", result=_result)
for _state in ("no-sync", "in-progress", "completed", "error"):
    PUBSUB_CACHED_NODES.labels(sync_state=_state)

HealthCheck = Callable[[], Awaitable[tuple[bool, str]]]


class MetricsServer:
    """A tiny asyncio HTTP/1.1 listener for /metrics and /healthz.

    It runs in Herald's own event loop, so /healthz can ask the database and the
    component connections directly, without threads.
    """

    def __init__(self, host: str, port: int, health: HealthCheck) -> None:
        self.host = host
        self.port = port
        self._health = health
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind the listener; raises OSError if the address is taken."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        log.info("metrics: serving http://%s:%s/metrics and /healthz", self.host, self.port)

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, _, rest = request.decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            status, ctype, body = await self._respond(method, path)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + (body if method != "HEAD" else b""))
            await writer.drain()
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            pass
        finally:
            writer.close()

    async def _respond(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"only GET\n"
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
        if path == "/healthz":
            ok, reason = await self._health()
            status = "200 OK" if ok else "503 Service Unavailable"
            return status, "text/plain; charset=utf-8", (reason + "\n").encode()
        return "404 Not Found", "text/plain", b"try /metrics or /healthz\n"
