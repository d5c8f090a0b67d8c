"""A 20-item page of an open pubsub node: Herald (hit and miss) vs. the server's own pubsub
vs. a memory component, on Prosody and on ejabberd.

Run:
    .venv/bin/python -m bench.pubsub_items
        [--server prosody|ejabberd|both] [--requests 2000] [--warmup 200] [--runs 3]
        [--inflight 16] [--seq-requests 400]
        [--profile DIR]  # then sample Herald with py-spy (pip install py-spy) on hit and miss

Everything runs on loopback in a temporary directory and stops by itself (about
2 minutes on Prosody and 1 on ejabberd with the defaults, 30 s more each with --profile).
`--server both` (the default) measures Prosody, then ejabberd, each with a fresh Herald,
and prints each server's table and ratios, then the goal ratios side by side. Processes,
per server: a throwaway server (tests/conftest.py's standard_prosody or standard_ejabberd,
plus one more component), Herald as `herald run -c FILE` (tests/harness/herald.spawn), the
memory component (bench/memory_component.py) and this process, which is the load
generator (bench/rawclient.py: a stdlib c2s client, plaintext SASL PLAIN, which both
servers accept as the harness configures them; requests matched to replies by id). All
share the machine's cores.

Setup: olivia (an admin of Prosody's pubsub; on ejabberd, where anyone may create nodes,
their owner) creates on pubsub-origin.localhost two open nodes of 100 Atom entries each
(~200-byte payloads, pubsub#max_items 1000): `blog-bench`, which Herald's rule `blog*`
syncs, and `feed-bench`, which no rule matches; and `small-bench` holding just the 20
items of the page. The request is always an items request with max_items=20, from
alice, so each reply carries the newest 20 items (~4.7 KB).

Paths (SERVER is `prosody` or `ejabberd`):
  SERVER    The server's own pubsub, directly: to pubsub-origin.localhost, node blog-bench.
  SERVER-20  For reference: the same page from a node holding only those 20 items.
            Prosody 0.12's internal store reads the whole node on every request, so its
            cost grows with the node (about 600 req/s at 20 items, 300 at 100, 140 at 300).
  hit       Herald on a cache hit: to pubsub.localhost (the proxy), node blog-bench, once
            its sync has completed. Checked with Herald's /metrics: every request must add
            one to herald_pubsub_requests_total{kind="items",result="hit"} (and the
            node's first read, which starts the sync, must have added one to "miss").
  memory    The ceiling for any component: mem.localhost, a raw XEP-0114 component in its
            own process, answering with a pre-serialized copy of the same page.
  miss      Herald on a miss: to pubsub.localhost, node feed-bench, which no rule syncs.
            Checked: each request adds one to result="bypass" (no rule matches; "miss" is
            only for a node a sync rule matches, before its sync).
            Herald reads the node's metadata (disco#info, as itself) at most every 2.5 s;
            while it last read open (within 5 s), each request is forwarded upstream as
            Herald itself. Before that, on Prosody a request goes as alice through a
            XEP-0356 privileged IQ; on ejabberd 23.01, which grants no IQ permission, it
            waits for the metadata. So after the warm-up every measured request takes
            the route of floor-self.
  miss-20   For reference: the miss path on small-bench (no rule syncs it either),
            compared with SERVER-20: on Prosody the page is cheaper there, so the fixed
            cost of the extra hops weighs more; floor-self-20 is floor-self on that
            node. (Half the requests each.)
  floor-self  The floor for any proxy on that route: the raw component of `memory`,
            addressed as self@mem.localhost, forwards each request as itself and
            relays the reply's bytes without re-serializing. (Measured with half the
            requests, to keep the run short.)
  floor-priv  (Prosody) The floor for a node's first reads, before its metadata is
            known: the raw component, addressed as user@mem.localhost, forwards each
            request as alice through a XEP-0356 privileged IQ and relays the reply's
            bytes. Not on ejabberd, which has no IQ permission.
  floor-check  (ejabberd) The floor for checking the node on every request instead: the
            raw component, addressed as check@mem.localhost, asks for the node's
            disco#info as itself, and if the node is open forwards the request as
            itself and relays the reply's bytes. (Half the requests at 16 in flight.)
  *-seq     The same, one request in flight: latency without queueing. SERVER-seq reads
            feed-bench directly, the node that miss-seq and the floors read via a component.

Each scenario is measured --runs times, interleaved (the order rotates every round), and
the run with the median throughput is shown. CPU columns are milliseconds of CPU per
request (utime+stime from /proc) for the server (Prosody's process, ejabberd's beam.smp),
the component process and this client; bytes is what the client received per reply
(ejabberd adds an RSM <set/> to its own replies). A path that fails, or a hit/miss that
Herald's metrics do not confirm, stops the run with an error.

ejabberd runs with Erlang's defaults, whose schedulers busy-wait for work: its CPU column
includes that spinning, and on a small machine its sequential paths vary more from run
to run than Prosody's (turning busy-waiting off, +sbwt none, made ejabberd itself about
4 times slower here, so it is left on).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

from slixmpp.xmlstream.tostring import tostring

from bench.rawclient import LoadResult, RawClient, XmppError
from tests.conftest import (
    OWNER,
    PROXY_JID,
    UPSTREAM_JID,
    USERS,
    standard_ejabberd,
    standard_prosody,
)
from tests.harness.ejabberd import Ejabberd
from tests.harness.herald import settings_for, spawn, toml_for
from tests.harness.ports import free_port
from tests.harness.prosody import ComponentSpec, Prosody

PUBSUB = "http://jabber.org/protocol/pubsub"
RSM = "http://jabber.org/protocol/rsm"
ATOM = "http://www.w3.org/2005/Atom"
MEM_JID, MEM_SECRET = "mem.localhost", "mem-secret"
# see bench/memory_component.py
FLOOR_SELF, FLOOR_USER, FLOOR_CHECK = f"self@{MEM_JID}", f"user@{MEM_JID}", f"check@{MEM_JID}"
HIT_NODE, MISS_NODE, SMALL_NODE = "blog-bench", "feed-bench", "small-bench"
NODE_ITEMS, PAGE = 100, 20
REQUESTER = "alice"
TICK = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parent.parent
SERVERS = ("prosody", "ejabberd")
Server = Prosody | Ejabberd

GOALS = (
    # (label, with SERVER for the server's name; value key, comparison, goal)
    ("hit req/s / SERVER req/s", "hit_vs_server_rate", ">=", 1.5),
    ("hit req/s / memory req/s", "hit_vs_memory_rate", ">=", 0.8),
    ("hit p99 / SERVER p99", "hit_vs_server_p99", "<=", 1.0),
    ("miss p50 / SERVER p50 (16 in flight)", "miss_vs_server_p50", "<=", 1.3),
    ("miss p50 / SERVER p50 (sequential)", "miss_vs_server_p50_seq", "<=", 1.3),
)


def entry(i: int) -> str:
    """An Atom entry of about 200 bytes."""
    head = (
        f'<entry xmlns="{ATOM}"><title>Post {i:03d}</title>'
        f"<id>tag:localhost,2024:bench-{i:03d}</id>"
        f"<updated>2024-01-01T00:{i // 60:02d}:{i % 60:02d}Z</updated><content>"
    )
    tail = "</content></entry>"
    body = f"Body of post {i:03d}. " + "lorem ipsum " * 20
    return head + body[: 200 - len(head) - len(tail)] + tail


def items_request(to: str, node: str) -> str:
    return (
        f"<iq type='get' id='{{id}}' to='{to}'><pubsub xmlns='{PUBSUB}'>"
        f"<items node='{node}' max_items='{PAGE}'/></pubsub></iq>"
    )


def item_ids(reply: ET.Element) -> list[str]:
    return [i.get("id", "") for i in reply.iter(f"{{{PUBSUB}}}item")]


# -- processes ------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float:
    """utime+stime of a process, in seconds (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of stat


def beam_pid(node: str, timeout: float = 10.0) -> int | None:
    """The pid of the beam.smp running the Erlang node (ejabberdctl starts it via su)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry_ in Path("/proc").iterdir():
            if not entry_.name.isdigit():
                continue
            try:
                argv = (entry_ / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"beam.smp") and node.encode() in argv:
                return int(entry_.name)
        time.sleep(0.1)
    return None


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


class Drain:
    """Reads a child's pipe in a thread so it can never block on a full pipe."""

    def __init__(self, stream: object) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line.rstrip())

    def tail(self) -> str:
        return "\n".join(self.lines)


