"""A client that is not our test harness, through the proxy: aioxmpp (issues 13 and 14).

Every other integration test talks through slixmpp. These use aioxmpp's own services
(PubSubClient, DiscoClient, the IQ API with its RSM types) the way an application
would, so that what they assume about a pubsub service is checked against Herald:
- PubSubClient hands an event to the application as (service JID, node, item): an
  application matches it to the service it subscribed at, so events must come from
  the proxy address, not from upstream;
- PubSubClient.get_nodes() keeps only the disco#items entries that name the service
  asked: a listing that points upstream leaves it with no nodes at all;
- searching a cached node (XEP-0442 over XEP-0313) with aioxmpp's RSM paging.
The node owner (olivia) still uses slixmpp: only the client under test matters here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import aioxmpp
import aioxmpp.errors
import aioxmpp.forms
import aioxmpp.rsm.xso
import pytest

from component.app import Herald
from tests.conftest import PROXY_JID, UPSTREAM_JID, USERS, XmppServer
from tests.harness.aioclient import MAM, AioClient, MamFin, MamQuery, MamResult, connected
from tests.harness.client import TestClient
from tests.harness.prosody import Prosody
from tests.integration import test_pubsub_search as search_base
from tests.integration.test_pubsub_proxy import ATOM, Owner, start_proxy, unique, until

pytestmark = pytest.mark.integration

ESCAPED = f"{UPSTREAM_JID}@{PROXY_JID}"
FULLTEXT = "{urn:xmpp:fulltext:0}fulltext"
PUBSUB = "http://jabber.org/protocol/pubsub"
_seq = itertools.count()


def jid(address: str) -> aioxmpp.JID:
    return aioxmpp.JID.fromstr(address)


@pytest.fixture
async def owner(server: XmppServer) -> AsyncIterator[Owner]:
    """olivia, who creates and publishes to nodes upstream (slixmpp, as elsewhere)."""
    client = TestClient(
        f"olivia@localhost/real{next(_seq)}",
        USERS["olivia"],
        plugins=("xep_0030", "xep_0004", "xep_0060"),
    )
    await client.start(server.c2s_port)
    yield Owner(client)
    await client.stop()


@pytest.fixture
async def sqlite_proxy(server: XmppServer, tmp_path: Path) -> AsyncIterator[Herald]:
    """The proxy on SQLite: the subscription tests run on each server, not on each
    database (tests/integration/test_pubsub_subscriptions.py covers both)."""
    herald = await start_proxy(server, f"sqlite+aiosqlite:///{tmp_path / 'herald.db'}")
    yield herald
    await herald.stop()


def aio(server: XmppServer, name: str) -> contextlib.AbstractAsyncContextManager[AioClient]:
    """An aioxmpp client of user `name` on the test server (an async context manager)."""
    return connected(f"{name}@localhost/aioxmpp{next(_seq)}", USERS[name], server.c2s_port)


async def published(
    client: AioClient, node: str, item_id: str, timeout: float = 5.0
) -> tuple[str, str, str, Any]:
    """The first on_item_published for item `item_id` of `node`, whichever JID it names."""

    async def arrived() -> bool:
        return any(n == node and i == item_id for _, n, i, _ in client.published)

    await until(arrived, timeout)
    return next(e for e in client.published if e[1] == node and e[2] == item_id)


async def test_aioxmpp_subscribers_get_events_from_the_address_they_subscribed_at(
    server: XmppServer, sqlite_proxy: Herald, owner: Owner
) -> None:
    """Issue 13: alice subscribes at pubsub.localhost, bob at the escaped address; each
    gets the events through PubSubClient.on_item_published, naming that address."""
    node = unique("plain-aioxmpp")
    await owner.create(node)
    async with aio(server, "alice") as alice, aio(server, "bob") as bob:
        reply = await alice.pubsub.subscribe(jid(PROXY_JID), node)
        assert reply.payload.subscription == "subscribed"
        reply = await bob.pubsub.subscribe(jid(ESCAPED), node)
        assert reply.payload.subscription == "subscribed"

        await owner.publish(node, "first", "hello")
        sender, _, _, payload = await published(alice, node, "first")
        print("alice's event names", sender)
        # before issue 13: pubsub-origin.localhost, which an application that matches
        # events to the service it subscribed at never shows (its feed stays stale)
        assert sender == PROXY_JID
        assert payload is not None
        assert payload.tag == f"{{{ATOM}}}entry"
        assert payload.findtext(f"{{{ATOM}}}title") == "hello"
        sender, _, _, _ = await published(bob, node, "first")
        print("bob's event names", sender)
        assert sender == ESCAPED

        # the subscription as aioxmpp's client reads it back from the proxy
        listed = await alice.pubsub.get_subscriptions(jid(PROXY_JID))
        assert node in [s.node for s in listed.subscriptions]
        options = await alice.pubsub.get_subscription_config(jid(PROXY_JID), node)
        assert "pubsub#deliver" in {f.var for f in options.fields}

        # unsubscribed through aioxmpp: alice gets nothing more, bob still does
        await alice.pubsub.unsubscribe(jid(PROXY_JID), node)
        await owner.publish(node, "second", "again")
        assert (await published(bob, node, "second"))[0] == ESCAPED
        await asyncio.sleep(1.0)
        assert [e[2] for e in alice.published if e[1] == node] == ["first"]
        # every event either client saw came from the address it subscribed at
        assert {e[0] for e in alice.published} == {PROXY_JID}
        assert {e[0] for e in bob.published} == {ESCAPED}


@pytest.mark.parametrize("address", [PROXY_JID, ESCAPED], ids=["bare", "escaped"])
async def test_aioxmpp_discovers_nodes_at_the_proxy_address(
    server: XmppServer, sqlite_proxy: Herald, owner: Owner, address: str
) -> None:
    """Issue 13: DiscoClient's disco#items at a proxy address lists items naming that
    address, so PubSubClient.get_nodes (which drops items naming another JID) finds
    the node; disco#info shows Herald's identity and the features it implements."""
    node = unique("plain-disco")
    await owner.create(node, items=1)
    async with aio(server, "alice") as alice:
        items = await alice.disco.query_items(jid(address))
        jids = {str(i.jid) for i in items.items}
        print(f"disco#items at {address}: {len(items.items)} items naming {jids}")
        assert (address, node) in {(str(i.jid), i.node) for i in items.items}
        assert jids == {address}
        nodes = [name for name, _ in await alice.pubsub.get_nodes(jid(address))]
        assert node in nodes

        info = await alice.disco.query_info(jid(address))
        names = {i.name for i in info.identities if i.category == "pubsub"}
        assert names == {"Herald pubsub proxy"}
        features = set(info.features)
        for feature in ("rsm", "subscribe", "subscription-options"):
            assert f"{PUBSUB}#{feature}" in features
        assert {
            aioxmpp.pubsub.xso.Feature.SUBSCRIBE,
            aioxmpp.pubsub.xso.Feature.SUBSCRIPTION_OPTIONS,
        } <= await alice.pubsub.get_features(jid(address))


