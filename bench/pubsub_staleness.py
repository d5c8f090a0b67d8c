"""How stale can Herald's cache be? Upstream changes vs. what the proxy answers, and how
many notifications per second Herald applies, on Prosody and ejabberd, SQLite and PostgreSQL.

Run:
    .venv/bin/python -m bench.pubsub_staleness
        [--server prosody|ejabberd|both] [--db sqlite|postgresql|both]
        [--nodes 100] [--rate 100] [--changes 1000] [--rare 20] [--window 15]
        [--reconcile-interval 10] [--prosody-storage memory|internal]
        [--tp-nodes 20] [--tp-publishes 1500] [--publishers 4] [--tp-inflight 4]
        [--tp-rate 1000] [--tp-seconds 3] [--staleness-only] [--direct-poll]
        [--trace DIR]   (then: .venv/bin/python -m bench.staleness_trace DIR)

Everything runs on loopback in a temporary directory and stops by itself (about 5
minutes with the defaults for both servers and both databases). Processes, per server:
a throwaway server (tests/conftest.py's standard_prosody or standard_ejabberd); per
database, a fresh Herald (`herald run`, tests/harness/process.py) on a fresh SQLite file or
PostgreSQL database; and this process, the load generator (bench/rawclient.py). All share
the machine's cores. Herald's rule `blog*` (sync=true) caches the nodes named blog*.

Staleness. olivia, the nodes' owner, creates --nodes open nodes on pubsub-origin.localhost
(3 Atom entries each); bob subscribes to each of them directly upstream (the comparison),
and alice reads each once through the proxy, so Herald syncs them; the phase starts when
Herald's /metrics count them all completed and a read of each counts as a hit. Then
olivia makes --changes changes at --rate changes/s, each on a node with no change of its
own in flight, and of these kinds (--rare of each of the last four):
  publish         a new item: fresh once the proxy lists its id
  retract         an item, with notify='true': fresh once the proxy no longer lists it
  retract-silent  the same without notify (Prosody 0.12 then sends no notification;
                  ejabberd 23.01 still does)
  purge           fresh once the proxy answers the node with no items
  delete          fresh once the proxy answers an error (item-not-found); ejabberd
                  23.01 notifies no deletion by default (pubsub#notify_delete off)
  whitelist       access model open -> whitelist: fresh once the proxy stops serving the
                  items to alice, who is no member (an error, or no items)
From the moment olivia sends the change, alice polls that node through the proxy (one
request in flight per pending change: every --poll-ms for notified kinds, every 50 ms
for the others) until an answer is fresh, for at most --window seconds. The proxy's
figure is the arrival of the first fresh answer (so it includes one read's round trip).
The direct figure is the arrival of bob's notification of the same change, measured in
the same run; kinds upstream does not notify have none. With --direct-poll, carol
also reads each publication and retraction upstream directly, polled the same way at
the same time: the floor for any reader that polls (a push has no poll interval and
no read's round trip). Each figure is a change's own
time, from olivia's send: p50/p99/max over its changes, and how many never became fresh
within the window. The achieved rate is printed: it falls below --rate when every node
has a change in flight (a node whose proxy answer lags by seconds takes no new change;
nodes given a silent retraction, a deletion or a whitelist take none afterwards).
Herald runs with pubsub.reconcile_interval = --reconcile-interval, the bound for the
changes upstream does not notify. For whitelist the idle time before the change (since the proxy
last answered the node) is shown: the goal is never served past 5 s after any idle time.
Whitelist shows two figures: served after olivia's send of the configure, and served
after upstream's answer to it (its arrival here). The goal is judged on the second:
until upstream has applied the change it serves the items itself (a direct reader
would get them too), and under load upstream's own processing of the configure took
seconds (once 6.1 s from the send). What Herald controls starts when upstream has
applied the change; the answer's arrival is the first moment this process knows that.

Notification throughput. --publishers connections of olivia publish to --tp-nodes nodes,
round-robin, on two paths:
  ceiling  nodes named feed-*, which Herald does not cache, with a direct subscriber
           (carol): what the server alone delivers, and its lag (olivia's send of the
           publish -> carol's receipt of the notification)
  herald   cached blog-* nodes, with Herald alone subscribed: the lag is olivia's send
           -> the item's row in Herald's database (polled every 2 ms by a thread of this
           process; Herald writes the database before it serves from it)
each twice: flat out (--tp-publishes items, --tp-inflight in flight per publisher, as
fast as the server accepts them: the capacity), then paced (--tp-rate publications/s for
--tp-seconds, sent on time whatever the replies do). The goal (1,000/s applied with lag
p99 under 100 ms) is judged on the paced run at --tp-rate 1000: flat out, the lag is
the backlog of what the server accepts beyond what Herald applies, and it grows with
the run's length. "applied/s" is items over the time from the first send to the last
one seen. "herald cpu ms/item" is Herald's CPU time (user + system, from /proc) over the
phase per publication: unlike the rates, it holds on a loaded machine (in the ceiling
phases Herald sees none of the publications: what it costs to sit idle); "server cpu
ms/item" is the XMPP server's, likewise, "bench cpu" this process's and "pg cpu" all
the PostgreSQL processes' (PostgreSQL runs only; the machine's server is shared, so it
counts whatever else used it). "herald asked" counts the requests Herald sent
upstream during the phase (its eviction probes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

from sqlalchemy.engine import make_url

from bench.pubsub_items import entry, item_ids
from bench.rawclient import CLIENT_NS, RawClient
from component.config import PubsubSettings
from tests.conftest import (
    OWNER,
    POSTGRES_URL,
    PROXY_JID,
    UPSTREAM_JID,
    USERS,
    standard_ejabberd,
    standard_prosody,
)
from tests.harness.ejabberd import Ejabberd
from tests.harness.herald import settings_for
from tests.harness.process import HeraldProcess
from tests.harness.prosody import Prosody

PUBSUB = "http://jabber.org/protocol/pubsub"
OWNER_NS = f"{PUBSUB}#owner"
EVENT_NS = f"{PUBSUB}#event"
SERVERS, DBS = ("prosody", "ejabberd"), ("sqlite", "postgresql")
KINDS = ("publish", "retract", "retract-silent", "purge", "delete", "whitelist")
RARE = KINDS[2:]
NOTIFIED = {"publish", "retract", "purge", "delete"}  # polled fast; the others slowly
SLOW_POLL = 0.05
INITIAL_ITEMS = 3
READER = "alice"
Server = Prosody | Ejabberd
Seen = dict[tuple[str, str, str], float]  # (kind, node, item id) -> when first seen


def reconcile_setting(args: argparse.Namespace) -> dict[str, float]:
    """pubsub.reconcile_interval for Herald, where this build has it."""
    if "reconcile_interval" not in PubsubSettings.model_fields:
        return {}
    return {"reconcile_interval": args.reconcile_interval}


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (nan when empty)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1000:.1f}"


# -- stanzas ---------------------------------------------------------------------------


def iq(kind: str, ns: str, body: str) -> str:
    head = f"<iq type='{kind}' id='{{id}}' to='{UPSTREAM_JID}'>"
    return f"{head}<pubsub xmlns='{ns}'>{body}</pubsub></iq>"


def form(fields: dict[str, str]) -> str:
    inner = "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in fields.items())
    return (
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
        f"<value>{PUBSUB}#node_config</value></field>{inner}</x>"
    )


def create(node: str) -> str:
    config = form({"pubsub#access_model": "open", "pubsub#max_items": "1000"})
    return iq("set", PUBSUB, f"<create node='{node}'/><configure>{config}</configure>")


def publish(node: str, item: str, n: int) -> str:
    return iq(
        "set", PUBSUB, f"<publish node='{node}'><item id='{item}'>{entry(n)}</item></publish>"
    )


def retract(node: str, item: str, notify: bool) -> str:
    flag = " notify='true'" if notify else ""
    return iq("set", PUBSUB, f"<retract node='{node}'{flag}><item id='{item}'/></retract>")


def subscribe(node: str, jid: str) -> str:
    return iq("set", PUBSUB, f"<subscribe node='{node}' jid='{jid}'/>")


def owner_op(op: str, node: str) -> str:
    if op == "whitelist":
        config = form({"pubsub#access_model": "whitelist"})
        return iq("set", OWNER_NS, f"<configure node='{node}'>{config}</configure>")
    return iq("set", OWNER_NS, f"<{op} node='{node}'/>")


def read(node: str, to: str = PROXY_JID) -> str:
    return (
        f"<iq type='get' id='{{id}}' to='{to}'><pubsub xmlns='{PUBSUB}'>"
        f"<items node='{node}'/></pubsub></iq>"
    )


class Listener(RawClient):
    """A RawClient that hands every pubsub event to a callback, with its arrival time."""

    def __init__(self, jid: str, password: str, on_event: Callable[[ET.Element, float], None]):
        super().__init__(jid, password)
        self.on_event = on_event

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.bytes_in += len(data)
        for stanza in self.parser.feed(data):
            if stanza.tag == f"{{{CLIENT_NS}}}message":
                event = stanza.find(f"{{{EVENT_NS}}}event")
                if event is not None:
                    self.on_event(event, now)
                continue
            waiter = (
                self._waiters.pop(stanza.get("id", ""), None)
                if stanza.tag.endswith("}iq")
                else None
            )
            if waiter is not None:
                waiter(stanza)
            else:
                self._inbox.put_nowait(stanza)


def event_keys(event: ET.Element) -> list[tuple[str, str, str]]:
    """(kind, node, item id) for each change an <event/> announces."""
    keys = []
    for child in event:
        kind, node = child.tag.partition("}")[2], child.get("node", "")
        if kind == "items":
            for sub in child:
                tag = sub.tag.partition("}")[2]
                name = "publish" if tag == "item" else tag  # item or retract
                keys.append((name, node, sub.get("id", "")))
        else:
            keys.append((kind, node, ""))
    return keys


async def pipelined(client: RawClient, templates: list[str], window: int = 64) -> None:
    """Send IQs `window` at a time; any error stops the run."""
    for start in range(0, len(templates), window):
        await asyncio.gather(*(client.iq(t, timeout=30) for t in templates[start : start + window]))


# -- staleness -------------------------------------------------------------------------


@dataclass
class NodeState:
    name: str
    items: list[str]  # ids the proxy is known to list
    pending: bool = False  # a notified change in flight
    alive: bool = True
    last_read: float = 0.0  # when the proxy last answered it


@dataclass
class Change:
    kind: str
    node: NodeState
    item: str
    t0: float = 0.0
    proxy: float | None = None  # seconds to the first fresh answer
    direct: float | None = None
    idle: float = 0.0  # since the proxy last answered the node
    polls: int = 0
    polled: float | None = None  # seconds to a fresh answer read upstream directly
    failed: str | None = None
    acked: float | None = None  # seconds to upstream's answer to the change

    def after_ack(self) -> float | None:
        """Seconds from upstream's answer to the first fresh one (never below 0)."""
        if self.proxy is None or self.acked is None:
            return None
        return max(0.0, self.proxy - self.acked)

    def fresh(self, reply: ET.Element) -> bool:
        ok = reply.get("type") == "result"
        ids = item_ids(reply) if ok else []
        if self.kind == "publish":
            return self.item in ids
        if self.kind in ("retract", "retract-silent"):
            return ok and self.item not in ids
        if self.kind == "purge":
            return ok and not ids
        if self.kind == "delete":
            return reply.get("type") == "error"
        return not ids  # whitelist: an error, or nothing served


