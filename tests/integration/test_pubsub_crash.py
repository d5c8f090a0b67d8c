"""`herald run` killed with SIGKILL during a resync, then started again (issue 12).

After each restart no read is ever answered from a stale or partial node, and hits
resume within seconds: the dead process's sync lease is taken over at once, and a
node the database calls completed is re-fetched before it is served.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from component.storage import pubsub_nodes, records
from component.storage.engine import create_engine, session_factory
from tests.conftest import UPSTREAM_JID
from tests.harness.herald import settings_for
from tests.harness.ports import free_port
from tests.harness.process import HeraldProcess
from tests.harness.prosody import Prosody
from tests.integration.test_faults import PUBSUB_PLUGINS, client
from tests.integration.test_pubsub_proxy import Owner, get_items, unique

pytestmark = pytest.mark.integration

ITEMS = 300
# Milliseconds after the new process takes the node's lease: at once (before the
# fetch), during the fetch of 300 items, and around the write that replaces them
# (the figures say in which state each kill found the node).
KILL_AFTER_MS = (0, 30, 120, 300)


@pytest.fixture
async def people(prosody: Prosody) -> AsyncIterator[dict[str, Any]]:
    made = {
        "olivia": await client(prosody, "olivia", PUBSUB_PLUGINS),
        "alice": await client(prosody, "alice", PUBSUB_PLUGINS),
    }
    yield made
    for each in made.values():
        await each.stop()


async def test_sigkill_at_each_step_of_a_resync(
    prosody: Prosody, db_url: str, people: dict[str, Any], tmp_path: Path
) -> None:
    settings = settings_for(
        prosody,
        db_url,
        multicast={"enabled": False},
        pubsub={"rules": [{"node": "blog*", "sync": True}], "max_items_per_node": 1000},
        metrics={"listen": f"127.0.0.1:{free_port()}"},
    )
    herald = HeraldProcess(settings, tmp_path)
    engine = create_engine(db_url)
    sessions = session_factory(engine)
    owner, alice = Owner(people["olivia"]), people["alice"]
    node = unique("blog-crash")
    await owner.create(node, items=ITEMS)

    async def record() -> records.NodeRecord | None:
        async with sessions() as session:
            return await pubsub_nodes.get_node(session, UPSTREAM_JID, node)

    async def upstream() -> list[str]:
        found = await owner.ps.get_items(UPSTREAM_JID, node, timeout=5)
        return [i["id"] for i in found["pubsub"]["items"]]

    async def synced_in_db() -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            found = await record()
            if found is not None and found.sync_state == "completed" and not found.sync_owner:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"not synced: {await record()}\n{herald.log()}")

    figures = []
    try:
        herald.start()
        await herald.wait_healthy()
        await get_items(alice, node)  # the miss that starts caching it
        await synced_in_db()
        for n, delay_ms in enumerate(KILL_AFTER_MS):
            # Stale the cache: changes made while Herald is away are never notified.
            herald.stop()
            await owner.publish(node, f"while-down-{n}", f"missed {n}")
            await owner.ps.retract(UPSTREAM_JID, node, f"item-{n:03d}", notify=True, timeout=5)
            herald.start()
            deadline = time.monotonic() + 15
            while (found := await record()) is None or not found.sync_owner:
                assert time.monotonic() < deadline, f"no resync started\n{herald.log()}"
                await asyncio.sleep(0.001)
            await asyncio.sleep(delay_ms / 1000)
            at_kill = await record()
            assert herald.process is not None
            herald.process.send_signal(signal.SIGKILL)
            herald.process.wait(5)
            herald.process = None

            expected = await upstream()
            herald.start()
            await herald.wait_healthy()
            started = time.monotonic()
            hits0 = await herald.sample(
                "herald_pubsub_requests_total", {"kind": "items", "result": "hit"}
            )
            reads = wrong = 0
            while True:
                got, _, _ = await get_items(alice, node)
                reads += 1
                wrong += got != expected
                hits = await herald.sample(
                    "herald_pubsub_requests_total", {"kind": "items", "result": "hit"}
                )
                if hits > hits0:
                    break
                assert time.monotonic() - started < 10, f"no hit within 10 s\n{herald.log()}"
            took = time.monotonic() - started
            state = "gone" if at_kill is None else at_kill.sync_state
            state += ", lease held" if at_kill and at_kill.sync_owner else ", lease released"
            figures.append(f"{delay_ms} ms ({state}): {reads} reads, {wrong} wrong, {took:.2f} s")
            assert wrong == 0, figures[-1]
    finally:
        herald.stop()
        await engine.dispose()
        print("\n[crash] SIGKILL after the lease was taken, then restart: " + "; ".join(figures))