class Metrics:
    """Scrapes Herald's /metrics."""

    SAMPLE = re.compile(r"^(\w+)\{([^}]*)\}\s+(\S+)$")

    def __init__(self, listen: str) -> None:
        self.url = f"http://{listen}/metrics"

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        with urllib.request.urlopen(self.url, timeout=5) as response:
            text = response.read().decode()
        samples = {}
        for line in text.splitlines():
            found = self.SAMPLE.match(line)
            if found:
                labels = frozenset(re.findall(r'(\w+)="([^"]*)"', found.group(2)))
                samples[(found.group(1), labels)] = float(found.group(3))
        return samples

    def requests(self) -> dict[str, float]:
        """herald_pubsub_requests_total{kind="items"} by result."""
        out = {}
        for (name, labels), value in self.scrape().items():
            label = dict(labels)
            if name == "herald_pubsub_requests_total" and label.get("kind") == "items":
                out[label["result"]] = value
        return out

    def connected(self) -> bool:
        try:
            samples = self.scrape()
        except OSError:
            return False
        key = ("herald_component_connected", frozenset({("service", "pubsub")}))
        return samples.get(key) == 1.0


# -- scenarios ------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    to: str
    node: str
    inflight: int
    component: str | None  # process whose CPU counts as "component"
    counts_as: str | None = None  # the metrics result each request must add to
    scale: float = 1.0  # of --requests (or --seq-requests), to keep slow paths short
    runs: list[LoadResult] = field(default_factory=list)
    counted: list[dict[str, float]] = field(default_factory=list)

    def median_run(self) -> LoadResult:
        ordered = sorted(self.runs, key=lambda r: r.rate)
        return ordered[(len(ordered) - 1) // 2]


class Bench:
    def __init__(self, args: argparse.Namespace, root: Path, server_name: str) -> None:
        self.args = args
        self.root = root
        self.server_name = server_name
        self.server: Server | None = None
        self.herald: subprocess.Popen[str] | None = None
        self.herald_log: Drain | None = None
        self.memory: subprocess.Popen[str] | None = None
        self.memory_log: Drain | None = None
        self.metrics: Metrics | None = None
        self.client: RawClient | None = None
        self.pids: dict[str, int | None] = {}

    # -- setup -------------------------------------------------------------------------

    def _make_server(self) -> Server:
        """The shared test topology, plus the memory component, with olivia and alice."""
        users = {name: USERS[name] for name in ("olivia", REQUESTER)}
        root = self.root / self.server_name
        if self.server_name == "ejabberd":
            ejabberd = standard_ejabberd(root)
            # a listener of its own; checked: it only ever sends as mem.localhost
            ejabberd.checked_components[MEM_JID] = MEM_SECRET
            ejabberd.ports[MEM_JID] = free_port()
            ejabberd.users = users
            return ejabberd
        prosody = standard_prosody(root)
        prosody.components.append(
            ComponentSpec(MEM_JID, MEM_SECRET, ['modules_enabled = { "privilege" }'])
        )
        # the raw component may forward as users too, like Herald (the miss-path floor)
        at = prosody.host_options.index("privileged_entities = {") + 1
        prosody.host_options.insert(
            at, f'  ["{MEM_JID}"] = {{ iq = {{ ["{PUBSUB}"] = "both"; }} }};'
        )
        prosody.users = users
        return prosody

    async def start(self) -> None:
        began = time.perf_counter()
        server = self._make_server()
        server.start()
        self.server = server
        assert server.process is not None
        if isinstance(server, Ejabberd):
            self.pids["server"] = beam_pid(server.node)
            if self.pids["server"] is None:
                raise RuntimeError(f"no beam.smp found for {server.node}")
        else:
            self.pids["server"] = server.process.pid

        owner = RawClient(f"{OWNER}/setup", USERS["olivia"])
        await owner.login("127.0.0.1", server.c2s_port)
        for node in (HIT_NODE, MISS_NODE):
            await self._create_node(owner, node, NODE_ITEMS)
        await self._create_node(owner, SMALL_NODE, PAGE)
        await owner.close()

        self.client = RawClient(f"{REQUESTER}@localhost/bench", USERS[REQUESTER])
        await self.client.login("127.0.0.1", server.c2s_port)
        direct = await self.client.iq(items_request(UPSTREAM_JID, HIT_NODE))
        expected = [f"item-{i:03d}" for i in range(NODE_ITEMS - PAGE, NODE_ITEMS)]
        if item_ids(direct) != expected:
            raise RuntimeError(f"upstream page is {item_ids(direct)}, expected {expected}")

        self._start_herald(server)
        self._spawn_memory(server, direct)
        await self._memory_ready()
        await self._herald_ready()
        # every path returns the same page
        for to in (PROXY_JID, MEM_JID):
            reply = await self.client.iq(items_request(to, HIT_NODE))
            if item_ids(reply) != expected:
                raise RuntimeError(f"{to} answered {item_ids(reply)}, expected {expected}")
        floors = (FLOOR_USER,) if server.grants_iq_privileges else (FLOOR_CHECK,)
        for to, node in (
            (PROXY_JID, MISS_NODE),
            (UPSTREAM_JID, SMALL_NODE),
            (PROXY_JID, SMALL_NODE),
            (FLOOR_SELF, MISS_NODE),
            (FLOOR_SELF, SMALL_NODE),
            *((floor, MISS_NODE) for floor in floors),
        ):
            reply = await self.client.iq(items_request(to, node))
            if item_ids(reply) != expected:
                raise RuntimeError(f"{to} {node} answered {item_ids(reply)}")
        print(f"{self.server_name} setup: {time.perf_counter() - began:.1f} s", flush=True)

    async def _create_node(self, owner: RawClient, node: str, items: int) -> None:
        fields = {
            "FORM_TYPE": "http://jabber.org/protocol/pubsub#node_config",
            "pubsub#access_model": "open",
            "pubsub#max_items": "1000",
        }
        form = "".join(
            f"<field var='{var}'><value>{value}</value></field>" for var, value in fields.items()
        )
        await owner.iq(
            f"<iq type='set' id='{{id}}' to='{UPSTREAM_JID}'><pubsub xmlns='{PUBSUB}'>"
            f"<create node='{node}'/><configure><x xmlns='jabber:x:data' type='submit'>"
            f"{form}</x></configure></pubsub></iq>"
        )
        for i in range(NODE_ITEMS - items, NODE_ITEMS):
            await owner.iq(
                f"<iq type='set' id='{{id}}' to='{UPSTREAM_JID}'><pubsub xmlns='{PUBSUB}'>"
                f"<publish node='{node}'><item id='item-{i:03d}'>{entry(i)}</item></publish>"
                "</pubsub></iq>"
            )

    def _start_herald(self, server: Server) -> None:
        settings = settings_for(
            server,
            f"sqlite+aiosqlite:///{self.root / 'herald.db'}",
            multicast={"enabled": False},
            pubsub={
                "rules": [{"node": "blog*", "sync": True, "parser": "atom"}],
                "max_items_per_node": 1000,
            },
            log={"level": "warning"},
        )
        config = self.root / "herald.toml"
        config.write_text(toml_for(settings))
        self.herald = spawn(config, "run")
        self.herald_log = Drain(self.herald.stderr)
        Drain(self.herald.stdout)
        self.pids["herald"] = self.herald.pid
        self.metrics = Metrics(settings.metrics.listen)

    def _spawn_memory(self, server: Server, page: ET.Element) -> None:
        pubsub = page.find(f"{{{PUBSUB}}}pubsub")
        assert pubsub is not None
        for rsm in pubsub.findall(f"{{{RSM}}}set"):  # ejabberd's; Herald's hit has none
            pubsub.remove(rsm)
        payload = self.root / "page.xml"
        payload.write_text(tostring(pubsub))
        self.memory = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.memory_component",
                "--port",
                str(server.port_of(MEM_JID)),
                "--jid",
                MEM_JID,
                "--secret",
                MEM_SECRET,
                "--payload",
                str(payload),
                "--upstream",
                UPSTREAM_JID,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
        )
        self.memory_log = Drain(self.memory.stdout)
        self.pids["memory"] = self.memory.pid

    async def _memory_ready(self) -> None:
        assert self.memory is not None
        assert self.memory_log is not None
        for _ in range(100):
            if "ready" in self.memory_log.lines:
                return
            if self.memory.poll() is not None:
                break
            await asyncio.sleep(0.05)
        raise RuntimeError(f"memory component did not start:\n{self.memory_log.tail()}")

    async def _herald_ready(self) -> None:
        """Herald connected, the miss path working, and blog-bench synced (a hit)."""
        assert self.metrics is not None
        assert self.client is not None
        assert self.herald is not None
        deadline = time.monotonic() + 20
        while not self.metrics.connected():
            if self.herald.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Herald did not connect:\n{self._herald_tail()}")
            await asyncio.sleep(0.1)
        # On Prosody the privilege advertisement follows the handshake: the miss path
        # works once it came. On ejabberd Herald reads open nodes as itself at once.
        while True:
            before = self.metrics.requests()
            reply = await self.client.iq(items_request(PROXY_JID, MISS_NODE), check=False)
            after = self.metrics.requests()
            if reply.get("type") == "result" and after.get("bypass", 0) > before.get("bypass", 0):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the miss path does not work: {ET.tostring(reply)!r}")
            await asyncio.sleep(0.1)
        # The first read of blog-bench is a miss that starts its sync; then it must hit.
        first = True
        while True:
            before = self.metrics.requests()
            await self.client.iq(items_request(PROXY_JID, HIT_NODE))
            after = self.metrics.requests()
            if first and after.get("miss", 0) != before.get("miss", 0) + 1:
                raise RuntimeError(f"the first read of {HIT_NODE} was no miss: {after}")
            first = False
            if after.get("hit", 0) > before.get("hit", 0):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"blog-bench never became a hit:\n{self._herald_tail()}")
            await asyncio.sleep(0.1)

    def _herald_tail(self) -> str:
        return self.herald_log.tail() if self.herald_log else ""

    # -- measuring ---------------------------------------------------------------------

    async def measure(self, scenario: Scenario, count: int, warmup: int) -> LoadResult:
        assert self.client is not None
        assert self.metrics is not None
        template = items_request(scenario.to, scenario.node)
        if warmup:
            await self.client.load(template, warmup, scenario.inflight)
        before = self.metrics.requests() if scenario.counts_as else {}
        cpu_before = self._cpu(scenario)
        result = await self.client.load(template, count, scenario.inflight, timeout=120)
        cpu_after = self._cpu(scenario)
        result.cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_before}
        if result.errors:
            raise XmppError(f"{scenario.name}: {result.errors} errors, first: {result.first_error}")
        if scenario.counts_as:
            after = self.metrics.requests()
            delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            if delta.get(scenario.counts_as) != count:
                raise RuntimeError(
                    f"{scenario.name}: expected {count} {scenario.counts_as}: {delta}"
                )
            scenario.counted.append(delta)
        scenario.runs.append(result)
        return result

    def _cpu(self, scenario: Scenario) -> dict[str, float]:
        component = self.pids.get(scenario.component) if scenario.component else None
        return {
            "server": cpu_seconds(self.pids.get("server")),
            "component": cpu_seconds(component),
            "client": self_cpu(),
        }

    async def profile(self, directory: Path, scenarios: list[tuple[Scenario, int]]) -> None:
        """Sample Herald with py-spy (on-CPU samples only) while it serves each scenario."""
        spy = find_py_spy(directory)
        if spy is None:
            print("profile: py-spy is not installed; skipped")
            return
        assert self.client is not None
        assert self.herald is not None
        for scenario, count in scenarios:
            out = directory / f"herald-{scenario.name}.txt"
            spy_proc = await asyncio.create_subprocess_exec(
                spy, "record", "--pid", str(self.herald.pid), "--rate", "1000", "--format",
                "raw", "--nonblocking", "--output", str(out),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            await asyncio.sleep(1.0)  # let py-spy attach
            template = items_request(scenario.to, scenario.node)
            result = await self.client.load(template, count, scenario.inflight, timeout=120)
            spy_proc.send_signal(2)  # SIGINT: py-spy writes its output and exits
            _, err = await asyncio.wait_for(spy_proc.communicate(), 30)
            print(f"\nprofile of Herald, {scenario.name} ({result.rate:.0f} req/s under py-spy):")
            if not out.exists():
                print(f"  py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")
                continue
            summarise_profile(out)

    # -- teardown ----------------------------------------------------------------------

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
        for proc in (self.memory, self.herald):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    await asyncio.to_thread(proc.wait, 10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        if self.server is not None:
            self.server.stop()


def find_py_spy(directory: Path) -> str | None:
    """py-spy's path (next to this Python or on PATH); creates the output directory."""
    beside = Path(sys.executable).parent / "py-spy"
    spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if spy is not None:
        directory.mkdir(parents=True, exist_ok=True)
    return spy


def summarise_profile(path: Path, top: int = 18) -> None:
    """Self and inclusive sample shares per function, from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [re.sub(r" \((.*/)?([^/]+)\)$", r" (\2)", f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        print("  no samples")
        return
    print(f"  {total} samples; self time:")
    for frame, count in own.most_common(top):
        print(f"    {100 * count / total:5.1f}%  {frame}")
    print("  inclusive time:")
    for frame, count in inclusive.most_common(top + 12):
        print(f"    {100 * count / total:5.1f}%  {frame}")
    print(f"  (raw stacks: {path})")


def report(server: str, scenarios: list[Scenario]) -> dict[str, float]:
    """Print one server's table, its goal ratios and reference ratios; return the goals'."""
    print(f"\n== {server} ==")
    print(
        f"{'path':<15} {'in flight':>9} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'req/s over runs':>22} {'CPU ms/req server/comp/client':>30} {'bytes':>6}"
    )
    for s in scenarios:
        run = s.median_run()
        n = len(run.latencies)
        cpu = "/".join(
            f"{1000 * run.cpu[k] / n:.2f}" if k != "component" or s.component else "-"
            for k in ("server", "component", "client")
        )
        rates = ", ".join(f"{r.rate:.0f}" for r in s.runs)
        print(
            f"{s.name:<15} {s.inflight:>9} {run.rate:>7.0f} {run.percentile(50) * 1000:>7.2f}"
            f" {run.percentile(99) * 1000:>7.2f} {rates:>22} {cpu:>30} {run.reply_bytes:>6}"
        )
    spread = {s.name: max(r.rate for r in s.runs) / min(r.rate for r in s.runs) for s in scenarios}
    unstable = [f"{name} ({value:.2f}x)" for name, value in spread.items() if value > 1.3]
    if unstable:
        print(f"unstable (fastest run / slowest run > 1.3): {', '.join(unstable)}")
    by = {s.name: s.median_run() for s in scenarios}
    direct, direct_seq = by[server], by[f"{server}-seq"]

    def p50(name: str) -> float:
        return by[name].percentile(50)

    ratios = {
        "hit_vs_server_rate": by["hit"].rate / direct.rate,
        "hit_vs_memory_rate": by["hit"].rate / by["memory"].rate,
        "hit_vs_server_p99": by["hit"].percentile(99) / direct.percentile(99),
        "miss_vs_server_p50": p50("miss") / direct.percentile(50),
        "miss_vs_server_p50_seq": p50("miss-seq") / direct_seq.percentile(50),
    }
    print(f"\nratios on {server} (median runs) against the issue's goals:")
    for label, key, op, goal in GOALS:
        value = ratios[key]
        ok = value >= goal if op == ">=" else value <= goal
        text = label.replace("SERVER", server)
        print(f"  {text:<42} {value:6.2f}x   goal {op} {goal:g}x   {'met' if ok else 'NOT met'}")
    extra = {
        f"miss p99 / {server} p99 (sequential)": by["miss-seq"].percentile(99)
        / direct_seq.percentile(99),
        f"miss req/s / {server} req/s (16 in flight)": by["miss"].rate / direct.rate,
        f"memory req/s / {server} req/s": by["memory"].rate / direct.rate,
        "hit p50 / memory p50": p50("hit") / p50("memory"),
        f"hit req/s / {server}-20 req/s": by["hit"].rate / by[f"{server}-20"].rate,
        f"hit p99 / {server}-20 p99": by["hit"].percentile(99) / by[f"{server}-20"].percentile(99),
        f"miss-20 p50 / {server}-20 p50 (16)": p50("miss-20") / by[f"{server}-20"].percentile(50),
        f"floor-self-20 p50 / {server}-20 p50 (16)": p50("floor-self-20")
        / by[f"{server}-20"].percentile(50),
    }
    floor = "floor-priv" if "floor-priv" in by else "floor-check"
    extra.update(
        {
            f"{floor} p50 / {server} p50 (16)": p50(floor) / direct.percentile(50),
            f"{floor} p50 / {server} p50 (seq)": p50(f"{floor}-seq") / direct_seq.percentile(50),
            f"floor-self p50 / {server} p50 (16)": p50("floor-self") / direct.percentile(50),
            f"floor-self p50 / {server} p50 (seq)": p50("floor-self-seq")
            / direct_seq.percentile(50),
            "miss p50 / floor-self p50 (16)": p50("miss") / p50("floor-self"),
            "miss p50 / floor-self p50 (seq)": p50("miss-seq") / p50("floor-self-seq"),
        }
    )
    print("  for reference:")
    for label, value in extra.items():
        print(f"  {label:<42} {value:6.2f}x")
    checked = [s for s in scenarios if s.counts_as]
    for s in checked:
        total = {k: sum(d.get(k, 0) for d in s.counted) for k in ("hit", "miss", "bypass", "error")}
        print(f"  {s.name}: Herald's metrics over the measured runs: {total}")
    return ratios


def scenarios_for(server: str, privileged: bool, inflight: int) -> list[Scenario]:
    """The paths measured on one server; the miss-path floor depends on XEP-0356 IQs."""
    if privileged:
        floors = [
            Scenario("floor-priv", FLOOR_USER, MISS_NODE, inflight, "memory", scale=0.5),
            Scenario("floor-priv-seq", FLOOR_USER, MISS_NODE, 1, "memory"),
        ]
    else:
        floors = [
            Scenario("floor-check", FLOOR_CHECK, MISS_NODE, inflight, "memory", scale=0.5),
            Scenario("floor-check-seq", FLOOR_CHECK, MISS_NODE, 1, "memory"),
        ]
    return [
        Scenario(server, UPSTREAM_JID, HIT_NODE, inflight, None),
        Scenario("hit", PROXY_JID, HIT_NODE, inflight, "herald", "hit"),
        Scenario(f"{server}-20", UPSTREAM_JID, SMALL_NODE, inflight, None),
        Scenario("memory", MEM_JID, HIT_NODE, inflight, "memory"),
        Scenario("miss", PROXY_JID, MISS_NODE, inflight, "herald", "bypass"),
        Scenario("miss-20", PROXY_JID, SMALL_NODE, inflight, "herald", "bypass", scale=0.5),
        floors[0],
        Scenario("floor-self", FLOOR_SELF, MISS_NODE, inflight, "memory", scale=0.5),
        Scenario("floor-self-20", FLOOR_SELF, SMALL_NODE, inflight, "memory", scale=0.5),
        Scenario(f"{server}-seq", UPSTREAM_JID, MISS_NODE, 1, None),
        Scenario("miss-seq", PROXY_JID, MISS_NODE, 1, "herald", "bypass"),
        floors[1],
        Scenario("floor-self-seq", FLOOR_SELF, MISS_NODE, 1, "memory"),
        Scenario("hit-seq", PROXY_JID, HIT_NODE, 1, "herald", "hit"),
        Scenario("memory-seq", MEM_JID, HIT_NODE, 1, "memory"),
    ]


async def run_server(args: argparse.Namespace, server: str, root: Path) -> dict[str, float]:
    """Set up one server, measure every path on it, print its report."""
    began = time.perf_counter()
    bench = Bench(args, root, server)
    try:
        await bench.start()
        assert bench.server is not None
        scenarios = scenarios_for(server, bench.server.grants_iq_privileges, args.inflight)
        for round_no in range(args.runs):
            shift = round_no % len(scenarios)
            for s in scenarios[shift:] + scenarios[:shift]:
                seq = s.inflight == 1
                count = int(s.scale * (args.seq_requests if seq else args.requests))
                warmup = int(s.scale * (args.warmup // 4 if seq else args.warmup))
                await bench.measure(s, count, warmup)
            print(
                f"{server} round {round_no + 1}/{args.runs} done"
                f" ({time.perf_counter() - began:.0f} s)",
                flush=True,
            )
        ratios = report(server, scenarios)
        if args.profile:
            by_name = {s.name: s for s in scenarios}
            await bench.profile(
                Path(args.profile) / server, [(by_name["hit"], 6000), (by_name["miss"], 2000)]
            )
    except BaseException:
        print(f"Herald's log tail ({server}):\n{bench._herald_tail()}", file=sys.stderr)
        raise
    finally:
        await bench.stop()
    print(f"{server}: {time.perf_counter() - began:.0f} s", flush=True)
    return ratios


async def main(args: argparse.Namespace) -> None:
    servers = SERVERS if args.server == "both" else (args.server,)
    began = time.perf_counter()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="herald-bench-") as tmp:
        for server in servers:
            results[server] = await run_server(args, server, Path(tmp) / server)
    if len(results) > 1:
        print("\ngoal ratios side by side (each against its own server, same run):")
        print(f"  {'':<42} " + " ".join(f"{name:>9}" for name in results) + "   goal")
        for label, key, op, goal in GOALS:
            values = " ".join(f"{r[key]:>8.2f}x" for r in results.values())
            print(f"  {label:<42} {values}   {op} {goal:g}x")
    print(f"\ntotal {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--server", choices=[*SERVERS, "both"], default="both", help="default: both"
    )
    parser.add_argument("--requests", type=int, default=2000, help="per run, 16 in flight")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--inflight", type=int, default=16)
    parser.add_argument("--seq-requests", type=int, default=400, help="per sequential run")
    parser.add_argument("--profile", metavar="DIR", help="py-spy Herald afterwards")
    asyncio.run(main(parser.parse_args()))