@dataclass
class Staleness:
    changes: list[Change] = field(default_factory=list)
    rate: float = 0.0
    hits: dict[str, float] = field(default_factory=dict)


@dataclass
class Throughput:
    sent: int = 0
    seen: int = 0
    accept_rate: float = 0.0  # publish replies/s
    applied_rate: float = 0.0
    lags: list[float] = field(default_factory=list)
    send_rate: float = math.nan  # publications sent/s (paced: what was kept of the rate)
    cpu: float = math.nan  # Herald's CPU seconds (user + system) over the phase
    server_cpu: float = math.nan  # the XMPP server's, likewise
    bench_cpu: float = math.nan  # this process's (the load generator and the watcher)
    db_cpu: float = math.nan  # PostgreSQL's, all its processes (nan on SQLite)
    upstream: float = math.nan  # requests Herald sent upstream over the phase
    # (kind, node, item) -> (sent, seen or None): for bench/staleness_trace.py
    times: dict[tuple[str, str, str], tuple[float, float | None]] = field(default_factory=dict)


class Run:
    """One server and one database: a fresh Herald, its nodes, both measurements."""

    def __init__(self, args: argparse.Namespace, server: Server, db: str, root: Path) -> None:
        self.args = args
        self.server = server
        self.db = db
        self.root = root
        self.tag = f"{db[:2]}{uuid.uuid4().hex[:4]}"
        self.arrivals: dict[tuple[str, str, str], float] = {}
        self.direct_reader: RawClient | None = None  # --direct-poll
        self.herald: HeraldProcess | None = None
        self.db_url = ""
        self.db_name = ""
        self.clients: list[RawClient] = []

    def _on_event(self, event: ET.Element, now: float) -> None:
        for key in event_keys(event):
            self.arrivals.setdefault(key, now)

    async def _client(self, cls: type[RawClient], jid: str, password: str) -> RawClient:
        client = (
            Listener(jid, password, self._on_event) if cls is Listener else RawClient(jid, password)
        )
        await client.login("127.0.0.1", self.server.c2s_port)
        self.clients.append(client)
        return client

    # -- setup -------------------------------------------------------------------------

    def _database(self) -> str:
        if self.db == "sqlite":
            return f"sqlite+aiosqlite:///{self.root / 'herald.db'}"
        import psycopg

        url = make_url(POSTGRES_URL)
        self.db_name = f"herald_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(
            host=url.host, port=url.port or 5432, user=url.username, dbname=url.database,
            autocommit=True,
        ) as conn:  # fmt: skip
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        return make_url(POSTGRES_URL).set(database=self.db_name).render_as_string(False)

    def _drop_database(self) -> None:
        if not self.db_name:
            return
        import psycopg

        url = make_url(POSTGRES_URL)
        with psycopg.connect(
            host=url.host, port=url.port or 5432, user=url.username, dbname=url.database,
            autocommit=True,
        ) as conn:  # fmt: skip
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_url = self._database()
        settings = settings_for(
            self.server,
            self.db_url,
            multicast={"enabled": False},
            pubsub={
                "rules": [{"node": "blog*", "sync": True, "parser": "atom"}],
                "max_items_per_node": 1000,
                **reconcile_setting(self.args),
            },
            log={"level": "warning"},
        )
        self.herald = HeraldProcess(settings, self.root)
        self.herald.start()
        await self.herald.wait_healthy()

    def keep_trace(self, into: Path, st: Staleness, flow: dict[str, Throughput]) -> None:
        """Save the staleness phase's changes, the paced phase's publications and
        Herald's log over both phases (with its trace lines; bench/staleness_trace.py
        reads them) under into/<server>-<db>."""
        assert self.herald is not None
        into.mkdir(parents=True, exist_ok=True)
        stem = into / f"{self.server.__class__.__name__.lower()}-{self.db}"
        rows = [
            {
                "kind": c.kind, "node": c.node.name, "item": c.item, "t0": c.t0,
                "proxy": c.proxy, "direct": c.direct, "acked": c.acked,
            }
            for c in st.changes
        ]  # fmt: skip
        stem.with_suffix(".changes.json").write_text(json.dumps(rows))
        paced = flow.get("herald paced")
        if paced is not None:
            times = [
                {"node": node, "item": item, "sent": sent, "seen": seen}
                for (_, node, item), (sent, seen) in paced.times.items()
            ]
            stem.with_suffix(".paced.json").write_text(json.dumps(times))
        stem.with_suffix(".log").write_text(self.herald.log())

    async def stop(self) -> None:
        for client in self.clients:
            await client.close()
        if self.herald is not None:
            await asyncio.to_thread(self.herald.stop)
        await asyncio.to_thread(self._drop_database)

    async def metric(self, name: str, **labels: str) -> float:
        assert self.herald is not None
        return await self.herald.sample(name, labels)

    async def hits(self) -> dict[str, float]:
        return {
            r: await self.metric("herald_pubsub_requests_total", kind="items", result=r)
            for r in ("hit", "miss", "bypass", "error")
        }

    async def cache_nodes(self, reader: RawClient, names: list[str]) -> None:
        """Read each node through the proxy until Herald has synced all and each read hits."""
        began = time.monotonic()
        await asyncio.gather(*(reader.iq(read(n), check=False) for n in names))
        while True:
            done = await self.metric("herald_pubsub_cached_nodes", sync_state="completed")
            if done >= len(names):
                before = (await self.hits())["hit"]
                await asyncio.gather(*(reader.iq(read(n)) for n in names))
                if (await self.hits())["hit"] - before == len(names):
                    return
            if time.monotonic() - began > 90:
                log = self.herald.log()[-3000:] if self.herald else ""
                raise RuntimeError(f"{done:.0f}/{len(names)} nodes synced after 90 s:\n{log}")
            await asyncio.sleep(0.2)

    # -- staleness ---------------------------------------------------------------------

    async def staleness(self) -> Staleness:
        args = self.args
        owner = await self._client(RawClient, f"{OWNER}/st", USERS["olivia"])
        reader = await self._client(RawClient, f"{READER}@localhost/st", USERS[READER])
        bob = await self._client(Listener, "bob@localhost/st", USERS["bob"])
        if args.direct_poll:
            self.direct_reader = await self._client(RawClient, "carol@localhost/st", USERS["carol"])
        nodes = [
            NodeState(f"blog-{self.tag}-{i:03d}", [f"i{i}-{k}" for k in range(INITIAL_ITEMS)])
            for i in range(args.nodes)
        ]
        setup: list[str] = []
        for n, node in enumerate(nodes):
            setup.append(create(node.name))
            setup += [publish(node.name, item, n) for item in node.items]
        await pipelined(owner, setup)
        await pipelined(bob, [subscribe(n.name, bob.full_jid) for n in nodes])
        await self.cache_nodes(reader, [n.name for n in nodes])
        for node in nodes:
            node.last_read = time.perf_counter()

        plan = self._plan(args.changes, args.rare)
        changes: list[Change] = []
        watchers: list[asyncio.Task[None]] = []
        serial = 0
        hits_before = await self.hits()
        began = time.perf_counter()
        for number, wanted in enumerate(plan):
            due = began + number / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            change = self._pick(wanted, nodes, serial)
            if change is None:
                continue
            serial += 1
            changes.append(change)
            watchers.append(asyncio.create_task(self._change(owner, reader, change)))
        sent_for = time.perf_counter() - began
        await asyncio.gather(*watchers)
        hits_after = await self.hits()
        for change in changes:
            key = (
                ("configuration", change.node.name, "")
                if change.kind == "whitelist"
                else (change.kind.split("-")[0], change.node.name, change.item)
            )
            arrived = self.arrivals.get(key)
            if arrived is not None and arrived >= change.t0:
                change.direct = arrived - change.t0
        return Staleness(
            changes,
            len(changes) / sent_for,
            {k: hits_after[k] - hits_before[k] for k in hits_after},
        )

    @staticmethod
    def _plan(total: int, rare: int) -> list[str]:
        """The kinds in order: the rare ones spread at random among publishes/retracts."""
        rng = random.Random(7)
        kinds = [k for k in RARE for _ in range(rare)]
        kinds += ["common"] * max(0, total - len(kinds))
        rng.shuffle(kinds)
        return kinds

    @staticmethod
    def _pick(wanted: str, nodes: list[NodeState], serial: int) -> Change | None:
        rng = random.Random(serial)
        free = [n for n in nodes if n.alive and not n.pending]
        if wanted == "common":
            # keep nodes small: retract from nodes that hold more than the initial items
            wanted = "publish" if rng.random() < 0.55 else "retract"
        if wanted in ("retract", "retract-silent"):
            free = [n for n in free if n.items]
        elif wanted in ("purge", "delete", "whitelist"):
            free = [n for n in free if n.items or wanted != "purge"]
        if not free:
            wanted = "publish"
            free = [n for n in nodes if n.alive and not n.pending]
            if not free:
                return None
        node = rng.choice(free)
        if wanted == "publish":
            item = f"p{serial}"
        elif wanted.startswith("retract"):
            item = node.items.pop(0)
        else:
            item = ""
        node.pending = True
        if wanted in ("retract-silent", "delete", "whitelist"):
            # Left alone afterwards: a later publication there would let Herald's
            # eviction probe notice the silent retraction, which is another measure.
            node.alive = False
        return Change(wanted, node, item)

    @staticmethod
    async def _acked(owner: RawClient, template: str, change: Change) -> ET.Element:
        """Send the change; note when upstream's answer to it arrived."""
        answer = await owner.iq(template, timeout=30, check=False)
        change.acked = time.perf_counter() - change.t0
        return answer

    async def _change(self, owner: RawClient, reader: RawClient, change: Change) -> None:
        node = change.node.name
        if change.kind == "publish":
            template = publish(node, change.item, 0)
        elif change.kind.startswith("retract"):
            template = retract(node, change.item, change.kind == "retract")
        else:
            template = owner_op(change.kind, node)
        change.t0 = time.perf_counter()
        change.idle = change.t0 - change.node.last_read
        ack = asyncio.create_task(self._acked(owner, template, change))
        fast = change.kind in NOTIFIED
        interval = self.args.poll_ms / 1000 if fast else SLOW_POLL
        direct = None
        if self.direct_reader is not None and change.kind in ("publish", "retract"):
            direct = asyncio.create_task(
                self._poll(self.direct_reader, read(node, UPSTREAM_JID), change, interval)
            )
        change.proxy = await self._poll(reader, read(node), change, interval)
        if direct is not None:
            change.polled = await direct
        answer = await ack
        if answer.get("type") != "result":
            change.failed = ET.tostring(answer, encoding="unicode")[:300]
        if change.kind == "publish" and change.proxy is not None:
            change.node.items.append(change.item)
        elif change.kind == "purge":
            change.node.items.clear()
        change.node.pending = False

    async def _poll(
        self, client: RawClient, template: str, change: Change, interval: float
    ) -> float | None:
        """Read until an answer is fresh: seconds from the change's send, or None."""
        deadline = change.t0 + self.args.window
        proxy = client is not self.direct_reader
        while True:
            reply = await client.iq(template, timeout=30, check=False)
            now = time.perf_counter()
            if proxy:
                change.polls += 1
                change.node.last_read = now
            if change.fresh(reply):
                return now - change.t0
            if now > deadline:
                return None
            await asyncio.sleep(interval)

    # -- throughput --------------------------------------------------------------------

    async def throughput(self) -> dict[str, Throughput]:
        """Each path's figures: as fast as the server accepts ("ceiling", "herald"),
        then at --tp-rate ("ceiling paced", "herald paced")."""
        args = self.args
        owner = await self._client(RawClient, f"{OWNER}/tp", USERS["olivia"])
        reader = await self._client(RawClient, f"{READER}@localhost/tp", USERS[READER])
        carol = await self._client(Listener, "carol@localhost/tp", USERS["carol"])
        feeds = [f"feed-{self.tag}-tp{i:02d}" for i in range(args.tp_nodes)]
        blogs = [f"blog-{self.tag}-tp{i:02d}" for i in range(args.tp_nodes)]
        await pipelined(owner, [create(n) for n in feeds + blogs])
        await pipelined(carol, [subscribe(n, carol.full_jid) for n in feeds])
        await self.cache_nodes(reader, blogs)
        publishers = [
            await self._client(RawClient, f"{OWNER}/pub{i}", USERS["olivia"])
            for i in range(args.publishers)
        ]
        out: dict[str, Throughput] = {}

        async def phase(name: str, nodes: list[str], seen: Seen, rate: float | None) -> None:
            cpu, server_cpu, own_cpu = self.herald_cpu(), self.server_cpu(), own_cpu_seconds()
            db_cpu = self.db_cpu()
            asked = await self.upstream_requests()
            prefix = "".join(word[0] for word in name.split())
            out[name] = done = await self._publish_all(publishers, nodes, prefix, seen, rate)
            done.cpu = self.herald_cpu() - cpu
            done.server_cpu = self.server_cpu() - server_cpu
            done.bench_cpu = own_cpu_seconds() - own_cpu
            done.db_cpu = self.db_cpu() - db_cpu
            done.upstream = await self.upstream_requests() - asked

        seen: Seen = {}
        await phase("ceiling", feeds, self.arrivals, None)
        await phase("ceiling paced", feeds, self.arrivals, args.tp_rate)
        watcher = DbWatcher(self.db, self.db_url, self.root / "herald.db", seen)
        watcher.start()
        try:
            await phase("herald", blogs, seen, None)
            await phase("herald paced", blogs, seen, args.tp_rate)
        finally:
            watcher.stop()
        return out

    async def upstream_requests(self) -> float:
        """Requests Herald has sent upstream so far, whatever their outcome."""
        outcomes = ("ok", "error", "timeout", "disconnected")
        return sum(
            [
                await self.metric("herald_pubsub_upstream_requests_total", outcome=o)
                for o in outcomes
            ]
        )

    def herald_cpu(self) -> float:
        """Herald's CPU seconds so far (user + system): what a notification costs it
        holds however loaded the machine is, unlike the rates."""
        assert self.herald is not None
        assert self.herald.process is not None
        return cpu_seconds(self.herald.process.pid)

    def db_cpu(self) -> float:
        """PostgreSQL's CPU seconds so far, all its processes (nan on SQLite, whose
        work is in Herald's own)."""
        if self.db != "postgresql":
            return math.nan
        total = 0.0
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if (proc / "comm").read_text().strip() == "postgres":
                        total += cpu_seconds(int(proc.name))
                except OSError:
                    continue  # gone meanwhile
        return total

    def server_cpu(self) -> float:
        """The XMPP server's CPU seconds so far: where the publications' cost goes."""
        if isinstance(self.server, Ejabberd):
            pid = int((self.server.root / "ejabberd.pid").read_text().strip())
        else:
            assert self.server.process is not None
            pid = self.server.process.pid
        return cpu_seconds(pid)

    async def _publish_all(
        self,
        publishers: list[RawClient],
        nodes: list[str],
        prefix: str,
        seen: dict[tuple[str, str, str], float],
        rate: float | None = None,
    ) -> Throughput:
        """Publish round-robin over nodes, and wait for the items to be seen: without a
        rate, --tp-publishes items as fast as the server accepts them (--tp-inflight in
        flight per publisher); with one, rate per second for --tp-seconds."""
        args = self.args
        sent: dict[tuple[str, str, str], float] = {}
        total = args.tp_publishes if rate is None else int(rate * args.tp_seconds)
        counter = iter(range(total))

        async def send(client: RawClient, n: int) -> None:
            node, item = nodes[n % len(nodes)], f"{prefix}{n}"
            sent[("publish", node, item)] = time.perf_counter()
            await client.iq(publish(node, item, n), timeout=60)

        async def worker(client: RawClient) -> None:
            for n in counter:
                await send(client, n)

        async def paced(rate: float) -> None:
            # Sent on time whatever the replies do: an open loop, as real publishers
            # are; late sends (a busy loop here) go at once, in order.
            tasks = []
            for n in counter:
                delay = began + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(send(publishers[n % len(publishers)], n)))
            await asyncio.gather(*tasks)

        began = time.perf_counter()
        if rate is None:
            await asyncio.gather(*(worker(p) for p in publishers for _ in range(args.tp_inflight)))
        else:
            await paced(rate)
        accepted = time.perf_counter() - began
        for _ in range(600):  # at most 30 s for the stragglers
            if all(k in seen for k in sent):
                break
            await asyncio.sleep(0.05)
        lags = [seen[k] - t for k, t in sent.items() if k in seen]
        last = max((seen[k] for k in sent if k in seen), default=began)
        sending = max(sent.values(), default=began) - began
        return Throughput(
            len(sent),
            len(lags),
            len(sent) / accepted,
            len(lags) / (last - began) if lags else 0.0,
            lags,
            send_rate=(len(sent) - 1) / sending if sending > 0 else math.nan,
            times={k: (t, seen.get(k)) for k, t in sent.items()},
        )


