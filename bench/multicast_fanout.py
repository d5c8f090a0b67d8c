"""One message to N local recipients: through Herald vs. the client sending N copies.

Run: .venv/bin/python -m bench.multicast_fanout [--server prosody|ejabberd|both]
        [--sizes 10,100,1000] [--runs 3]

Herald runs as its own process (`herald run`), as in production. Recipients are N JIDs
served by a counting sink component (sink.localhost, listed in
Herald's local_domains), so both paths cross the same server and end at the same
receiver; the sink's clock says when the last copy arrived. Each message carries one
bcc address per recipient (each copy then holds only its own bcc entry, as XEP-0033
requires), and the client-side copies carry the same per-recipient header, so the
recipients get identical stanzas either way.

`--server both` (the default) runs everything on a throwaway Prosody, then on a
throwaway ejabberd, and prints a table for each. On both, Herald sends the copies as
alice in trusted mode (Prosody: validate_from_addresses = false; ejabberd: a listener
with check_from: false). ejabberd needs a listener per component: multicast.localhost
(trusted) and sink.localhost (checked: it never sends as anyone else) get one each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from slixmpp import JID, ComponentXMPP

from component.config import Settings
from tests.harness.client import TestClient
from tests.harness.ejabberd import Ejabberd
from tests.harness.herald import spawn, toml_for
from tests.harness.prosody import ComponentSpec, Prosody

NS = "http://jabber.org/protocol/address"
MULTICAST, MULTICAST_SECRET = "multicast.localhost", "mc"
SINK, SINK_SECRET = "sink.localhost", "sink-secret"
SERVERS = ("prosody", "ejabberd")
Server = Prosody | Ejabberd


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
        msg = client.make_message(mto=MULTICAST, mbody="x" * 100)
        msg.append(bcc_header(recipients))
        msg.send()
    else:
        for jid in recipients:
            msg = client.make_message(mto=jid, mbody="x" * 100)
            msg.append(bcc_header([jid]))
            msg.send()
    await asyncio.wait_for(sink.done.wait(), 120)
    return sink.last_at - start, client.sent_bytes - before


async def wait_for_component(client: CountingClient, server: Server) -> None:
    """Connect the client, then poll disco until Herald's multicast service answers."""
    await client.start(server.c2s_port)
    for _ in range(100):
        try:
            await client.plugin["xep_0030"].get_info(jid=JID(MULTICAST), timeout=1)
            return
        except Exception:
            await asyncio.sleep(0.1)
    raise RuntimeError("Herald did not come up")


def make_server(name: str, root: Path) -> Server:
    """The multicast component (trusted: it sends as alice), the sink, and alice."""
    if name == "ejabberd":
        return Ejabberd(
            root=root,
            trusted_components={MULTICAST: MULTICAST_SECRET},
            checked_components={SINK: SINK_SECRET},
            users={"alice": "alice"},
        )
    return Prosody(
        root=root,
        components=[
            ComponentSpec(MULTICAST, MULTICAST_SECRET, ["validate_from_addresses = false"]),
            ComponentSpec(SINK, SINK_SECRET),
        ],
        users={"alice": "alice"},
    )


async def run_server(name: str, root: Path, sizes: list[int], runs: int) -> dict[int, float]:
    """Measure every size on one server; print its table; return time ratios by N."""
    began = time.perf_counter()
    server = make_server(name, root / name)
    server.start()
    herald = None
    sink = None
    client = None
    ratios: dict[int, float] = {}
    try:
        # settings_for would ask ejabberd for a listener for the (disabled) pubsub proxy
        settings = Settings(
            server={"host": "127.0.0.1", "port": server.port_of(MULTICAST)},
            database={"url": f"sqlite+aiosqlite:///{root / f'{name}.db'}"},
            metrics={"listen": ""},
            log={"level": "warning"},
            multicast={
                "jid": MULTICAST,
                "secret": MULTICAST_SECRET,
                "port": server.port_of(MULTICAST),
                "local_domains": [server.domain, SINK],
                "max_recipients": max(sizes),
                "sender_mode": "trusted",
                "rate_limit": 0,
            },
            pubsub={"enabled": False},
        )
        config = root / f"{name}.toml"
        config.write_text(toml_for(settings))
        herald = spawn(config, "run")
        sink = Sink(server.port_of(SINK))
        client = CountingClient("alice@localhost/bench", "alice")
        sink.connect()
        await asyncio.wait_for(sink.online.wait(), 10)
        await wait_for_component(client, server)
        await one_run(client, sink, 10, True)  # warm-up
        await one_run(client, sink, 10, False)
        print(f"\n== {name} ==")
        print(f"{'N':>6} {'path':<8} {'ms to last':>11} {'deliv/s':>9} {'client bytes':>13}")
        for n in sizes:
            results: dict[bool, list[tuple[float, int]]] = {True: [], False: []}
            for _ in range(runs):
                for via in (True, False):
                    results[via].append(await one_run(client, sink, n, via))
            med = {via: (statistics.median(t for t, _ in r), r[0][1]) for via, r in results.items()}
            for via, label in ((True, "herald"), (False, "client")):
                t, b = med[via]
                print(f"{n:>6} {label:<8} {t * 1000:>11.1f} {n / t:>9.0f} {b:>13}")
            ratio_t = med[True][0] / med[False][0]
            ratio_b = med[True][1] / med[False][1]
            ratios[n] = ratio_t
            print(
                f"{n:>6} ratio    time herald/client = {ratio_t:.2f}x   "
                f"bytes herald/client = {ratio_b:.4f} (1/N = {1 / n:.4f})"
            )
    finally:
        if client is not None:
            await client.stop()
        if sink is not None:
            await sink.disconnect(wait=1)
        for stream in (client, sink):
            # slixmpp cancels its output-filter task only when the object is collected,
            # which, during the next server's run, prints "Task was destroyed"
            task = stream._run_out_filters if stream is not None else None
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if herald is not None:
            herald.terminate()
            herald.wait(10)
        server.stop()
    print(f"{name}: {time.perf_counter() - began:.0f} s")
    return ratios


async def main(sizes: list[int], runs: int, servers: tuple[str, ...]) -> None:
    began = time.perf_counter()
    results: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory(prefix="herald-bench-") as tmp:
        for name in servers:
            results[name] = await run_server(name, Path(tmp), sizes, runs)
    if len(results) > 1:
        print("\ntime to last copy, herald/client, side by side:")
        print(f"{'N':>6} " + " ".join(f"{name:>9}" for name in results))
        for n in sizes:
            print(f"{n:>6} " + " ".join(f"{r[n]:>8.2f}x" for r in results.values()))
    print(f"\ntotal {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--server", choices=[*SERVERS, "both"], default="both", help="default: both"
    )
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    servers = SERVERS if args.server == "both" else (args.server,)
    asyncio.run(main([int(s) for s in args.sizes.split(",")], args.runs, servers))
