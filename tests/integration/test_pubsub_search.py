"""Searching cached nodes (XEP-0442) through the proxy, on Prosody, SQLite and PostgreSQL.

Raw XEP-0313 queries from a real client: result messages, then the <fin/> with RSM.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from component.app import Herald
from tests.conftest import PROXY_JID, UPSTREAM_JID, USERS, XmppServer, standard_prosody
from tests.harness.client import TestClient
from tests.harness.prosody import Prosody
from tests.integration.test_pubsub_proxy import (
    ATOM,
    Owner,
    cache_node,
    proxy_of,
    requests,
    start_proxy,
    unique,
    until,
)

pytestmark = pytest.mark.integration

MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
XDATA = "jabber:x:data"
FULLTEXT = "{urn:xmpp:fulltext:0}fulltext"
EVENT = "http://jabber.org/protocol/pubsub#event"
DISCO_INFO = "http://jabber.org/protocol/disco#info"


@pytest.fixture
def server(prosody: Prosody) -> XmppServer:
    """Prosody only: it grants the proxy IQ permissions (ejabberd 23.01 does not)."""
    return prosody


@pytest.fixture
async def proxy(server: XmppServer, db_url: str) -> AsyncIterator[Herald]:
    herald = await start_proxy(server, db_url)
    yield herald
    await herald.stop()


async def mam_client(server: XmppServer, name: str, resource: str) -> TestClient:
    """A connected client of the user that collects the MAM result messages it gets."""
    client = TestClient(
        f"{name}@localhost/{resource}", USERS[name], plugins=("xep_0030", "xep_0004", "xep_0060")
    )
    # slixmpp's own "message" event is for messages with a <body/> only.
    client.register_handler(
        Callback(
            "mam results",
            MatchXPath(f"{{jabber:client}}message/{{{MAM}}}result"),
            client.messages.put_nowait,
        )
    )
    await client.start(server.c2s_port)
    return client


@pytest.fixture
async def clients(server: XmppServer) -> AsyncIterator[dict[str, TestClient]]:
    made = {name: await mam_client(server, name, "search") for name in ("olivia", "alice")}
    yield made
    for client in made.values():
        await client.stop()


POSTS = [
    ("p0", "Hello world", "the quick brown fox", ["news"], "Alice"),
    ("p1", "Café crème", "a lazy dog sleeps", ["pets"], "Bob"),
    ("p2", "Fox news", "quick thinking pays", ["news", "pets"], "Alice"),
    ("p3", "Nothing", "nothing to see here", [], "Carol"),
    ("p4", "Quick quiz", "quick questions", ["quiz"], "Bob"),
    ("p5", "Last", "the quick end", ["news"], "Alice"),
]


def atom(title: str, content: str, tags: list[str], author: str) -> ET.Element:
    element = ET.Element(f"{{{ATOM}}}entry")
    ET.SubElement(element, f"{{{ATOM}}}title").text = title
    ET.SubElement(element, f"{{{ATOM}}}content").text = content
    name = ET.SubElement(ET.SubElement(element, f"{{{ATOM}}}author"), f"{{{ATOM}}}name")
    name.text = author
    for tag in tags:
        ET.SubElement(element, f"{{{ATOM}}}category", {"term": tag})
    return element


async def search(
    client: TestClient,
    node: str,
    fields: dict[str, str] | None = None,
    rsm: dict[str, str] | None = None,
    flip: bool = False,
) -> tuple[list[str], ET.Element, list[ET.Element]]:
    """Item ids of the result messages, the <fin/>, and the messages, for one query."""
    while not client.messages.empty():
        client.messages.get_nowait()
    iq = client.make_iq_set(ito=PROXY_JID)
    queryid = unique("q")
    query = ET.SubElement(iq.xml, f"{{{MAM}}}query", {"node": node, "queryid": queryid})
    if fields is not None:
        form = ET.SubElement(query, f"{{{XDATA}}}x", {"type": "submit"})
        form_type = ET.SubElement(form, f"{{{XDATA}}}field", {"var": "FORM_TYPE"})
        ET.SubElement(form_type, f"{{{XDATA}}}value").text = MAM
        for var, value in fields.items():
            field = ET.SubElement(form, f"{{{XDATA}}}field", {"var": var})
            ET.SubElement(field, f"{{{XDATA}}}value").text = value
    if rsm is not None:
        rsm_el = ET.SubElement(query, f"{{{RSM}}}set")
        for key, value in rsm.items():
            ET.SubElement(rsm_el, f"{{{RSM}}}{key}").text = value
    if flip:
        ET.SubElement(query, f"{{{MAM}}}flip-page")
    reply = await iq.send(timeout=5)
    fin = reply.xml.find(f"{{{MAM}}}fin")
    assert fin is not None
    await asyncio.sleep(0.05)  # the messages precede the result; let their handlers run
    messages = []
    while not client.messages.empty():
        message = client.messages.get_nowait().xml
        result = message.find(f"{{{MAM}}}result")
        if result is not None and result.get("queryid") == queryid:
            messages.append(message)
    ids = [m.find(f"{{{MAM}}}result").get("id", "") for m in messages]  # type: ignore[union-attr]
    return ids, fin, messages


def rsm_of(fin: ET.Element) -> tuple[str | None, str | None, str | None, str | None]:
    def text(name: str) -> str | None:
        found = fin.find(f"{{{RSM}}}set/{{{RSM}}}{name}")
        return None if found is None else found.text

    return text("first"), text("last"), text("count"), fin.get("complete")


async def refusal(call: Any) -> tuple[str, str]:
    with pytest.raises(IqError) as info:
        await call
    error = info.value.iq["error"]
    print(f"refused: {error['condition']}: {error['text']}")
    return error["condition"], error["text"]


async def cached_blog(proxy: Herald, clients: dict[str, TestClient]) -> str:
    """A cached node holding POSTS: the first three fetched at once (they share the
    time of the fetch), the others from notifications, each with its own time."""
    owner = Owner(clients["olivia"])
    node = unique("blog-search")
    await owner.create(node)

    async def publish(post: tuple[str, str, str, list[str], str]) -> None:
        payload = atom(*post[1:])
        await owner.ps.publish(UPSTREAM_JID, node, id=post[0], payload=payload, timeout=5)

    for post in POSTS[:3]:
        await publish(post)
    await cache_node(proxy, clients["alice"], node)
    cache = proxy_of(proxy).cache
    for post in POSTS[3:]:
        await publish(post)

        async def stored(item_id: str = post[0]) -> bool:
            state = cache.node(UPSTREAM_JID, node)
            return state is not None and item_id in {i.item_id for i in await cache.items(state)}

        await until(stored)
    return node


async def test_search_a_cached_node(proxy: Herald, clients: dict[str, TestClient]) -> None:
    alice = clients["alice"]
    node = await cached_blog(proxy, clients)
    hits = requests(proxy, "search", "hit")

    # disco#info on the node advertises search
    info = await alice.plugin["xep_0030"].get_info(jid=PROXY_JID, node=node, timeout=5)
    features = {f.get("var") for f in info.xml.iter(f"{{{DISCO_INFO}}}feature")}
    assert {MAM, "urn:xmpp:fulltext:0"} <= features

    # the form lists the fields, parsed keys included
    iq = alice.make_iq_get(ito=PROXY_JID)
    ET.SubElement(iq.xml, f"{{{MAM}}}query", {"node": node})
    form = await iq.send(timeout=5)
    fields = {f.get("var") for f in form.xml.iter(f"{{{XDATA}}}field")}
    parsed = {f"{{urn:herald:parsed:0}}{k}" for k in ("title", "author", "categories", "content")}
    assert {"FORM_TYPE", "start", "end", FULLTEXT} | parsed <= fields

    # fulltext: every word, in the payload's text, case and accents folded
    ids, fin, messages = await search(alice, node, {FULLTEXT: "QUICK"})
    assert ids == ["p0", "p2", "p4", "p5"]
    assert rsm_of(fin) == ("p0", "p5", "4", "true")
    first = messages[0]
    assert first.get("from") == PROXY_JID
    item = first.find(
        f"{{{MAM}}}result/{{urn:xmpp:forward:0}}forwarded/{{jabber:client}}message"
        f"/{{{EVENT}}}event/{{{EVENT}}}items/{{{EVENT}}}item"
    )
    assert item is not None
    assert item.get("id") == "p0"
    assert item.findtext(f"{{{ATOM}}}entry/{{{ATOM}}}title") == "Hello world"
    delay = first.find(f"{{{MAM}}}result/{{urn:xmpp:forward:0}}forwarded/{{urn:xmpp:delay}}delay")
    assert delay is not None
    assert delay.get("stamp", "").endswith("Z")
    assert (await search(alice, node, {FULLTEXT: "creme cafe"}))[0] == ["p1"]
    assert (await search(alice, node, {FULLTEXT: "quick dog"}))[0] == []

    # parsed fields
    assert (await search(alice, node, {"{urn:herald:parsed:0}title": "fox"}))[0] == ["p2"]
    assert (await search(alice, node, {"{urn:herald:parsed:0}author": "alice"}))[0] == [
        "p0",
        "p2",
        "p5",
    ]
    both = {"{urn:herald:parsed:0}categories": "news", FULLTEXT: "quick"}
    assert (await search(alice, node, both))[0] == ["p0", "p2", "p5"]

    # start/end: the item's time in the node
    held = await proxy_of(proxy).cache.items(proxy_of(proxy).cache.node(UPSTREAM_JID, node))  # type: ignore[arg-type]
    stamp = {i.item_id: i.created for i in held}
    window = {"start": _xs(stamp["p3"]), "end": _xs(stamp["p4"])}
    assert (await search(alice, node, window))[0] == ["p3", "p4"]
    assert (await search(alice, node, {"end": _xs(stamp["p3"])}))[0] == ["p0", "p1", "p2", "p3"]
    assert (await search(alice, node, {"start": _xs(stamp["p5"])}))[0] == ["p5"]

    # paging both ways, with max
    ids, fin, _ = await search(alice, node, {FULLTEXT: "quick"}, {"max": "2"})
    assert (ids, rsm_of(fin)) == (["p0", "p2"], ("p0", "p2", "4", "false"))
    ids, fin, _ = await search(alice, node, {FULLTEXT: "quick"}, {"max": "2", "after": "p2"})
    assert (ids, rsm_of(fin)) == (["p4", "p5"], ("p4", "p5", "4", "true"))
    ids, fin, _ = await search(alice, node, {FULLTEXT: "quick"}, {"max": "3", "before": ""})
    assert (ids, rsm_of(fin)) == (["p2", "p4", "p5"], ("p2", "p5", "4", "false"))
    ids, fin, _ = await search(alice, node, {FULLTEXT: "quick"}, {"max": "3", "before": "p2"})
    assert (ids, rsm_of(fin)) == (["p0"], ("p0", "p0", "4", "true"))
    ids, _, _ = await search(alice, node, {FULLTEXT: "quick"}, {"max": "2"}, flip=True)
    assert ids == ["p2", "p0"]
    print(f"search hits counted: {requests(proxy, 'search', 'hit') - hits}")
    assert requests(proxy, "search", "hit") - hits >= 14

    # malformed queries get the error XEP-0313 names, with a text
    bad = search(alice, node, {"{urn:example}nope": "x"})
    assert (await refusal(bad))[0] == "feature-not-implemented"
    assert (await refusal(search(alice, node, {"start": "yesterday"})))[0] == "bad-request"
    missing = search(alice, node, {FULLTEXT: "quick"}, {"after": "nope"})
    assert (await refusal(missing))[0] == "item-not-found"


async def test_search_with_a_publisher_end_to_end(tmp_path: Path, db_url: str) -> None:
    """XEP-0313's `with` names the item's publisher: on a Prosody that tells it
    (expose_publisher), items published by two users are told apart."""
    server = standard_prosody(tmp_path / "prosody")
    server.pubsub_options = ["expose_publisher = true"]
    server.start()
    herald = None
    made: list[TestClient] = []
    try:
        herald = await start_proxy(server, db_url)
        for name in ("olivia", "alice"):
            made.append(await mam_client(server, name, "with"))
        olivia, alice = made
        node = unique("blog-with")
        await Owner(olivia).create(node, publish_model="open")
        ps_of = {c: c.plugin["xep_0060"] for c in made}
        for client, item_id in ((olivia, "o1"), (alice, "a1"), (olivia, "o2")):
            payload = atom(f"post {item_id}", "words", [], "someone")
            await ps_of[client].publish(UPSTREAM_JID, node, id=item_id, payload=payload, timeout=5)
        await cache_node(herald, alice, node)
        cache = proxy_of(herald).cache
        state = cache.node(UPSTREAM_JID, node)
        assert state is not None
        publishers = {i.item_id: i.publisher for i in await cache.items(state)}
        print("publishers as cached:", publishers)
        hits = requests(herald, "search", "hit")
        assert (await search(alice, node, {"with": "alice@localhost"}))[0] == ["a1"]
        assert (await search(alice, node, {"with": "olivia@localhost"}))[0] == ["o1", "o2"]
        # Prosody tells bare JIDs: a full JID (XEP-0313: that exact JID) matches none
        assert (await search(alice, node, {"with": "olivia@localhost/with"}))[0] == []
        assert (await search(alice, node, {"with": "bob@localhost"}))[0] == []
        assert requests(herald, "search", "hit") - hits == 4  # answered by Herald
    finally:
        for client in made:
            await client.stop()
        if herald is not None:
            await herald.stop()
        server.stop()


def _xs(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def test_nodes_not_served_from_the_cache(
    proxy: Herald, clients: dict[str, TestClient]
) -> None:
    """Not cached: no search from the cache, and Prosody grants no MAM permission to
    ask as the user, so a refusal that says why; a closed node is never searched."""
    owner = Owner(clients["olivia"])
    alice = clients["alice"]
    plain = unique("plain")  # no sync rule matches it
    await owner.create(plain, items=2)
    condition, text = await refusal(search(alice, plain, {FULLTEXT: "title"}))
    assert condition == "feature-not-implemented"
    assert "cache" in text
    info = await alice.plugin["xep_0030"].get_info(jid=PROXY_JID, node=plain, timeout=5)
    assert MAM not in {f.get("var") for f in info.xml.iter(f"{{{DISCO_INFO}}}feature")}

    closed = unique("blog-closed")
    await owner.create(closed, access="whitelist", items=2)
    condition, text = await refusal(search(alice, closed, {FULLTEXT: "title"}))
    assert condition == "feature-not-implemented"
    assert "open to anyone" in text
    await asyncio.sleep(0.5)  # a sync would have started by now: none may
    state = proxy_of(proxy).cache.node(UPSTREAM_JID, closed)
    assert state is None or not state.serves_from_cache

    no_node = alice.make_iq_set(ito=PROXY_JID)
    ET.SubElement(no_node.xml, f"{{{MAM}}}query")
    assert (await refusal(no_node.send(timeout=5)))[0] == "feature-not-implemented"
