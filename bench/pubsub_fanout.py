"""Local subscribers through Herald vs the same subscribers at the upstream service.

Run: .venv/bin/python -m bench.pubsub_fanout [--subscribers 1000] [--runs 3]

Two scenarios, each measured both ways in the same run, alternating:
  one-node:  N subscribers of one node, one publication;
  spread:    N subscribers spread as 100 nodes x N/100, one publication on every node.
"direct": the subscribers are subscribed at Prosody's own pubsub (pubsub-origin), which
fans out itself. "herald": the same number subscribed at the proxy (pubsub.localhost):
Herald holds one upstream subscription per node and fans each notification out.
"floor": the same number subscribed at a trivial component (bench/memory_component.py,
its own process) that holds one upstream subscription per node and splices each
notification's bytes into one copy per subscriber, with no XML tree and no database:
the floor for any component that fans out, which Herald's ratio is also given against
(the server must still parse every copy a component sends, which its own fan-out does
not).

Subscribers are JIDs of a counting sink component (sink.localhost, in Herald's
pubsub.local_domains), so 2 x N subscriptions cost one connection and both paths end at
the same receiver; the sink's clock says when the last notification arrived. Herald runs
as its own process (`herald run`), as in production. Upstream notifications: on the
direct path the sink counts what Prosody sent; through Herald, Herald's own metrics say
how many it received for its subscribers (fanned out - saved).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from slixmpp import ComponentXMPP

from component.config import Settings
from tests.harness.client import TestClient
from tests.harness.herald import spawn, toml_for
from tests.harness.ports import free_port
from tests.harness.prosody import ComponentSpec, Prosody

PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT = "http://jabber.org/protocol/pubsub#event"
PROXY, PROXY_SECRET = "pubsub.localhost", "proxy-secret"
UPSTREAM = "pubsub-origin.localhost"
SINK, SINK_SECRET = "sink.localhost", "sink-secret"
FLOOR, FLOOR_SECRET = "floor.localhost", "floor-secret"
PATHS = ("herald", "direct", "floor")
SUBSCRIBE_AT = {"herald": PROXY, "direct": UPSTREAM, "floor": FLOOR}
SPREAD_NODES = 100


class Sink(ComponentXMPP):
    """Subscribes its JIDs, and counts the pubsub notifications they receive."""

    def __init__(self, port: int) -> None:
        super().__init__(SINK, SINK_SECRET, "127.0.0.1", port, fix_error_ns=True)  # type: ignore[no-untyped-call]
        self.counts: dict[str, int] = {}
        self.expected = 0
        self.got = 0
        self.done = asyncio.Event()
        self.last_at = 0.0
        self.online = asyncio.Event()
        from slixmpp.xmlstream.handler import Callback
        from slixmpp.xmlstream.matcher import MatchXPath

        self.register_handler(
            Callback(
                "events",
                MatchXPath(f"{{jabber:component:accept}}message/{{{EVENT}}}event"),
                self._event,
            )
        )
        self.add_event_handler("session_start", lambda _e: self.online.set())

    def _event(self, msg: Any) -> None:
        sender = msg["from"].bare
        self.counts[sender] = self.counts.get(sender, 0) + 1
        if msg.xml.find(f"{{{EVENT}}}event/{{{EVENT}}}items/{{{EVENT}}}item") is None:
            return
        self.got += 1
        if self.got == self.expected:
            self.last_at = time.perf_counter()
            self.done.set()

    def arm(self, expected: int) -> None:
        self.counts, self.got, self.expected = {}, 0, expected
        self.done.clear()

    async def subscribe(self, jids: list[str], to: str, node: str) -> None:
        async def one(jid: str) -> None:
            iq = self.make_iq_set(ito=to, ifrom=jid)
            pubsub = ET.SubElement(iq.xml, f"{{{PUBSUB}}}pubsub")
            ET.SubElement(pubsub, f"{{{PUBSUB}}}subscribe", {"node": node, "jid": jid})
            await iq.send(timeout=30)

        for start in range(0, len(jids), 100):
            await asyncio.gather(*(one(j) for j in jids[start : start + 100]))


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


async def publish_all(owner: TestClient, nodes: list[str], tag: str) -> float:
    """Publish one item on each node; the time the first request left."""
    ps = owner.plugin["xep_0060"]
    start = time.perf_counter()
    payload = ET.Element("{urn:example:bench}entry")
    payload.text = "x" * 200
    await asyncio.gather(
        *(
            ps.publish(UPSTREAM, n, id=f"{tag}-{i}", payload=payload, timeout=60)
            for i, n in enumerate(nodes)
        )
    )
    return start


async def one_run(
    owner: TestClient,
    sink: Sink,
    nodes: list[str],
    expected: int,
    metrics_port: int,
    path: str,
    tag: str,
) -> tuple[float, int]:
    """Time to the last subscriber's notification, and what upstream sent for them."""
    fanned = metric(metrics_port, "herald_pubsub_notifications_fanned_out_total")
    saved = metric(metrics_port, "herald_pubsub_upstream_notifications_saved_total")
    sink.arm(expected)
    start = await publish_all(owner, nodes, tag)
    await asyncio.wait_for(sink.done.wait(), 120)
    elapsed = sink.last_at - start
    if path == "direct":
        return elapsed, sink.counts.get(UPSTREAM, 0)
    if path == "floor":
        return elapsed, len(nodes)  # one subscription per node, one notification each
    await asyncio.sleep(0.3)  # the metrics follow the last delivery
    fanned = metric(metrics_port, "herald_pubsub_notifications_fanned_out_total") - fanned
    saved = metric(metrics_port, "herald_pubsub_upstream_notifications_saved_total") - saved
    return elapsed, int(fanned - saved)