def own_cpu_seconds() -> float:
    """This process's CPU seconds so far, all threads (the load generator's share)."""
    times = os.times()
    return times.user + times.system


def cpu_seconds(pid: int) -> float:
    """A process's CPU seconds so far (user + system), from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


GAP_KEPT = 2.0  # seconds an id below the newest seen is waited for (see DbWatcher._run)


class DbWatcher:
    """Polls Herald's items table from a thread: when each item id first appears."""

    def __init__(
        self, db: str, url: str, path: Path, seen: dict[tuple[str, str, str], float]
    ) -> None:
        self.db, self.url, self.path, self.seen = db, url, path, seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.error is not None:
            raise RuntimeError(f"watching the database failed: {self.error!r}")

    def _connect(self) -> object:
        if self.db == "sqlite":
            return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        import psycopg

        url = make_url(self.url)
        return psycopg.connect(
            host=url.host, port=url.port or 5432, user=url.username, dbname=url.database,
            autocommit=True,
        )  # fmt: skip

    def _run(self) -> None:
        # Parameters, not text: PostgreSQL prepares the statement once, instead of
        # parsing and planning 500 a second. The LIMIT keeps the plan on the primary
        # key even before the table has statistics (a fresh database's first minute):
        # without it PostgreSQL scanned the whole table at every poll, its CPU counted
        # as Herald's database's.
        mark = "?" if self.db == "sqlite" else "%s"
        query = (
            f"SELECT id, node_id, item_id FROM pubsub_items WHERE id > {mark}"
            " ORDER BY id LIMIT 5000"
        )
        names: dict[int, str] = {}
        try:
            conn = self._connect()
            with conn:  # type: ignore[attr-defined]
                last = conn.execute("SELECT coalesce(max(id), 0) FROM pubsub_items").fetchone()[0]  # type: ignore[attr-defined]
                # Ids are handed out at insert time but seen at commit: with several
                # transactions in flight, a lower id can commit after a higher one.
                # Each id skipped below the newest seen is looked for again for
                # GAP_KEPT s (one that never comes was rolled back, or its item
                # retracted or trimmed since); reading only from the oldest such
                # gap keeps each poll small (this thread shares the machine).
                gaps: dict[int, float] = {}
                while not self._stop.is_set():
                    since = min(min(gaps, default=last + 1) - 1, last)
                    rows = conn.execute(query, (since,)).fetchall()  # type: ignore[attr-defined]
                    now = time.perf_counter()
                    for row_id, node_id, item in rows:
                        if node_id not in names:
                            found = conn.execute("SELECT id, name FROM pubsub_nodes")  # type: ignore[attr-defined]
                            names.update(found.fetchall())
                        self.seen.setdefault(("publish", names[node_id], item), now)
                        if row_id > last:
                            gaps.update(dict.fromkeys(range(last + 1, row_id), now))
                            last = row_id
                        else:
                            gaps.pop(row_id, None)
                    gaps = {i: t for i, t in gaps.items() if now - t < GAP_KEPT}
                    self._stop.wait(0.002)
        except BaseException as exc:  # reported by stop()
            self.error = exc