# --- issue 14: search through the proxy, on Prosody, SQLite and PostgreSQL ----------


@pytest.fixture
async def search_setup(
    prosody: Prosody, db_url: str
) -> AsyncIterator[tuple[XmppServer, Herald, dict[str, TestClient]]]:
    """Prosody (it grants the proxy IQ permissions; ejabberd 23.01 does not), the
    proxy on each database, and the slixmpp owner and reader that fill the cache."""
    herald = await start_proxy(prosody, db_url)
    made = {}
    for name in ("olivia", "alice"):
        client = TestClient(
            f"{name}@localhost/fill{next(_seq)}",
            USERS[name],
            plugins=("xep_0030", "xep_0004", "xep_0060"),
        )
        await client.start(prosody.c2s_port)
        made[name] = client
    yield prosody, herald, made
    for client in made.values():
        await client.stop()
    await herald.stop()


def search_form(fields: dict[str, str]) -> aioxmpp.forms.Data:
    """A submitted XEP-0313 search form, built with aioxmpp's data-form types."""
    form = aioxmpp.forms.Data(aioxmpp.forms.DataType.SUBMIT)
    form.fields.append(
        aioxmpp.forms.Field(var="FORM_TYPE", type_=aioxmpp.forms.FieldType.HIDDEN, values=[MAM])
    )
    for var, value in fields.items():
        form.fields.append(aioxmpp.forms.Field(var=var, values=[value]))
    return form


async def mam_search(
    client: AioClient,
    node: str,
    fields: dict[str, str] | None = None,
    rsm: aioxmpp.rsm.xso.ResultSetMetadata | None = None,
) -> tuple[list[str], MamFin, list[MamResult]]:
    """One XEP-0313 query at the proxy through aioxmpp's IQ API: the item ids of the
    result messages, the <fin/>, and the results."""
    query = MamQuery(node=node, queryid=unique("aq"))
    if fields is not None:
        query.form = search_form(fields)
    query.rsm = rsm
    fin = await client.send(aioxmpp.IQ(type_=aioxmpp.IQType.SET, to=jid(PROXY_JID), payload=query))
    assert isinstance(fin, MamFin)

    # the result messages precede the <fin/>; wait (briefly) until aioxmpp has handed
    # over the last one the <fin/> names
    def mine() -> list[MamResult]:
        return [r for r in client.mam_results if r.queryid == query.queryid]

    last = None if fin.rsm is None or fin.rsm.last is None else fin.rsm.last.value

    async def all_in() -> bool:
        return last is None or bool(mine() and mine()[-1].id_ == last)

    await until(all_in, 3.0)
    results = mine()
    return [r.id_ for r in results], fin, results


