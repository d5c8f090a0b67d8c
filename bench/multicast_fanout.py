"""One message to N local recipients: through Herald vs. the client sending N copies.

Run: .venv/bin/python -m bench.multicast_fanout [--sizes 10,100,1000] [--runs 3]

Herald runs as its own process (`herald run`), as in production. Recipients are N JIDs
served by a counting sink component (sink.localhost, listed in
Herald's local_domains), so both paths cross the same Prosody and end at the same
receiver; the sink's clock says when the last copy arrived. Each message carries one
bcc address per recipient (each copy then holds only its own bcc entry, as XEP-0033
requires), and the client-side copies carry the same per-recipient header, so the
recipients get identical stanzas either way.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from slixmpp import ComponentXMPP

from tests.harness.client import TestClient
from tests.harness.herald import settings_for, spawn, toml_for
from tests.harness.prosody import ComponentSpec, Prosody

NS = "http://jabber.org/protocol/address"
SINK, SINK_SECRET = "sink.localhost", "sink-secret"


class Sink(ComponentXMPP):
    """Counts messages; sets `done` when `expected` have arrived."""

    def __init__(self, port: int) -> None:
        super().__init__(SINK, SINK_SECRET, "127.0.0.1", port, fix_error_ns=True)  # type: ignore[no-untyped-call]
        self.count = 0
        self.expected = 0
        self.done = asyncio.Event()
        self.last_at = 0.0
        self.online = asyncio.Event()
        self.add_event_handler("message", self._message)
        self.add_event_handler("session_start", lambda _e: self.online.set())

    def _message(self, _msg: Any) -> None:
        self.count += 1
        if self.count == self.expected:
            self.last_at = time.perf_counter()
            self.done.set()

    def arm(self, expected: int) -> None:
        self.count, self.expected = 0, expected
        self.done.clear()


class CountingClient(TestClient):
    """A client that counts the bytes it writes."""

    sent_bytes = 0

    def send_raw(self, data: str | bytes) -> None:
        self.sent_bytes += len(data.encode() if isinstance(data, str) else data)
        super().send_raw(data)


def bcc_header(recipients: list[str]) -> ET.Element:
    header = ET.Element(f"{{{NS}}}addresses")
    for jid in recipients:
        ET.SubElement(header, f"{{{NS}}}address", {"type": "bcc", "jid": jid})
    return header


async def one_run(
    client: CountingClient, sink: Sink, n: int, via_herald: bool
) -> tuple[float, int]:
    recipients = [f"u{i}@{SINK}" for i in range(n)]
    sink.arm(n)
    before = client.sent_bytes
    start = time.perf_counter()
    if via_herald:
        msg = client.make_message(mto="multicast.localhost", mbody="x" * 100)
        msg.append(bcc_header(recipients))
        msg.send()
    else:
        for jid in recipients:
            msg = client.make_message(mto=jid, mbody="x" * 100)
            msg.append(bcc_header([jid]))
            msg.send()
    await asyncio.wait_for(sink.done.wait(), 120)
    return sink.last_at - start, client.sent_bytes - before


async def wait_for_component(client: CountingClient, prosody: Prosody) -> None:
    """Connect the client, then poll disco until Herald's multicast service answers."""
    await client.start(prosody.c2s_port)
    for _ in range(100):
        try:
            await client.plugin["xep_0030"].get_info(jid="multicast.localhost", timeout=1)
            return
        except Exception:
            await asyncio.sleep(0.1)
    raise RuntimeError("Herald did not come up")


async def main(sizes: list[int], runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prosody = Prosody(
            root=root / "prosody",
            components=[
                ComponentSpec("multicast.localhost", "mc", ["validate_from_addresses = false"]),
                ComponentSpec(SINK, SINK_SECRET),
            ],
            users={"alice": "alice"},
        )
        prosody.start()
        settings = settings_for(
            prosody,
            f"sqlite+aiosqlite:///{root / 'h.db'}",
            multicast={
                "secret": "mc",
                "local_domains": ["localhost", SINK],
                "max_recipients": max(sizes),
                "sender_mode": "trusted",
                "rate_limit": 0,
            },
            pubsub={"enabled": False},
            metrics={"listen": ""},
            log={"level": "warning"},
        )
        config = root / "herald.toml"
        config.write_text(toml_for(settings))
        herald = spawn(config, "run")
        sink = Sink(prosody.component_port)
        client = CountingClient("alice@localhost/bench", "alice")
        try:
            sink.connect()
            await asyncio.wait_for(sink.online.wait(), 10)
            await wait_for_component(client, prosody)
            await one_run(client, sink, 10, True)  # warm-up
            await one_run(client, sink, 10, False)
            print(f"{'N':>6} {'path':<8} {'ms to last':>11} {'deliv/s':>9} {'client bytes':>13}")
            for n in sizes:
                results: dict[bool, list[tuple[float, int]]] = {True: [], False: []}
                for _ in range(runs):
                    for via in (True, False):
                        results[via].append(await one_run(client, sink, n, via))
                med = {
                    via: (statistics.median(t for t, _ in r), r[0][1]) for via, r in results.items()
                }
                for via, label in ((True, "herald"), (False, "client")):
                    t, b = med[via]
                    print(f"{n:>6} {label:<8} {t * 1000:>11.1f} {n / t:>9.0f} {b:>13}")
                ratio_t = med[True][0] / med[False][0]
                ratio_b = med[True][1] / med[False][1]
                print(
                    f"{n:>6} ratio    time herald/client = {ratio_t:.2f}x   "
                    f"bytes herald/client = {ratio_b:.4f} (1/N = {1 / n:.4f})"
                )
        finally:
            await client.stop()
            await sink.disconnect(wait=1)
            herald.terminate()
            herald.wait(10)
            prosody.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main([int(s) for s in args.sizes.split(",")], args.runs))
