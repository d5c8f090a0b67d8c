"""How a proxied request is decided: gather what decide() needs, run the checks and
comparisons it asks for, and return its final action.

An access check is shared by every request for the node that arrives while it runs;
a served node's access model is re-read in the background before it expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from slixmpp.xmlstream import StanzaBase

from component.pubsub import tracing
from component.pubsub.access import access_of
from component.pubsub.decision import Action, Comparison, Kind, Situation, decide
from component.pubsub.node_metadata import OPEN_FOR
from component.pubsub.node_state import NodeState
from component.pubsub.openness import Access
from component.pubsub.upstream import UpstreamError
from component.xmpp.namespaces import PUBSUB_NS

if TYPE_CHECKING:
    from component.pubsub.service import PubsubComponent

log = logging.getLogger(__name__)

Checked = tuple[Access, float]  # what an access check found, and when it asked


class Deciding:
    """Carries out decide()'s checks and comparisons for the component's requests."""

    def __init__(self, component: PubsubComponent, verified: dict[int, float]) -> None:
        self.component = component
        # node id -> loop time its access was last read; shared with the upkeep.
        self.verified = verified
        self._checks: dict[tuple[str, str], asyncio.Task[Checked]] = {}

    async def close(self) -> None:
        checks = list(self._checks.values())
        for task in checks:
            task.cancel()
        await asyncio.gather(*checks, return_exceptions=True)

    def verify_soon(self, node: NodeState) -> None:
        """Re-read a served node's access model in the background, before what is
        known of it expires, so that steady reads never wait for a check."""
        pubsub = self.component
        now = asyncio.get_running_loop().time()
        if now - self.verified.get(node.id, -OPEN_FOR) < OPEN_FOR / 2:
            return
        self.verified[node.id] = now
        pubsub._background.start(pubsub.synchroniser.verify(node))

    async def decide(
        self,
        iq: StanzaBase,
        kind: Kind,
        service: str,
        name: str,
        sync_as: str | None,
        answers: Callable[[NodeState], Awaitable[bool]],
    ) -> tuple[Action, NodeState | None]:
        """Gather what decide() needs, carry out its checks and comparisons, and
        return what it finally says (with the node as it is then).

        A check (shared per node) or a comparison (shared per node) runs at most
        once per request, so at most three decisions are made.
        """
        pubsub = self.component
        key = (service, name)
        pep = "@" in service
        privileged = pubsub.targeting.privileges_for(iq["from"], PUBSUB_NS, "get") is not None
        checked: Access | None = None
        comparison: Comparison = "done"
        for _ in range(3):
            node = pubsub.cache.node(service, name)
            cached = node is not None and node.serves_from_cache
            fits = cached and node is not None and await answers(node)
            node = pubsub.cache.node(service, name)  # as it is now, after any await
            cached = cached and node is not None and node.serves_from_cache
            now = asyncio.get_running_loop().time()
            access = checked or (None if pep else pubsub.open_nodes.known(key, now))
            if cached and node is not None and comparison == "done":
                due = pubsub.synchroniser.reconciler.due(node)
                if due == "now":
                    comparison = "due"
                elif due == "soon":
                    pubsub._background.start(
                        _quietly(pubsub.synchroniser.reconciler.comparing(node))
                    )
            action = decide(Situation(kind, cached, fits, access, comparison, pep, privileged))
            tracing.step("decided", name, action.name)
            if action is Action.CHECK_FIRST:
                checked, asked = await asyncio.shield(self.access_check(service, name, sync_as))
                if checked == "missing" and asked < now:
                    # Asked before this request came: the node may exist by now.
                    checked, _ = await self.check_access(service, name, sync_as)
                if node is not None:
                    self.verified[node.id] = asked
                tracing.step("checked", name, str(checked))
            elif action is Action.COMPARE_FIRST:
                assert node is not None
                try:
                    await asyncio.shield(pubsub.synchroniser.reconciler.comparing(node))
                    comparison = "done"
                except UpstreamError:
                    comparison = "failed"
                tracing.step("compared", name, comparison)
            else:
                if cached and node is not None and access in ("closed", "missing"):
                    pubsub._background.start(pubsub.synchroniser.verify(node))  # drops it
                elif action is Action.FROM_CACHE and node is not None:
                    self.verify_soon(node)
                elif not pep and pubsub.open_nodes.needs_refresh(key, now) and checked is None:
                    self.access_check(service, name, sync_as)  # for the next requests
                if node is not None:
                    pubsub.cache.requests.mark(node.id)
                return action, node
        raise AssertionError("decide() asked for more than one check and one comparison")

    def access_check(self, service: str, node: str, sync_as: str | None) -> asyncio.Task[Checked]:
        """The node's access check, shared by every request that arrives while it runs."""
        key = (service, node)
        task = self._checks.get(key)
        if task is None:
            task = asyncio.create_task(self.check_access(service, node, sync_as))
            self._checks[key] = task
            task.add_done_callback(lambda done: self._access_checked(key, done))
        return task

    def _access_checked(self, key: tuple[str, str], task: asyncio.Task[Checked]) -> None:
        self._checks.pop(key, None)
        failure = None if task.cancelled() else task.exception()
        if isinstance(failure, UpstreamError):
            log.debug("pubsub: cannot check %s/%s: %s", *key, failure.condition)
        elif failure is not None:
            log.error("pubsub: checking %s/%s failed", *key, exc_info=failure)

    async def check_access(self, service: str, node: str, sync_as: str | None) -> Checked:
        """Read the node's metadata as Herald: open, closed or missing (and note it),
        with the loop time the question was asked.

        A node a sync rule matches is offered to the synchroniser with what was read.
        """
        pubsub = self.component
        asked = asyncio.get_running_loop().time()
        meta = await pubsub.synchroniser.node_meta(service, node)
        if sync_as is not None:
            pubsub._background.start(pubsub.synchroniser.consider(service, node, sync_as, meta))
        return access_of(meta), asked


async def _quietly(task: asyncio.Task[None]) -> None:
    """Wait for a shared task whose failure its owner already reports."""
    with contextlib.suppress(Exception):
        await task