def rsm_of(fin: MamFin) -> tuple[str | None, str | None, int | None, bool]:
    rsm = fin.rsm
    return (
        rsm.first.value if rsm.first is not None else None,
        rsm.last.value if rsm.last is not None else None,
        rsm.count,
        fin.complete,
    )


async def refused(call: Awaitable[Any]) -> aioxmpp.errors.XMPPError:
    with pytest.raises(aioxmpp.errors.XMPPError) as info:
        await call
    print(f"refused: {info.value.condition}: {info.value.text}")
    return info.value


async def test_aioxmpp_searches_a_cached_node(
    search_setup: tuple[XmppServer, Herald, dict[str, TestClient]],
) -> None:
    """Issue 14: full-text and parsed-field search with RSM paging, from aioxmpp."""
    server, herald, fillers = search_setup
    node = await search_base.cached_blog(herald, fillers)
    async with aio(server, "alice") as alice:
        # the form request (type get) lists the fields, parsed keys included
        form = await alice.send(
            aioxmpp.IQ(type_=aioxmpp.IQType.GET, to=jid(PROXY_JID), payload=MamQuery(node=node))
        )
        assert isinstance(form, MamQuery)
        assert form.form is not None
        fields = {f.var for f in form.form.fields}
        assert {"FORM_TYPE", "start", "end", FULLTEXT, "{urn:herald:parsed:0}title"} <= fields
        features = set((await alice.disco.query_info(jid(PROXY_JID), node=node)).features)
        assert {MAM, "urn:xmpp:fulltext:0"} <= features

        # full text: the result messages carry the item as a pubsub event, with a delay
        ids, fin, results = await mam_search(alice, node, {FULLTEXT: "QUICK"})
        assert ids == ["p0", "p2", "p4", "p5"]
        assert rsm_of(fin) == ("p0", "p5", 4, True)
        forwarded = results[0].forwarded
        assert forwarded.delay is not None
        assert forwarded.delay.stamp is not None
        event = forwarded.stanza.xep0060_event
        (item,) = event.payload.items
        assert (event.payload.node, item.id_) == (node, "p0")
        assert item.unregistered_payload[0].findtext(f"{{{ATOM}}}title") == "Hello world"
        assert (await mam_search(alice, node, {FULLTEXT: "creme cafe"}))[0] == ["p1"]
        # a parsed field, alone and with the full text
        assert (await mam_search(alice, node, {"{urn:herald:parsed:0}author": "alice"}))[0] == [
            "p0",
            "p2",
            "p5",
        ]
        both = {"{urn:herald:parsed:0}categories": "news", FULLTEXT: "quick"}
        assert (await mam_search(alice, node, both))[0] == ["p0", "p2", "p5"]

        # paging with aioxmpp's own RSM requests: limit, next_page, last_page,
        # previous_page
        RSM = aioxmpp.rsm.xso.ResultSetMetadata
        quick = {FULLTEXT: "quick"}
        ids, fin, _ = await mam_search(alice, node, quick, RSM.limit(2))
        assert (ids, rsm_of(fin)) == (["p0", "p2"], ("p0", "p2", 4, False))
        ids, fin, _ = await mam_search(alice, node, quick, fin.rsm.next_page(2))
        assert (ids, rsm_of(fin)) == (["p4", "p5"], ("p4", "p5", 4, True))
        ids, fin, _ = await mam_search(alice, node, quick, RSM.last_page(3))
        assert (ids, rsm_of(fin)) == (["p2", "p4", "p5"], ("p2", "p5", 4, False))
        ids, fin, _ = await mam_search(alice, node, quick, fin.rsm.previous_page(3))
        assert (ids, rsm_of(fin)) == (["p0"], ("p0", "p0", 4, True))

        # refusals reach aioxmpp as the XMPPError the XEP names, with a text
        error = await refused(mam_search(alice, node, {"{urn:example}nope": "x"}))
        assert error.condition == aioxmpp.ErrorCondition.FEATURE_NOT_IMPLEMENTED
        assert error.text
        unknown = RSM.limit(2)
        unknown.after = aioxmpp.rsm.xso.After("nope")
        error = await refused(mam_search(alice, node, quick, unknown))
        assert error.condition == aioxmpp.ErrorCondition.ITEM_NOT_FOUND