async def scenario(
    label: str,
    owner: TestClient,
    sink: Sink,
    per_node: int,
    node_count: int,
    runs: int,
    metrics_port: int,
    seq: list[int],
) -> float:
    total = per_node * node_count
    nodes: dict[str, list[str]] = {}
    form_owner = owner.plugin["xep_0004"]
    for path in PATHS:
        names = [f"{label}-{path[0]}-{i}" for i in range(node_count)]
        for name in names:
            form = form_owner.make_form(ftype="submit")
            form.add_field(
                var="FORM_TYPE",
                ftype="hidden",
                value="http://jabber.org/protocol/pubsub#node_config",
            )
            form.add_field(var="pubsub#access_model", value="open")
            await owner.plugin["xep_0060"].create_node(UPSTREAM, name, config=form, timeout=10)
            jids = [f"{label}{path[0]}{name.rsplit('-', 1)[1]}x{j}@{SINK}" for j in range(per_node)]
            await sink.subscribe(jids, SUBSCRIBE_AT[path], name)
        nodes[path] = names
    # warm-up, then alternate
    for path in PATHS:
        seq[0] += 1
        await one_run(owner, sink, nodes[path], total, metrics_port, path, f"w{seq[0]}")
    results: dict[str, list[tuple[float, int]]] = {path: [] for path in PATHS}
    for _ in range(runs):
        for path in PATHS:
            seq[0] += 1
            results[path].append(
                await one_run(owner, sink, nodes[path], total, metrics_port, path, f"r{seq[0]}")
            )
    med = {path: statistics.median(t for t, _ in r) for path, r in results.items()}
    sent = {path: statistics.median(n for _, n in r) for path, r in results.items()}
    print(
        f"\n== {label}: {node_count} node(s) x {per_node} subscribers, "
        f"one publication per node ({runs} runs, median) =="
    )
    print(f"{'path':<8} {'ms to last':>11} {'upstream notifications':>23}")
    for path in PATHS:
        print(f"{path:<8} {med[path] * 1000:>11.1f} {sent[path]:>23.0f}")
    ratio = med["herald"] / med["direct"]
    floor = med["floor"] / med["direct"]
    print(
        f"ratio    time herald/direct = {ratio:.2f}x (goal <= 1.2x); upstream sent "
        f"{sent['herald']:.0f} instead of {sent['direct']:.0f}"
    )
    print(
        f"floor    time floor/direct = {floor:.2f}x; herald/floor = "
        f"{med['herald'] / med['floor']:.2f}x"
    )
    return ratio


def spawn_floor(port: int, root: Path) -> subprocess.Popen[str]:
    """The floor component (bench/memory_component.py) as its own process, once ready."""
    empty = root / "empty.xml"
    empty.write_text("")
    floor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.memory_component",
            "--port",
            str(port),
            "--jid",
            FLOOR,
            "--secret",
            FLOOR_SECRET,
            "--payload",
            str(empty),
            "--upstream",
            UPSTREAM,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert floor.stdout is not None
    if floor.stdout.readline().strip() != "ready":
        raise RuntimeError("the floor component did not start")
    return floor


async def main(subscribers: int, runs: int) -> None:
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="herald-bench-") as tmp:
        root = Path(tmp)
        server = Prosody(
            root=root / "prosody",
            components=[
                ComponentSpec(PROXY, PROXY_SECRET),
                ComponentSpec(SINK, SINK_SECRET),
                ComponentSpec(FLOOR, FLOOR_SECRET),
            ],
            users={"olivia": "olivia"},
            pubsub_component=UPSTREAM,
            pubsub_admins=["olivia@localhost"],
        )
        server.start()
        herald = sink = owner = floor = None
        try:
            metrics_port = free_port()
            settings = Settings(
                server={"host": "127.0.0.1", "port": server.port_of(PROXY)},
                database={"url": f"sqlite+aiosqlite:///{root / 'herald.db'}"},
                metrics={"listen": f"127.0.0.1:{metrics_port}"},
                log={"level": "warning"},
                multicast={"enabled": False},
                pubsub={
                    "jid": PROXY,
                    "secret": PROXY_SECRET,
                    "upstream": UPSTREAM,
                    "local_domains": ["localhost", SINK],
                },
            )
            config = root / "herald.toml"
            config.write_text(toml_for(settings))
            herald = spawn(config, "run")
            floor = spawn_floor(server.port_of(FLOOR), root)
            sink = Sink(server.port_of(SINK))
            sink.connect()
            await asyncio.wait_for(sink.online.wait(), 10)
            owner = TestClient(
                "olivia@localhost/bench", "olivia", plugins=("xep_0030", "xep_0004", "xep_0060")
            )
            await owner.start(server.c2s_port)
            for _ in range(100):  # Herald is up once it answers disco
                with contextlib.suppress(Exception):
                    await owner.plugin["xep_0030"].get_info(jid=PROXY, timeout=1)
                    break
                await asyncio.sleep(0.1)
            seq = [0]
            one = await scenario("one", owner, sink, subscribers, 1, runs, metrics_port, seq)
            spread = await scenario(
                "spread",
                owner,
                sink,
                subscribers // SPREAD_NODES,
                SPREAD_NODES,
                runs,
                metrics_port,
                seq,
            )
            print(
                f"\nsummary: time herald/direct one-node {one:.2f}x, spread {spread:.2f}x "
                "(2 shared cores: compare ratios, not absolute times)"
            )
        finally:
            if owner is not None:
                await owner.stop()
            if sink is not None:
                await sink.disconnect(wait=1)
            if herald is not None:
                herald.terminate()
                herald.wait(10)
            if floor is not None:
                floor.terminate()
                floor.wait(10)
            server.stop()
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.subscribers, args.runs))