# -- report ----------------------------------------------------------------------------


def report_staleness(label: str, args: argparse.Namespace, st: Staleness) -> dict[str, str]:
    """Print one run's staleness table; return each kind's proxy p99 (for the summary)."""
    print(
        f"\n-- {label}: staleness, {len(st.changes)} changes at {st.rate:.0f}/s"
        f" (target {args.rate}/s) over {args.nodes} cached nodes; window {args.window:g} s --"
    )
    print(
        f"{'kind':<15} {'n':>4} {'proxy p50':>9} {'p99':>7} {'max':>7} {'not fresh':>9}"
        f" {'direct p50':>10} {'p99':>7} {'notified':>8} {'p50 x':>6}   (ms from the owner's send)"
    )
    out = {}
    for kind in KINDS:
        mine = [c for c in st.changes if c.kind == kind]
        if not mine:
            continue
        proxy = [c.proxy for c in mine if c.proxy is not None]
        direct = [c.direct for c in mine if c.direct is not None]
        never = len(mine) - len(proxy)
        ratio = pct(proxy, 50) / pct(direct, 50) if proxy and direct else math.nan
        print(
            f"{kind:<15} {len(mine):>4} {ms(pct(proxy, 50)):>9} {ms(pct(proxy, 99)):>7}"
            f" {ms(max(proxy, default=math.nan)):>7} {never:>9} {ms(pct(direct, 50)):>10}"
            f" {ms(pct(direct, 99)):>7} {len(direct):>4}/{len(mine):<3}"
            f" {'-' if math.isnan(ratio) else f'{ratio:.2f}':>6}"
        )
        out[kind] = (
            f"{ms(pct(proxy, 99))}" + (f" ({never} never)" if never else "")
            if proxy
            else f"never ({never})"
        )
        failed = [c for c in mine if c.failed]
        if failed:
            print(f"  {len(failed)} {kind} changes refused upstream, first: {failed[0].failed}")
    white = [c for c in st.changes if c.kind == "whitelist"]
    if white:
        worst = max(white, key=lambda c: c.proxy if c.proxy is not None else math.inf)
        served = worst.proxy if worst.proxy is not None else math.inf
        after = [c.after_ack() for c in white]
        # Judged from upstream's answer to the configure: before it, upstream itself
        # may still serve the items (see the module's docstring).
        late = math.inf if None in after else max(a for a in after if a is not None)
        acks = [c.acked for c in white if c.acked is not None]
        print(
            f"whitelist: idle before the change {min(c.idle for c in white):.2f}"
            f"-{max(c.idle for c in white):.2f} s; longest served after the send"
            f" {'> window' if math.isinf(served) else f'{served:.2f} s'}"
            f" (idle {worst.idle:.2f} s); upstream answered the configure after"
            f" {min(acks, default=math.nan):.2f}-{max(acks, default=math.nan):.2f} s;"
            f" longest served after upstream's answer"
            f" {'> window' if math.isinf(late) else f'{late:.2f} s'};"
            f" goal never past 5 s after upstream's answer: {'met' if late <= 5.0 else 'NOT met'}"
        )
        out["whitelist (ack)"] = "> window" if math.isinf(late) else f"{late * 1000:.1f}"
    polled = [c for c in st.changes if c.polled is not None and c.proxy is not None]
    if polled:
        # The same reads, sent upstream directly: what any reader that polls gets.
        for kind in ("publish", "retract"):
            mine = [c for c in polled if c.kind == kind]
            direct = [c.polled for c in mine if c.polled is not None]
            proxy = [c.proxy for c in mine if c.proxy is not None]
            print(
                f"{kind}: read upstream directly the same way (carol), p50 {ms(pct(direct, 50))}"
                f" p99 {ms(pct(direct, 99))} ms; the proxy's p99 is"
                f" {pct(proxy, 99) / pct(direct, 99):.2f}x that (n={len(mine)})"
            )
    polls = sum(c.polls for c in st.changes)
    print(
        f"proxy reads while polling: {polls}; Herald's items results {st.hits}"
        "  (a miss/bypass is a read answered upstream)"
    )
    return out


