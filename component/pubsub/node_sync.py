"""One node's synchronisation: under a lease, read its metadata, subscribe, fetch
every item, store them, and mark the node completed; or fail, and retry with backoff.

A failed sync leaves the node uncached (served from upstream) and is retried with
backoff, forever. The lease is renewed while the sync runs, so no other process starts
the same sync meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from component import metrics
from component.keyed_locks import KeyedLocks
from component.pubsub.admission import Admission
from component.pubsub.cache import Cache, utcnow
from component.pubsub.item_intake import ItemIntake, SyncFailed
from component.pubsub.leases import abandoned_by, this_process
from component.pubsub.node_metadata import NodeMetadata
from component.pubsub.node_state import NodeState
from component.pubsub.notifications import NotificationApplier
from component.pubsub.reconcile import Reconciler
from component.pubsub.sync_upstream import SyncUpstream
from component.pubsub.upstream import UpstreamError
from component.storage.records import COMPLETED, ERROR, IN_PROGRESS

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)


def retry_delay(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min ... capped at 1 h: a failing node is retried, never given up."""
    return timedelta(seconds=min(3600, 30 * 2 ** max(0, attempts - 1)))


class NodeSync:
    """Synchronises nodes one call at a time; what runs when is the Synchroniser's."""

    def __init__(
        self,
        cache: Cache,
        metadata: NodeMetadata,
        admission: Admission,
        sync_upstream: SyncUpstream,
        intake: ItemIntake,
        notifications: NotificationApplier,
        order: KeyedLocks[tuple[str, str]],
        reconciler: Reconciler,
    ) -> None:
        self.cache = cache
        self.metadata = metadata
        self.admission = admission
        self.sync_upstream = sync_upstream
        self.intake = intake
        self.notifications = notifications
        self._order = order  # the per-node notification order
        self.reconciler = reconciler
        me = this_process()
        self.owner = str(me)
        self._abandoned = abandoned_by(me)
        self.lease = LEASE

    async def sync(self, node: NodeState) -> None:
        """Synchronise one node now, if this process wins its lease."""
        from component.storage import pubsub_leases

        sessions = self.cache.sessions
        # The lease and the in-progress state are one UPDATE: a crash can never leave
        # the lease taken and the node still marked completed.
        if not await pubsub_leases.try_acquire_sync(
            sessions,
            node.id,
            self.owner,
            utcnow(),
            self.lease,
            sync_state=IN_PROGRESS,
            abandoned=self._abandoned,
        ):
            log.debug("pubsub: %s/%s is being synced elsewhere", node.service, node.name)
            return
        key = (node.service, node.name)
        this_sync = asyncio.current_task()
        assert this_sync is not None
        keeper = asyncio.create_task(self._keep_lease(node, this_sync))
        try:
            node = await self.cache.set_state(node)  # in progress, as just written
            meta = await self.metadata.read(node.service, node.name)
            if not meta.cacheable:
                await self.admission.stop_caching(node, meta)
                return
            node = await self.cache.set_state(node, upstream_max_items=meta.max_items)
            fetched_at = asyncio.get_running_loop().time()
            self.notifications.hold_back(node.id)
            await self.sync_upstream.subscribe(node)
            fetched, more = await self.sync_upstream.fetch_all(node)
            node = await self.cache.replace_items(
                node, await self.intake.item_inputs(node, fetched), more_upstream=more
            )
            async with self._order.hold((node.service, node.name)):
                current = self.cache.node(node.service, node.name)
                if current is None or current.sync_state != IN_PROGRESS:
                    # Stopped meanwhile (closed, deleted): that decision stands; what
                    # this sync read under the old metadata is not kept.
                    if current is not None:
                        await self.cache.purge_items(current)
                    log.info("pubsub: %s/%s stopped being cached during its sync", *key)
                    return
                # What was received during the fetch is applied before the node is
                # served: never an answer without a notification Herald has.
                await self.notifications.apply_held(current)
                node = await self.cache.set_state(
                    self.cache.node(*key) or current,
                    confirm=True,
                    sync_state=COMPLETED,
                    shareable=True,
                    access_model=meta.access_model,
                    subscribed=True,
                    sync_attempts=0,
                    next_sync_at=None,
                    last_synced=utcnow(),
                    last_error=None,
                )
                self.reconciler.fetched(node.id, fetched_at, meta.always_notify)
            metrics.PUBSUB_SYNC_RUNS.labels(result="completed").inc()
            log.info(
                "pubsub: synced %s/%s (%d items%s)",
                node.service,
                node.name,
                len(fetched),
                ", older ones left upstream" if node.truncated else "",
            )
        except (UpstreamError, SyncFailed) as exc:
            await self._failed(node, str(exc) if isinstance(exc, SyncFailed) else exc.condition)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pubsub: sync of %s/%s crashed", node.service, node.name)
            await self._failed(node, "internal error")
        finally:
            keeper.cancel()
            self.notifications.drop_held(node.id)
            await pubsub_leases.release_sync(sessions, node.id, self.owner)
            await self.cache.gauges.refresh()

    async def _keep_lease(self, node: NodeState, sync: asyncio.Task[None]) -> None:
        """Renew the node's lease while its sync runs; stop the sync if it is lost.

        A sync may outlast one lease (a large node over a slow link); without renewal
        another process would start the same sync meanwhile.
        """
        from component.storage import pubsub_leases

        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            try:
                held = await pubsub_leases.renew_sync(
                    self.cache.sessions, node.id, self.owner, utcnow(), self.lease
                )
            except Exception as exc:  # the database may be back before the lease ends
                log.warning(
                    "pubsub: cannot renew the lease of %s/%s: %s", node.service, node.name, exc
                )
                continue
            if not held:
                log.warning(
                    "pubsub: lost the sync lease of %s/%s; leaving the sync to its holder",
                    node.service,
                    node.name,
                )
                sync.cancel()
                return

    async def _failed(self, node: NodeState, reason: str) -> None:
        from component.storage import pubsub_nodes

        async with self.cache.sessions() as session:
            record = await pubsub_nodes.get_node_by_id(session, node.id)
        attempts = (record.sync_attempts if record else 0) + 1
        # Never half-cached: drop what was fetched; requests go upstream until a retry works.
        await self.cache.purge_items(node)
        await self.cache.set_state(
            node,
            sync_state=ERROR,
            sync_attempts=attempts,
            next_sync_at=utcnow() + retry_delay(attempts),
            last_error=reason,
        )
        metrics.PUBSUB_SYNC_RUNS.labels(result="failed").inc()
        log.warning(
            "pubsub: sync of %s/%s failed (%s); retry in %s",
            node.service,
            node.name,
            reason,
            retry_delay(attempts),
        )
