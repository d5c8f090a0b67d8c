"""Searching a node of 100,000 items: Herald's index vs. what a client must do today.

Run:
    .venv/bin/python -m bench.pubsub_search [--items 100000] [--queries 200]
        [--baseline 5] [--db sqlite|postgresql|both] [--prosody-gc MODE] [--settle 3]

Everything runs on loopback in a temporary directory and stops by itself. Processes: a
throwaway Prosody 0.12 (tests/conftest.py's standard_prosody, its pubsub allowed nodes
of --items items), per database a fresh Herald (`herald run -c FILE`) on a fresh SQLite
file or PostgreSQL database (on the server tests use: $HERALD_TEST_POSTGRES_URL or
tests/bootstrap.sh --postgres), one after the other, and this process, the client
(bench/rawclient.py, one request in flight).

Setup: olivia creates the open node `blog-search` (pubsub#max_items --items, items kept
in memory: the pubsub host uses Prosody's memory store, since its file store rewrites
the whole node on every publish) and publishes --items Atom entries. Entry i has the title "Post i",
the category "cat{i % 500}" and a content of common words plus "zebra{i % 1000}". Then
alice reads the node once through the proxy, which starts its sync, and the bench
waits until a search through the proxy counts every item, then until Herald's gauge
says the sync completed, then --settle seconds.

Herald runs with reconcile_interval at its maximum (86400 s): its periodic comparison of
a cached node with upstream reads the node's item ids (disco#items), which for 100,000
items keeps Prosody 0.12 busy for many seconds, stalling every stream it serves; with
the default 60 s, queries would measure that comparison, not search.

Prosody runs the generational garbage collector (--prosody-gc, '' for its default):
100,000 items in its memory store make a Lua heap of about 650 MB, and Prosody's
default, incremental collector (pause 105 %: always collecting) then stalls its loop
for 50-400 ms about twice a second. Every result goes through Prosody, so that alone
made the p99 of every path 10-20x its p50 (issue 14: 20 stanzas sent to the client
itself, through Prosody alone, had a p50 of 1.0 ms and a p99 of 215 ms; generational,
1.3 and 4.0 ms). A real deployment keeps pubsub items in a database store, not in
Prosody's heap.

Paths, in the same run, each query naming another value (cycling over 50):
  herald fulltext   A XEP-0442 query to the proxy, {urn:xmpp:fulltext:0}fulltext
                    "zebraK" (100 matches), RSM max 20: the time to the <fin/>, after
                    the 20 result messages.
  herald parsed     The same with {urn:herald:parsed:0}categories "catK" (200 matches).
  server alone      The control, after each Herald query: 20 stanzas of a result's size
                    sent to the client itself and a ping to the server, through Prosody
                    alone. Its tail is the server's and the machine's, not Herald's.
  client fulltext   What a client must do without search: fetch the node's items from
                    the server (an items request to pubsub-origin.localhost, every item:
                    Prosody 0.12 has no RSM) and filter them itself, on the payload's text
                    with the same word rules (component.search_text).
  client parsed     The same, parsing each entry's categories (component's atom parser).
Herald's paths run first, for each database, then the client's (whose 100,000-item
stanzas leave Prosody collecting garbage for a while). Herald's <fin/> count on each
database must equal what the client-side filter finds for the same value.

While the node syncs, the client pings Herald's pubsub address and the server, each
every 50 ms: the longest wait for Herald's answer shows how long the sync's
work held its event loop (the server's show what was the server's).

Then, per database, the index size: the search index's bytes on disk relative to the
items table's (SQLite: dbstat pages; PostgreSQL: pg_total_relation_size, indexes and
TOAST included).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import tempfile
import time
import uuid
from pathlib import Path
from xml.etree import ElementTree as ET

from sqlalchemy.engine import make_url

from bench.pubsub_items import Drain, Metrics
from bench.rawclient import RawClient
from component.pubsub.parsers.atom import parse_atom
from component.search_text import payload_text, words
from tests.conftest import (
    OWNER,
    POSTGRES_URL,
    PROXY_JID,
    UPSTREAM_JID,
    USERS,
    standard_prosody,
)
from tests.harness.herald import settings_for, spawn, toml_for
from tests.harness.prosody import Prosody

PUBSUB = "http://jabber.org/protocol/pubsub"
ATOM = "http://www.w3.org/2005/Atom"
MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
NODE = "blog-search"
VALUES = 50
GOAL_SPEEDUP = 20.0
GOAL_TAIL = 2.0
DBS = ("sqlite", "postgresql")
CLIENT = "alice@localhost/bench"
PATHS = (
    ("{urn:xmpp:fulltext:0}fulltext", "fulltext", "zebra{}"),
    ("{urn:herald:parsed:0}categories", "parsed", "cat{}"),
)
# The size of a search's result message (about 650 bytes).
ECHO = f"<message to='{CLIENT}'><body>{'x' * 600}</body></message>"


class BigNodeProsody(Prosody):
    """The standard Prosody, its pubsub allowed nodes of `max_items` items."""

    max_items: int = 100_000
    gc: str = "generational"

    def _config(self) -> str:
        # The pubsub host alone keeps its data in memory: the file store rewrites
        # the whole node on every publish, which 100,000 publishes cannot afford.
        limits = (
            f'pubsub_max_items = {self.max_items}\n  storage = "memory"\n'
            f"  storage_archive_item_limit = {self.max_items + 10}"
        )
        config = super()._config().replace("pubsub_max_items = 10000", limits)
        # See the module docstring: the default collector stalls on this heap.
        return f'gc = {{ mode = "{self.gc}" }}\n{config}' if self.gc else config


def entry(i: int) -> str:
    return (
        f"<entry xmlns='{ATOM}'><title>Post {i}</title><category term='cat{i % 500}'/>"
        f"<content>Notes on the garden, the weather and zebra{i % 1000} today</content>"
        f"<id>tag:bench,{i}</id></entry>"
    )


def mam_query(field: str, value: str) -> str:
    return (
        f"<iq type='set' id='{{id}}' to='{PROXY_JID}'><query xmlns='{MAM}' node='{NODE}'>"
        "<x xmlns='jabber:x:data' type='submit'>"
        f"<field var='FORM_TYPE'><value>{MAM}</value></field>"
        f"<field var='{field}'><value>{value}</value></field></x>"
        f"<set xmlns='{RSM}'><max>20</max></set></query></iq>"
    )


def fin_count(reply: ET.Element) -> int:
    text = reply.findtext(f"{{{MAM}}}fin/{{{RSM}}}set/{{{RSM}}}count")
    if reply.get("type") != "result" or text is None:
        raise RuntimeError(f"search failed: {ET.tostring(reply)[:400]!r}")
    return int(text)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1] if ordered else math.nan


@dataclasses.dataclass
class Measured:
    name: str
    latencies: list[float] = dataclasses.field(default_factory=list)

    def row(self) -> str:
        p50, p99 = percentile(self.latencies, 50), percentile(self.latencies, 99)
        p90, worst = percentile(self.latencies, 90), max(self.latencies)
        return (
            f"  {self.name:<18} {len(self.latencies):>5} {p50 * 1000:>10.1f} {p99 * 1000:>10.1f}"
            f" {p99 / p50:>9.2f}   (p90 {p90 * 1000:.1f}, max {worst * 1000:.1f})"
        )


async def publish_all(owner: RawClient, count: int, inflight: int = 200) -> None:
    fields = {
        "FORM_TYPE": "http://jabber.org/protocol/pubsub#node_config",
        "pubsub#access_model": "open",
        "pubsub#max_items": str(count),
    }
    form = "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in fields.items())
    await owner.iq(
        f"<iq type='set' id='{{id}}' to='{UPSTREAM_JID}'><pubsub xmlns='{PUBSUB}'>"
        f"<create node='{NODE}'/><configure><x xmlns='jabber:x:data' type='submit'>"
        f"{form}</x></configure></pubsub></iq>"
    )
    for start in range(0, count, inflight):
        await asyncio.gather(
            *(
                owner.iq(
                    f"<iq type='set' id='{{id}}' to='{UPSTREAM_JID}'><pubsub xmlns='{PUBSUB}'>"
                    f"<publish node='{NODE}'><item id='item-{i:06d}'>{entry(i)}</item>"
                    "</publish></pubsub></iq>",
                    timeout=60,
                )
                for i in range(start, min(count, start + inflight))
            )
        )


async def client_side(client: RawClient, kind: str, value: str) -> int:
    """Fetch every item from the server and filter them here; the number that match."""
    reply = await client.iq(
        f"<iq type='get' id='{{id}}' to='{UPSTREAM_JID}'><pubsub xmlns='{PUBSUB}'>"
        f"<items node='{NODE}'/></pubsub></iq>",
        timeout=120,
    )
    wanted = words(value)
    matched = 0
    for item in reply.iter(f"{{{PUBSUB}}}item"):
        payload = next(iter(item), None)
        if payload is None:
            continue
        if kind == "fulltext":
            have = set(words(payload_text(ET.tostring(payload, encoding="unicode"))))
        else:
            have = {w for term in parse_atom(payload).get("categories", []) for w in words(term)}
        matched += all(word in have for word in wanted)
    return matched


async def index_size(db_url: str) -> tuple[int, int]:
    from component.storage.engine import create_engine, session_factory
    from component.storage.search_repo import index_size as measure

    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            return await measure(session)
    finally:
        await engine.dispose()


def _admin(sql: str) -> None:
    import psycopg

    url = make_url(POSTGRES_URL)
    with psycopg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password,
        dbname=url.database, autocommit=True,
    ) as conn:  # fmt: skip
        conn.execute(sql)


@dataclasses.dataclass
class Result:
    """One database's figures: Herald's paths, the server alone, what Herald counted."""

    db: str
    paths: list[Measured]
    counted: dict[tuple[str, str], int]
    # During the sync: Herald's and the server's answers to a ping every PING_EVERY s.
    sync_herald: Measured | None = None
    sync_server: Measured | None = None
    index: int = 0
    items: int = 0


async def measure_herald(
    args: argparse.Namespace, root: Path, prosody: Prosody, client: RawClient, db: str
) -> Result:
    """A fresh Herald on a fresh database caches the node; then both search paths."""
    database = ""
    if db == "sqlite":
        db_url = f"sqlite+aiosqlite:///{root / 'herald-sqlite.db'}"
    else:
        database = f"herald_bench_{uuid.uuid4().hex[:10]}"
        await asyncio.to_thread(_admin, f'CREATE DATABASE "{database}"')
        db_url = make_url(POSTGRES_URL).set(database=database).render_as_string(False)
    settings = settings_for(
        prosody,
        db_url,
        multicast={"enabled": False},
        pubsub={
            "rules": [{"node": "blog*", "sync": True, "parser": "atom"}],
            "max_items_per_node": args.items,
            "upstream_timeout": 120,
            # See the docstring: comparisons would measure Prosody, not search.
            "reconcile_interval": 86400,
        },
        log={"level": "warning"},
    )
    config = root / f"herald-{db}.toml"
    config.write_text(toml_for(settings))
    herald = spawn(config, "run")
    log = Drain(herald.stderr)
    Drain(herald.stdout)
    try:
        metrics = Metrics(settings.metrics.listen)
        deadline = time.monotonic() + 900
        while not metrics.connected():
            if herald.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Herald did not connect:\n{log.tail()}")
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)  # the privilege advertisement follows the handshake
        responsive = Responsiveness(client)
        pinging = asyncio.create_task(responsive.run())
        await client.iq(
            f"<iq type='get' id='{{id}}' to='{PROXY_JID}'><pubsub xmlns='{PUBSUB}'>"
            f"<items node='{NODE}' max_items='1'/></pubsub></iq>",
            timeout=120,
        )
        everything = mam_query("start", "2000-01-01T00:00:00Z")
        while True:
            reply = await client.iq(everything, timeout=120, check=False)
            if reply.get("type") == "result" and fin_count(reply) == args.items:
                break
            if herald.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the node was never searchable:\n{log.tail()}")
            await asyncio.sleep(1)
        # The sync's last steps (marking the node completed, the gauges, the garbage
        # collector's passes over 100,000 new objects) follow its last batch of items:
        # wait for them, so that the figures are a cached node's, not a sync's end.
        completed = ("herald_pubsub_cached_nodes", frozenset({("sync_state", "completed")}))
        while metrics.scrape().get(completed) != 1.0:
            if herald.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the node's sync never completed:\n{log.tail()}")
            await asyncio.sleep(0.5)
        responsive.stop = True
        await pinging
        await asyncio.sleep(args.settle)
        print(f"{db}: cached and indexed", flush=True)
        result = Result(db, [], {}, responsive.herald, responsive.server)
        echo = Measured("server alone")
        for field, kind, pattern in PATHS:
            measured = Measured(f"herald {kind}")
            for n in range(args.warmup + args.queries):
                value = pattern.format(n % VALUES)
                started = time.perf_counter()
                reply = await client.iq(mam_query(field, value), timeout=60, check=False)
                elapsed = time.perf_counter() - started
                result.counted[(kind, value)] = fin_count(reply)
                if n >= args.warmup:
                    measured.latencies.append(elapsed)
                    echo.latencies.append(await server_alone(client))
            result.paths.append(measured)
            print(measured.row(), flush=True)
        result.paths.append(echo)
        print(echo.row(), flush=True)
    finally:
        herald.terminate()
        herald.wait(10)
    result.index, result.items = await index_size(db_url)
    if database:
        await asyncio.to_thread(_admin, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return result


PING_EVERY = 0.05  # seconds


class Responsiveness:
    """While the node syncs: pings to Herald's pubsub address and, independently, to
    the server, each every PING_EVERY seconds after the previous answer. Herald does
    not implement XEP-0199, so its answer is an error, but it comes from its event
    loop: a loop held by the sync's work, or a stream busy with a huge stanza, shows
    as a late answer. The server's answers show what is the server's."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.herald = Measured("herald ping")
        self.server = Measured("server ping")
        self.stop = False

    async def run(self) -> None:
        await asyncio.gather(
            self._ping(PROXY_JID, self.herald), self._ping("localhost", self.server)
        )

    async def _ping(self, to: str, into: Measured) -> None:
        while not self.stop:
            started = time.perf_counter()
            await self.client.iq(
                f"<iq type='get' id='{{id}}' to='{to}'><ping xmlns='urn:xmpp:ping'/></iq>",
                timeout=120,
                check=False,
            )
            into.latencies.append(time.perf_counter() - started)
            await asyncio.sleep(PING_EVERY)


