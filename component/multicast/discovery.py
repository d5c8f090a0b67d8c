"""Which remote domains run a XEP-0033 service: disco, cached positive and negative.

Order (§2): disco#info on the domain; if it lacks the address feature, disco#items,
then disco#info on each item. Answers are kept for `ttl` seconds in memory and in the
database, so a restart does not re-probe every domain. Concurrent look-ups for one
domain share one disco run, and callers never wait longer than `wait`: a slow remote
is served with direct copies this time, and the run finishes in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component import metrics
from component.multicast.addresses import ADDRESS_NS
from component.multicast.planner import RemoteSupport
from component.storage import multicast_repo
from component.storage.multicast_repo import RemoteSupportRecord

log = logging.getLogger(__name__)

# A remote that failed to answer in time is retried sooner than a clear "no".
TIMEOUT_TTL = 300.0
# disco#info is sent to at most this many of a domain's items.
MAX_CANDIDATES = 20
MAX_REMEMBERED = 10_000


@dataclass(frozen=True)
class DiscoInfo:
    """The parts of a disco#info answer that matter here."""

    features: frozenset[str]
    limits: dict[str, int]  # "message"/"presence" -> max recipients, from the XEP-0128 form


class DiscoError(Exception):
    """The entity answered with an error, or did not answer."""

    def __init__(self, reason: str, *, timeout: bool = False) -> None:
        super().__init__(reason)
        self.timeout = timeout


class DiscoClient(Protocol):
    """What discovery needs from the XMPP edge."""

    async def info(self, jid: str) -> DiscoInfo: ...

    async def items(self, jid: str) -> list[str]: ...


def support_from(record: RemoteSupportRecord, kind: str) -> RemoteSupport:
    """The planner's view of a cached record, for message or presence."""
    limit = record.max_message if kind == "message" else record.max_presence
    return RemoteSupport(service_jid=record.service_jid, max_per_stanza=limit)


class RemoteDiscovery:
    """Looks up, caches and persists remote multicast support."""

    def __init__(
        self,
        disco: DiscoClient,
        sessions: async_sessionmaker[AsyncSession],
        ttl: float,
        wait: float = 3.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        never: frozenset[str] = frozenset(),
    ) -> None:
        # Our own JID and domains are never a remote's multicast service: a remote that
        # listed them would have Herald hand stanzas back to itself, in a loop.
        self._never = frozenset(j.lower() for j in never)
        self._disco = disco
        self._sessions = sessions
        self._ttl = ttl
        self._wait = wait
        self._clock = clock
        self._memory: dict[str, RemoteSupportRecord] = {}
        self._running: dict[str, asyncio.Task[RemoteSupportRecord]] = {}

    async def lookup(self, domains: Iterable[str], kind: str) -> dict[str, RemoteSupport]:
        """Support for each domain; a domain still being discovered after `wait` is absent."""
        domains = list(domains)
        if not domains:
            return {}
        records = await asyncio.gather(*(self._one(d) for d in domains))
        return {
            domain: support_from(record, kind)
            for domain, record in zip(domains, records, strict=True)
            if record is not None
        }

    async def _one(self, domain: str) -> RemoteSupportRecord | None:
        now = self._clock()
        cached = self._memory.get(domain)
        if cached is None and self._ttl > 0:
            async with self._sessions() as session:
                cached = await multicast_repo.get_remote_support(session, domain)
        if cached is not None and cached.expires_at > now:
            self._memory[domain] = cached
            metrics.MULTICAST_REMOTE_DISCO.labels(result="hit").inc()
            return cached
        metrics.MULTICAST_REMOTE_DISCO.labels(result="miss").inc()
        task = self._running.get(domain)
        if task is None:
            task = asyncio.create_task(self._discover_and_store(domain))
            self._running[domain] = task
            task.add_done_callback(lambda _t: self._running.pop(domain, None))
        try:
            return await asyncio.wait_for(asyncio.shield(task), self._wait)
        except TimeoutError:
            log.info("multicast: %s is slow to answer disco; sending direct copies", domain)
            return None

    async def _discover_and_store(self, domain: str) -> RemoteSupportRecord:
        started = time.perf_counter()
        ttl = self._ttl
        try:
            service, limits = await self._discover(domain)
        except DiscoError as exc:
            service, limits = None, {}
            if exc.timeout:
                ttl = min(ttl, TIMEOUT_TTL)
            log.info("multicast: disco of %s failed (%s): no multicast service", domain, exc)
        metrics.MULTICAST_REMOTE_DISCO_SECONDS.observe(time.perf_counter() - started)
        now = self._clock()
        record = RemoteSupportRecord(
            domain=domain,
            service_jid=service,
            max_message=limits.get("message"),
            max_presence=limits.get("presence"),
            expires_at=now + timedelta(seconds=ttl),
        )
        if len(self._memory) > MAX_REMEMBERED:
            self._memory.clear()  # the database still has them
        self._memory[domain] = record
        if ttl > 0:
            try:
                async with self._sessions() as session:
                    await multicast_repo.put_remote_support(session, record, now)
            except Exception:
                # The memory cache still holds it; persistence is an optimisation.
                log.warning("multicast: cannot persist disco result for %s", domain, exc_info=True)
        log.info(
            "multicast: %s %s",
            domain,
            f"has a multicast service at {service}" if service else "has no multicast service",
        )
        return record

    async def _discover(self, domain: str) -> tuple[str | None, dict[str, int]]:
        if domain.lower() in self._never:
            return None, {}  # never ask ourselves: we would find ourselves
        info = await self._disco.info(domain)
        if ADDRESS_NS in info.features:
            return domain, info.limits
        items = await self._disco.items(domain)
        # Only the domain's own services (subdomains) may speak for it: a remote must
        # not point Herald at a third party, or at Herald itself.
        candidates = [
            jid.lower()
            for jid in items
            if "@" not in jid
            and "/" not in jid
            and jid.lower().endswith(f".{domain}")
            and jid.lower() not in self._never
        ][:MAX_CANDIDATES]
        results = await asyncio.gather(
            *(self._info_or_none(self._disco.info(jid)) for jid in candidates)
        )
        for jid, item_info in zip(candidates, results, strict=True):
            if item_info is not None and ADDRESS_NS in item_info.features:
                return jid, item_info.limits
        return None, {}

    @staticmethod
    async def _info_or_none(call: Awaitable[DiscoInfo]) -> DiscoInfo | None:
        try:
            return await call
        except DiscoError:
            return None