def report_throughput(
    label: str, args: argparse.Namespace, t: dict[str, Throughput]
) -> dict[str, str]:
    print(f"\n-- {label}: notification throughput --")
    print(
        f"{'path':<40} {'published':>9} {'accepted/s':>10} {'applied/s':>9}"
        f" {'lag p50 ms':>10} {'p99 ms':>7} {'lost':>5} {'herald cpu ms/item':>18}"
        f" {'server cpu ms/item':>18} {'bench cpu ms/item':>17} {'pg cpu ms/item':>14}"
        f" {'herald asked':>12}"
    )
    paced = f"at {args.tp_rate:g}/s"
    for name, what in (
        ("ceiling", "ceiling: direct subscriber, flat out"),
        ("herald", "herald: row in its database, flat out"),
        ("ceiling paced", f"ceiling: direct subscriber, {paced}"),
        ("herald paced", f"herald: row in its database, {paced}"),
    ):
        one = t[name]
        print(
            f"{what:<40} {one.sent:>9} {one.accept_rate:>10.0f} {one.applied_rate:>9.0f}"
            f" {ms(pct(one.lags, 50)):>10} {ms(pct(one.lags, 99)):>7} {one.sent - one.seen:>5}"
            f" {one.cpu * 1000 / max(1, one.sent):>18.2f}"
            f" {one.server_cpu * 1000 / max(1, one.sent):>18.2f}"
            f" {one.bench_cpu * 1000 / max(1, one.sent):>17.2f}"
            f" {one.db_cpu * 1000 / max(1, one.sent):>14.2f} {one.upstream:>12.0f}"
        )
    flat, ceiling, herald = t["herald"], t["ceiling"], t["herald paced"]
    ratio = flat.applied_rate / ceiling.applied_rate if ceiling.applied_rate else math.nan
    p99 = pct(herald.lags, 99)
    # Judged at the paced rate: flat out, the lag is the backlog of whatever the
    # server accepts beyond what Herald applies, and grows with the run's length.
    # Paced, keeping up is every publication applied with a bounded lag (items over
    # the time to the last one seen falls short of the rate by that last lag).
    kept = herald.send_rate >= 0.98 * args.tp_rate
    goal = args.tp_rate >= 1000 and kept and p99 < 0.1 and herald.seen == herald.sent
    print(
        f"herald flat out / ceiling flat out: {ratio:.2f}x ({flat.applied_rate:.0f}/s);"
        f" goal >= 1000/s with lag p99 < 100 ms, {paced}: {'met' if goal else 'NOT met'}"
        f" (sent at {herald.send_rate:.0f}/s, {herald.seen} of {herald.sent} applied,"
        f" p99 {ms(p99)} ms)"
    )
    return {
        "applied/s": f"{flat.applied_rate:.0f}",
        "ceiling/s": f"{ceiling.applied_rate:.0f}",
        "ratio": f"{ratio:.2f}x",
        f"lag p99 ms {paced}": ms(p99),
        "cpu ms/item": f"{flat.cpu * 1000 / max(1, flat.sent):.2f}",
    }