async def server_alone(client: RawClient) -> float:
    """The control: as many stanzas of the same size as a search's answer, through the
    server alone (to the client itself, then a ping to the server): the server's
    share of any tail."""
    started = time.perf_counter()
    for _ in range(20):
        client.send(ECHO)
    await client.iq("<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    return time.perf_counter() - started


async def run(args: argparse.Namespace, root: Path) -> None:
    began = time.perf_counter()
    standard = standard_prosody(root / "prosody")
    prosody = BigNodeProsody(
        **{f.name: getattr(standard, f.name) for f in dataclasses.fields(standard) if f.init}
    )
    prosody.max_items = args.items
    prosody.gc = args.prosody_gc
    prosody.users = {name: USERS[name] for name in ("olivia", "alice")}
    prosody.start()
    results: list[Result] = []
    baseline: list[Measured] = []
    try:
        owner = RawClient(f"{OWNER}/setup", USERS["olivia"])
        await owner.login("127.0.0.1", prosody.c2s_port)
        await publish_all(owner, args.items)
        await owner.close()
        print(f"published {args.items} items: {time.perf_counter() - began:.0f} s", flush=True)
        client = RawClient(f"{CLIENT}", USERS["alice"])
        await client.login("127.0.0.1", prosody.c2s_port)
        # Herald first: the client-side fetches make Prosody build 100,000-item
        # stanzas, and its garbage collection afterwards would stall the stanzas
        # Herald's results go through.
        for db in DBS if args.db == "both" else (args.db,):
            results.append(await measure_herald(args, root, prosody, client, db))
        for _field, kind, pattern in PATHS if args.baseline else ():
            measured = Measured(f"client {kind}")
            for n in range(args.baseline):
                value = pattern.format(n % VALUES)
                started = time.perf_counter()
                found = await client_side(client, kind, value)
                measured.latencies.append(time.perf_counter() - started)
                for result in results:
                    if result.counted[(kind, value)] != found:
                        ours = result.counted[(kind, value)]
                        raise RuntimeError(
                            f"{kind} {value}: Herald on {result.db} counts {ours}, client {found}"
                        )
            baseline.append(measured)
            print(measured.row(), flush=True)
        await client.close()
    finally:
        prosody.stop()
    report(args, results, baseline)
    print(f"\ntotal {time.perf_counter() - began:.0f} s")


def report(args: argparse.Namespace, results: list[Result], baseline: list[Measured]) -> None:
    print(f"\n{args.items} cached items, one query in flight; machine shared (2 cores, loaded)")
    print(f"  {'path':<18} {'n':>5} {'p50 ms':>10} {'p99 ms':>10} {'p99/p50':>9}")
    for path in baseline:
        print(path.row())
    theirs = {p.name: p for p in baseline}
    for result in results:
        print(f"\n  {result.db}")
        for path in result.paths:
            print(path.row())
        ours = {p.name: p for p in result.paths}
        for _field, kind, _pattern in PATHS:
            herald = ours[f"herald {kind}"]
            p50 = percentile(herald.latencies, 50)
            tail = percentile(herald.latencies, 99) / p50
            client = theirs.get(f"client {kind}")
            speedup = (
                f"{percentile(client.latencies, 50) / p50:8.1f}x"
                if client is not None and client.latencies
                else "       -"
            )
            print(
                f"  {kind:<9} p50 speed-up {speedup} (goal >= {GOAL_SPEEDUP:g}x)   "
                f"p99/p50 {tail:5.2f} (goal < {GOAL_TAIL:g})"
            )
        print(
            f"  index size: {result.index / 1e6:.1f} MB for {result.items / 1e6:.1f} MB of "
            f"items (ratio {result.index / result.items:.2f})"
        )
        if result.sync_herald is not None and result.sync_server is not None:
            print(f"  while the node synced, a ping every {PING_EVERY * 1000:.0f} ms:")
            print(result.sync_herald.row())
            print(result.sync_server.row())


async def main(args: argparse.Namespace) -> None:
    if args.root:
        await run(args, Path(args.root))
        return
    with tempfile.TemporaryDirectory(prefix="herald-search-bench-") as tmp:
        await run(args, Path(tmp))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200, help="per Herald path")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds to wait after the sync completes"
    )
    parser.add_argument("--baseline", type=int, default=5, help="client-side fetches per path")
    parser.add_argument("--root", help="keep the files (logs, database) in this directory")
    parser.add_argument("--db", choices=[*DBS, "both"], default="both")
    parser.add_argument(
        "--prosody-gc",
        default="generational",
        help="Prosody's garbage collector mode ('' for Prosody's default, incremental)",
    )
    asyncio.run(main(parser.parse_args()))
