"""Lifecycle: migrate, open storage, start metrics, connect services, shut down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from component import metrics, sdnotify
from component.config import Settings
from component.multicast.service import MulticastComponent
from component.pubsub.rules import Registry
from component.pubsub.service import PubsubComponent
from component.storage import migrate
from component.storage.engine import (
    create_engine,
    create_redoable_engine,
    on_connection_lost,
    session_factory,
)
from component.xmpp.connection import ServiceComponent

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """Herald cannot start; the message says why in operator terms."""


class Herald:
    """One running Herald: its database engine, metrics listener and services."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: AsyncEngine | None = None
        self.redoable_engine: AsyncEngine | None = None
        self.metrics_server: metrics.MetricsServer | None = None
        self.services: list[ServiceComponent] = []
        self._ready_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Migrate, then start metrics and begin connecting every enabled service."""
        s = self.settings
        self.engine = create_engine(s.database.url.get_secret_value())
        try:
            await migrate.upgrade(self.engine)
        except migrate.UnknownRevisionError as exc:
            raise StartupError(str(exc)) from None
        except OSError as exc:
            raise StartupError(f"database {s.database.masked()}: {exc}") from None
        log.info("database %s is at schema %s", s.database.masked(), migrate.head_revision())
        self.sessions = session_factory(self.engine)
        self.redoable_engine = create_redoable_engine(s.database.url.get_secret_value())
        redoable = None if self.redoable_engine is None else session_factory(self.redoable_engine)

        address = s.metrics.address()
        if address is not None:
            self.metrics_server = metrics.MetricsServer(*address, health=self.health)
            try:
                await self.metrics_server.start()
            except OSError as exc:
                raise StartupError(
                    f"metrics.listen {s.metrics.listen!r}: cannot listen: {exc.strerror}"
                ) from None

        if s.multicast.enabled:
            self.services.append(
                MulticastComponent(
                    s.multicast,
                    s.server.host,
                    s.multicast.port or s.server.port,
                    self.sessions,
                    trusted_hosts=self.server_hosts(),
                    # Herald's other JID is never a recipient or a remote service either.
                    own_jids=frozenset({s.pubsub.jid}) if s.pubsub.enabled else frozenset(),
                )
            )
        if s.pubsub.enabled:
            self.services.append(
                PubsubComponent(
                    s.pubsub,
                    s.server.host,
                    s.pubsub.port or s.server.port,
                    self.sessions,
                    Registry.from_config(s.pubsub.rules),
                    trusted_hosts=self.server_hosts(),
                    own_jids=frozenset({s.multicast.jid}) if s.multicast.enabled else frozenset(),
                    redoable=redoable,
                )
            )
        if self.redoable_engine is not None:
            for engine in (self.engine, self.redoable_engine):
                on_connection_lost(engine, self._database_lost)
        for service in self.services:
            if isinstance(service, PubsubComponent):
                await service.prepare()  # gauges reflect the database before any request
            service.start()
        self._ready_task = asyncio.create_task(self._notify_when_ready())
        # Start-up objects live for good: keep them out of every later full collection,
        # which otherwise stalls the loop for ~50 ms (measured by bench/pubsub_items).
        gc.collect()
        gc.freeze()

    def _database_lost(self) -> None:
        for service in self.services:
            if isinstance(service, PubsubComponent):
                service.database_lost()

    def server_hosts(self) -> frozenset[str]:
        """Hosts whose XEP-0356 advertisements we believe: our server's own domains.

        Anyone can send a <privilege/> message over s2s; only these may grant.
        """
        s = self.settings
        parents = {jid.partition(".")[2] for jid in (s.multicast.jid, s.pubsub.jid)}
        return frozenset({*s.multicast.local_domains, *(p for p in parents if p)})

    async def _notify_when_ready(self) -> None:
        await self.wait_connected()
        log.info(
            "ready: %s connected",
            ", ".join(s.service_name for s in self.services) or "no services enabled;",
        )
        sdnotify.notify("READY=1\nSTATUS=connected")

    async def wait_connected(self) -> None:
        """Return once every enabled service has its stream up, all at the same time."""
        # One stream may drop while another is awaited (a server restart): each
        # having been up once is not enough to say READY.
        while not all(s.connected_event.is_set() for s in self.services):
            await asyncio.gather(*(s.connected_event.wait() for s in self.services))

    async def health(self) -> tuple[bool, str]:
        """(healthy, reason): the database answers and every enabled service is connected."""
        problems = [
            f"{s.service_name} disconnected"
            for s in self.services
            if not s.connected_event.is_set()
        ]
        try:
            assert self.engine is not None
            async with asyncio.timeout(2), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:  # any failure means "not healthy", with the reason
            problems.append(f"database unavailable: {type(exc).__name__}")
        return (not problems, "; ".join(problems) or "ok")

    async def stop(self) -> None:
        """Close the streams, the metrics listener and the engine."""
        sdnotify.notify("STOPPING=1")
        if self._ready_task is not None:
            self._ready_task.cancel()
        await asyncio.gather(*(s.close() for s in self.services), return_exceptions=True)
        if self.metrics_server is not None:
            await self.metrics_server.close()
        for engine in (self.engine, self.redoable_engine):
            if engine is not None:
                await engine.dispose()


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    herald = Herald(settings)
    try:
        await herald.start()
        await stop.wait()
        log.info("shutting down")
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(4):
                await herald.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def migrate_only(settings: Settings) -> str | None:
    """Upgrade the database and return the revision it is now at."""
    engine = create_engine(settings.database.url.get_secret_value())
    try:
        await migrate.upgrade(engine)
    except migrate.UnknownRevisionError as exc:
        raise StartupError(str(exc)) from None
    finally:
        await engine.dispose()
    return migrate.head_revision()