async def run_server(args: argparse.Namespace, name: str, root: Path) -> dict[str, dict[str, str]]:
    began = time.perf_counter()
    server: Server
    if name == "ejabberd":
        server = standard_ejabberd(root / name)
    else:
        server = standard_prosody(root / name)
        if args.prosody_storage == "memory":
            # Prosody 0.12's internal pubsub store rewrites a node's items on every
            # publication: measured here, 200/s falling to 13/s as nodes grow to 100 items.
            server.write()
            config = server.config_path.read_text()
            config = config.replace(
                "  pubsub_max_items = 10000\n",
                "  pubsub_max_items = 10000\n"
                '  storage = { pubsub_data = "memory"; pubsub_nodes = "memory" }\n',
            )
            server.config_path.write_text(config)
    server.start()
    results = {}
    try:
        print(f"{name} started ({time.perf_counter() - began:.1f} s)", flush=True)
        for db in DBS if args.db == "both" else (args.db,):
            label = f"{name} / {db}"
            run = Run(args, server, db, root / f"{name}-{db}")
            try:
                await run.start()
                st = await run.staleness()
                print(f"{label}: staleness done ({time.perf_counter() - began:.0f} s)", flush=True)
                flow = {} if args.staleness_only else await run.throughput()
                if args.trace:  # the log holds the throughput phase's lines too
                    run.keep_trace(Path(args.trace), st, flow)
            except BaseException:
                if run.herald is not None:
                    print(f"Herald's log tail ({label}):\n{run.herald.log()[-3000:]}")
                raise
            finally:
                await run.stop()
            summary = report_staleness(label, args, st)
            if flow:
                summary.update(report_throughput(label, args, flow))
            results[label] = summary
            print(f"{label}: done ({time.perf_counter() - began:.0f} s)", flush=True)
    finally:
        server.stop()
    return results


