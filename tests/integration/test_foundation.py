"""Both services connect to a real Prosody, answer disco#info, and survive restarts."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from component.app import Herald
from tests.conftest import MULTICAST_JID, PROXY_JID, USERS
from tests.harness.client import TestClient
from tests.harness.herald import settings_for
from tests.harness.prosody import Prosody

pytestmark = pytest.mark.integration


@pytest.fixture
async def alice(prosody: Prosody) -> AsyncIterator[TestClient]:
    client = TestClient("alice@localhost/test", USERS["alice"])
    await client.start(prosody.c2s_port)
    yield client
    await client.stop()


async def started(herald: Herald, timeout: float = 10.0) -> Herald:
    await herald.start()
    await asyncio.wait_for(herald.wait_connected(), timeout)
    return herald


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def fetch(url: str) -> tuple[int, str]:
    return await asyncio.to_thread(http_get, url)


async def test_services_answer_disco_info(prosody: Prosody, alice: TestClient, db_url: str) -> None:
    herald = await started(Herald(settings_for(prosody, db_url)))
    try:
        info = await alice.plugin["xep_0030"].get_info(jid=MULTICAST_JID, timeout=5)
        identities = info["disco_info"]["identities"]
        assert ("service", "multicast", None, "Herald multicast") in identities
        assert "http://jabber.org/protocol/address" in info["disco_info"]["features"]

        # the proxy answers with its upstream's disco (a pubsub service), plus RSM
        info = await alice.plugin["xep_0030"].get_info(jid=PROXY_JID, timeout=5)
        identities = {(i[0], i[1]) for i in info["disco_info"]["identities"]}
        assert ("pubsub", "service") in identities
        assert "http://jabber.org/protocol/pubsub" in info["disco_info"]["features"]
        assert "http://jabber.org/protocol/pubsub#rsm" in info["disco_info"]["features"]

        # the server lists both services among its items
        items = await alice.plugin["xep_0030"].get_items(jid="localhost", timeout=5)
        jids = {item[0] for item in items["disco_items"]["items"]}
        assert {MULTICAST_JID, PROXY_JID} <= jids
    finally:
        await herald.stop()


async def test_reconnects_after_prosody_restart(own_prosody: Prosody, tmp_path: Path) -> None:
    herald = await started(
        Herald(settings_for(own_prosody, f"sqlite+aiosqlite:///{tmp_path}/h.db"))
    )
    assert herald.metrics_server is not None
    health = f"http://127.0.0.1:{herald.metrics_server.port}/healthz"
    exposition = f"http://127.0.0.1:{herald.metrics_server.port}/metrics"
    try:
        assert await fetch(health) == (200, "ok\n")
        reconnects_before = reconnects((await fetch(exposition))[1])
        await asyncio.to_thread(own_prosody.stop)
        await asyncio.wait_for(_all_down(herald), 10)
        status, body = await fetch(health)
        assert status == 503
        assert "multicast disconnected" in body
        assert "pubsub disconnected" in body

        await asyncio.sleep(2)  # down for a while: several failed attempts, backoff grows
        await asyncio.to_thread(own_prosody.start)
        restarted = time.monotonic()
        await asyncio.wait_for(herald.wait_connected(), 10)
        assert time.monotonic() - restarted < 10
        assert await fetch(health) == (200, "ok\n")

        client = TestClient("bob@localhost/t", USERS["bob"])
        await client.start(own_prosody.c2s_port)
        try:
            info = await client.plugin["xep_0030"].get_info(jid=MULTICAST_JID, timeout=5)
            assert "http://jabber.org/protocol/address" in info["disco_info"]["features"]
        finally:
            await client.stop()
        status, metrics = await fetch(exposition)
        assert 'herald_component_connected{service="pubsub"} 1.0' in metrics
        # the counters are process-wide: earlier tests moved them too
        moved = {
            service: count - reconnects_before[service]
            for service, count in reconnects(metrics).items()
        }
        assert moved == {"multicast": 1.0, "pubsub": 1.0}
    finally:
        await herald.stop()


def reconnects(exposition: str) -> dict[str, float]:
    """herald_component_reconnects_total by service, from a /metrics text."""
    found = re.findall(
        r'^herald_component_reconnects_total\{service="(\w+)"\} (\S+)$', exposition, re.MULTILINE
    )
    return {service: float(value) for service, value in found}


async def _all_down(herald: Herald) -> None:
    while any(s.connected_event.is_set() for s in herald.services):  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def test_metrics_port_in_use_is_a_clear_error(prosody: Prosody, tmp_path: Path) -> None:
    from component.app import StartupError

    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    settings = settings_for(
        prosody, f"sqlite+aiosqlite:///{tmp_path}/h.db", metrics={"listen": f"127.0.0.1:{port}"}
    )
    herald = Herald(settings)
    try:
        with pytest.raises(StartupError, match=f"metrics.listen '127.0.0.1:{port}'"):
            await herald.start()
    finally:
        await herald.stop()
        blocker.close()