async def main(args: argparse.Namespace) -> None:
    began = time.perf_counter()
    if args.trace:
        os.environ["HERALD_TRACE"] = "1"  # inherited by Herald (component/pubsub/tracing.py)
    fields = PubsubSettings.model_fields
    if "reconcile_interval" in fields:
        default = fields["reconcile_interval"].default
        print(
            f"Herald's pubsub.reconcile_interval: {args.reconcile_interval:g} s here"
            f" (its default: {default:g} s): the bound for changes upstream does not notify"
        )
    else:
        print("Herald's pubsub.reconcile_interval: not in this build")
    results: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="herald-staleness-") as tmp:
        for name in SERVERS if args.server == "both" else (args.server,):
            results.update(await run_server(args, name, Path(tmp)))
    if len(results) > 1:
        print(
            "\nside by side: proxy staleness p99 ms per kind (whitelist (ack): the longest"
            " served after upstream's answer), and throughput"
        )
        keys = [
            *KINDS,
            "whitelist (ack)",
            "applied/s",
            "ceiling/s",
            "ratio",
            f"lag p99 ms at {args.tp_rate:g}/s",
            "cpu ms/item",
        ]
        print(f"  {'':<16}" + "".join(f"{label:>22}" for label in results))
        for key in keys:
            print(f"  {key:<16}" + "".join(f"{r.get(key, '-'):>22}" for r in results.values()))
    print(f"\ntotal {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", choices=[*SERVERS, "both"], default="both")
    parser.add_argument("--db", choices=[*DBS, "both"], default="both")
    parser.add_argument("--nodes", type=int, default=100, help="cached nodes changed")
    parser.add_argument("--rate", type=float, default=100.0, help="changes per second")
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--rare", type=int, default=20, help="changes of each rare kind")
    parser.add_argument("--window", type=float, default=15.0, help="seconds to wait for fresh")
    parser.add_argument(
        "--reconcile-interval",
        type=float,
        default=10.0,
        help="Herald's pubsub.reconcile_interval (default 10, to see the bound within --window)",
    )
    parser.add_argument("--poll-ms", type=float, default=2.0, help="poll interval, notified")
    parser.add_argument(
        "--prosody-storage",
        choices=["memory", "internal"],
        default="memory",
        help="Prosody's pubsub store (internal: files, the harness's default)",
    )
    parser.add_argument(
        "--trace",
        metavar="DIR",
        help="run Herald with HERALD_TRACE=1 and keep its log and the changes in DIR"
        " (bench/staleness_trace.py breaks the staleness down from them)",
    )
    parser.add_argument(
        "--staleness-only", action="store_true", help="skip the notification throughput"
    )
    parser.add_argument(
        "--direct-poll",
        action="store_true",
        help="also read each notified publication/retraction upstream directly, polled"
        " the same way as through the proxy (carol): the floor for any polling reader",
    )
    parser.add_argument("--tp-nodes", type=int, default=20)
    parser.add_argument("--tp-publishes", type=int, default=1500)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--tp-inflight", type=int, default=4, help="per publisher")
    parser.add_argument("--tp-rate", type=float, default=1000.0, help="paced publications/s")
    parser.add_argument("--tp-seconds", type=float, default=3.0, help="paced phase's length")
    asyncio.run(main(parser.parse_args()))
