"""Subscriptions Herald holds at its proxy addresses, on Prosody and ejabberd (issue 13).

A subscriber at the proxy gets its notifications from the address it subscribed at;
upstream sends Herald one per publication, whatever the number of local subscribers.
Nodes here match no sync rule (plain-*), so only the held subscriptions subscribe
Herald upstream.
"""

from __future__ import annotations

import asyncio
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from component.app import Herald
from tests.conftest import PROXY_JID, UPSTREAM_JID, XmppServer
from tests.harness.client import TestClient
from tests.integration import test_pubsub_proxy as base
from tests.integration.test_pubsub_proxy import (
    Owner,
    proxy_of,
    sample,
    start_proxy,
    unique,
    until,
)

pytestmark = pytest.mark.integration
clients = base.clients  # fixtures shared with the proxy tests
proxy = base.proxy

PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT = "http://jabber.org/protocol/pubsub#event"
ERRORS = "http://jabber.org/protocol/pubsub#errors"
FORM = "jabber:x:data"
ESCAPED = f"{UPSTREAM_JID}@{PROXY_JID}"


async def ask(
    client: TestClient, itype: str, to: str, action: str, attrs: dict[str, str], **extra: Any
) -> ET.Element:
    """A pubsub request from the client; the reply's <pubsub/> (or an empty element)."""
    iq = client.make_iq(ito=to, itype=itype)
    pubsub = ET.SubElement(iq.xml, f"{{{PUBSUB}}}pubsub")
    element = ET.SubElement(pubsub, f"{{{PUBSUB}}}{action}", attrs)
    if "form" in extra:
        target = element if action == "options" else ET.SubElement(pubsub, f"{{{PUBSUB}}}options")
        form = ET.SubElement(target, f"{{{FORM}}}x", {"type": "submit"})
        fields = {"FORM_TYPE": "http://jabber.org/protocol/pubsub#subscribe_options"}
        fields.update(extra["form"])
        for var, value in fields.items():
            field = ET.SubElement(form, f"{{{FORM}}}field", {"var": var})
            ET.SubElement(field, f"{{{FORM}}}value").text = value
    reply = await iq.send(timeout=5)
    found = reply.xml.find(f"{{{PUBSUB}}}pubsub")
    return found if found is not None else ET.Element("none")


async def subscribe(client: TestClient, node: str, to: str = PROXY_JID, **extra: Any) -> str:
    """Subscribe the client's bare JID; the subid."""
    got = await ask(
        client, "set", to, "subscribe", {"node": node, "jid": client.boundjid.bare}, **extra
    )
    sub = got.find(f"{{{PUBSUB}}}subscription")
    assert sub is not None
    assert sub.get("subscription") == "subscribed"
    return sub.get("subid", "")


async def error_of(call: Any) -> tuple[str, str | None]:
    with pytest.raises(IqError) as info:
        await call
    error = info.value.iq.xml.find("{jabber:client}error")
    specific = next(
        (c.tag.partition("}")[2] for c in error if c.tag.startswith(f"{{{ERRORS}}}")), None
    )
    print("refused:", info.value.iq["error"]["condition"], specific, info.value.iq["error"]["text"])
    return info.value.iq["error"]["condition"], specific


def events(client: TestClient) -> asyncio.Queue[Any]:
    """The client's pubsub event messages (slixmpp's "message" event wants a <body/>)."""
    queue: asyncio.Queue[Any] | None = getattr(client, "pubsub_events", None)
    if queue is None:
        from slixmpp.xmlstream.handler import Callback
        from slixmpp.xmlstream.matcher import MatchXPath

        made: asyncio.Queue[Any] = asyncio.Queue()
        client.register_handler(
            Callback(
                "events", MatchXPath(f"{{jabber:client}}message/{{{EVENT}}}event"), made.put_nowait
            )
        )
        client.pubsub_events = made  # type: ignore[attr-defined]
        queue = made
    return queue


async def items_from(client: TestClient, sender: str, wanted: str, timeout: float = 5.0) -> Any:
    """The notification of item `wanted` from `sender` (others, such as ejabberd's replay
    of the last item on subscribing, are skipped)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        msg = await asyncio.wait_for(events(client).get(), max(left, 0.01))
        ids = [i.get("id") for i in msg.xml.iterfind(f"{{{EVENT}}}event/{{{EVENT}}}items/*")]
        if str(msg["from"]) == sender and wanted in ids:
            return msg


async def nothing_for(client: TestClient, wanted: str, wait: float = 1.0) -> None:
    """No notification of item `wanted` arrives within `wait` seconds."""
    await asyncio.sleep(wait)
    seen = []
    while not events(client).empty():
        msg = events(client).get_nowait()
        seen += [i.get("id") for i in msg.xml.iterfind(f"{{{EVENT}}}event/{{{EVENT}}}items/*")]
    print(f"within {wait} s: items {seen}")
    assert wanted not in seen, f"{wanted} was delivered"


def counters() -> dict[str, float]:
    return {
        name: sample(f"herald_pubsub_{name}_total") or 0.0
        for name in ("notifications_fanned_out", "upstream_notifications_saved")
    }


async def test_subscribers_at_the_proxy_get_events_from_the_address_they_used(
    proxy: Herald,
    clients: dict[str, TestClient],
) -> None:
    owner = Owner(clients["olivia"])
    node = unique("plain-sub")
    await owner.create(node)
    alice, bob = clients["alice"], clients["bob"]
    events(alice), events(bob)
    subid = await subscribe(alice, node)
    assert subid
    await subscribe(bob, node, to=ESCAPED)
    assert sample("herald_pubsub_local_subscriptions") == 2
    before = counters()
    await owner.publish(node, "first", "hello")
    got = await items_from(alice, PROXY_JID, "first")
    assert got.xml.find(f"{{{EVENT}}}event/{{{EVENT}}}items/{{{EVENT}}}item/*") is not None
    assert got.xml.find("{http://jabber.org/protocol/shim}headers") is None  # one subscription
    await items_from(bob, ESCAPED, "first")
    after = counters()
    deltas = {k: after[k] - before[k] for k in after}
    print("one publication, two local subscribers:", deltas)
    assert deltas == {"notifications_fanned_out": 2, "upstream_notifications_saved": 1}
    # <subscriptions/> at the proxy lists what alice holds there
    listing = await ask(alice, "get", PROXY_JID, "subscriptions", {})
    assert [(s.get("node"), s.get("subid")) for s in listing.iter(f"{{{PUBSUB}}}subscription")] == [
        (node, subid)
    ]
    # unsubscribed: nothing more for alice; bob still gets them
    await ask(alice, "set", PROXY_JID, "unsubscribe", {"node": node, "jid": alice.boundjid.bare})
    await owner.publish(node, "second", "again")
    await items_from(bob, ESCAPED, "second")
    await nothing_for(alice, "second")
    assert await error_of(
        ask(alice, "set", PROXY_JID, "subscribe", {"node": node, "jid": "bob@localhost"})
    ) == ("bad-request", "invalid-jid")
    assert await error_of(
        ask(
            alice,
            "set",
            PROXY_JID,
            "subscribe",
            {"node": unique("plain-none"), "jid": "alice@localhost"},
        )
    ) == ("item-not-found", None)


async def test_several_subscriptions_and_their_options(
    proxy: Herald,
    clients: dict[str, TestClient],
) -> None:
    owner = Owner(clients["olivia"])
    node = unique("plain-opts")
    await owner.create(node)
    alice = clients["alice"]
    events(alice)
    first = await subscribe(alice, node)
    assert await subscribe(alice, node) == first  # the same again: the same subscription
    quiet = await subscribe(alice, node, form={"pubsub#deliver": "0"})
    assert quiet != first
    assert await error_of(
        ask(alice, "set", PROXY_JID, "unsubscribe", {"node": node, "jid": "alice@localhost"})
    ) == ("bad-request", "subid-required")
    assert await error_of(
        ask(
            alice,
            "get",
            PROXY_JID,
            "options",
            {"node": node, "jid": "alice@localhost", "subid": "nope"},
        )
    ) == ("not-acceptable", "invalid-subid")
    assert await error_of(subscribe(alice, node, form={"pubsub#digest": "1"})) == (
        "feature-not-implemented",
        "unsupported",
    )
    assert await error_of(subscribe(alice, node, form={"pubsub#no-such-option": "1"})) == (
        "bad-request",
        "invalid-options",
    )
    assert await error_of(
        ask(
            alice,
            "set",
            PROXY_JID,
            "options",
            {"node": node, "jid": "alice@localhost", "subid": quiet},
            form={"pubsub#digest": "1"},
        )
    ) == ("feature-not-implemented", "unsupported")
    got = await ask(
        alice, "get", PROXY_JID, "options", {"node": node, "jid": "alice@localhost", "subid": quiet}
    )
    values = {f.get("var"): f.findtext(f"{{{FORM}}}value") for f in got.iter(f"{{{FORM}}}field")}
    assert values["pubsub#deliver"] == "0"
    # both subscriptions deliver: one message naming both subids
    await ask(
        alice,
        "set",
        PROXY_JID,
        "options",
        {"node": node, "jid": "alice@localhost", "subid": quiet},
        form={"pubsub#deliver": "1"},
    )
    await owner.publish(node, "both", "x")
    msg = await items_from(alice, PROXY_JID, "both")
    headers = [h.text for h in msg.xml.iter("{http://jabber.org/protocol/shim}header")]
    assert sorted(headers) == sorted([first, quiet])
    # the first switched off: the message names only the other
    await ask(
        alice,
        "set",
        PROXY_JID,
        "options",
        {"node": node, "jid": "alice@localhost", "subid": first},
        form={"pubsub#deliver": "0"},
    )
    await owner.publish(node, "one", "x")
    msg = await items_from(alice, PROXY_JID, "one")
    assert [h.text for h in msg.xml.iter("{http://jabber.org/protocol/shim}header")] == [quiet]
    await ask(
        alice,
        "set",
        PROXY_JID,
        "unsubscribe",
        {"node": node, "jid": "alice@localhost", "subid": first},
    )
    listing = await ask(alice, "get", PROXY_JID, "subscriptions", {"node": node})
    assert [s.get("subid") for s in listing.iter(f"{{{PUBSUB}}}subscription")] == [quiet]
    assert PROXY_JID in await upstream_subscribers(clients["olivia"], node)
    # the last one gone: Herald's own subscription upstream goes too
    await ask(alice, "set", PROXY_JID, "unsubscribe", {"node": node, "jid": "alice@localhost"})
    assert not proxy_of(proxy).held.holds(UPSTREAM_JID, node)
    assert PROXY_JID not in await upstream_subscribers(clients["olivia"], node)


async def upstream_subscribers(owner: TestClient, node: str) -> list[str]:
    """The node's subscribers as upstream lists them to its owner."""
    iq = owner.make_iq_get(ito=UPSTREAM_JID)
    pubsub = ET.SubElement(iq.xml, f"{{{PUBSUB}#owner}}pubsub")
    ET.SubElement(pubsub, f"{{{PUBSUB}#owner}}subscriptions", {"node": node})
    reply = await iq.send(timeout=5)
    found = [s.get("jid", "") for s in reply.xml.iter(f"{{{PUBSUB}#owner}}subscription")]
    print("upstream subscribers:", found)
    return found


async def _drop_herald_upstream(herald: Herald, node: str) -> None:
    """What a server that forgot Herald's subscription leaves: none upstream."""
    pubsub = ET.Element(f"{{{PUBSUB}}}pubsub")
    ET.SubElement(pubsub, f"{{{PUBSUB}}}unsubscribe", {"node": node, "jid": PROXY_JID})
    await proxy_of(herald).upstream.as_herald("set", UPSTREAM_JID, pubsub)


async def test_subscriptions_survive_a_restart_and_a_reconnect(
    server: XmppServer,
    db_url: str,
    clients: dict[str, TestClient],
) -> None:
    owner = Owner(clients["olivia"])
    node = unique("plain-restart")
    await owner.create(node)
    alice = clients["alice"]
    events(alice)
    herald = await start_proxy(server, db_url)
    try:
        await subscribe(alice, node)
        await _drop_herald_upstream(herald, node)
    finally:
        await herald.stop()
    herald = await start_proxy(server, db_url)
    held = proxy_of(herald).held

    async def resubscribed() -> bool:
        return held.subscribed_upstream(UPSTREAM_JID, node)

    try:
        await until(resubscribed)
        await owner.publish(node, "after-restart", "x")
        await items_from(alice, PROXY_JID, "after-restart")
        # a dropped connection: Herald subscribes upstream again once it is back
        await _drop_herald_upstream(herald, node)
        component = proxy_of(herald)
        component.connected_event.clear()
        component.transport.abort()

        await asyncio.wait_for(component.connected_event.wait(), 15)
        await until(resubscribed)
        await owner.publish(node, "after-reconnect", "x")
        await items_from(alice, PROXY_JID, "after-reconnect")
    finally:
        await herald.stop()


async def test_a_node_no_longer_shareable_ends_its_local_subscriptions(
    server: XmppServer,
    proxy: Herald,
    clients: dict[str, TestClient],
) -> None:
    owner = Owner(clients["olivia"])
    node = unique("plain-closing")
    await owner.create(node)
    alice = clients["alice"]
    events(alice)
    subid = await subscribe(alice, node)
    await owner.configure(node, access_model="whitelist")
    await proxy_of(proxy).held.recheck(UPSTREAM_JID, node)  # an upkeep round, now

    async def ended() -> Any:
        while True:
            msg = await events(alice).get()
            sub = msg.xml.find(f"{{{EVENT}}}event/{{{EVENT}}}subscription")
            if sub is not None and str(msg["from"]) == PROXY_JID:
                return sub

    sub = await asyncio.wait_for(ended(), 5)
    assert (sub.get("node"), sub.get("subscription"), sub.get("subid")) == (node, "none", subid)
    assert not proxy_of(proxy).held.holds(UPSTREAM_JID, node)
    # later requests go as the user: Prosody (privileged) answers for the whitelist,
    # ejabberd (no IQ permission) cannot be asked
    condition, _ = await error_of(subscribe(alice, node))
    assert condition in ("forbidden", "not-authorized", "not-allowed")


async def _last_item_of(client: TestClient, sender: str, wait: float = 1.0) -> Any:
    """The first event from `sender` within `wait` seconds (the last published item
    sent on subscribing), or None."""
    deadline = asyncio.get_running_loop().time() + wait
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            msg = await asyncio.wait_for(events(client).get(), left)
        except TimeoutError:
            break
        if str(msg["from"]) == sender:
            return msg
    return None


def _item_ids(msg: Any) -> list[str]:
    return [i.get("id", "") for i in msg.xml.iterfind(f"{{{EVENT}}}event/{{{EVENT}}}items/*")]


@pytest.mark.parametrize("send_last", ["on_sub", "on_sub_and_presence", "never", None])
async def test_a_new_subscriber_gets_the_last_item_as_a_direct_subscriber_would(
    proxy: Herald,
    clients: dict[str, TestClient],
    send_last: str | None,
) -> None:
    """XEP-0060 §6.1.7: what upstream sends a direct subscriber right after the
    subscribe result (None: the server's default), Herald sends its own subscriber,
    from the address it subscribed at, though Herald's upstream subscription exists."""
    owner = Owner(clients["olivia"])
    node = unique("plain-last")
    await owner.create(
        node, **({} if send_last is None else {"send_last_published_item": send_last})
    )
    await owner.publish(node, "older", "x")
    await owner.publish(node, "newest", "x")
    alice, bob, dave = clients["alice"], clients["bob"], clients["dave"]
    events(alice), events(bob), events(dave)
    await subscribe(bob, node)  # Herald is subscribed upstream before alice comes
    await asyncio.sleep(0.3)
    while not events(bob).empty():
        events(bob).get_nowait()
    # a direct subscriber: what upstream sends
    await subscribe(dave, node, to=UPSTREAM_JID)
    direct = await _last_item_of(dave, UPSTREAM_JID)
    # alice through the proxy, at both addresses
    subid = await subscribe(alice, node)
    assert events(alice).empty(), "sent before the subscribe result"
    proxied = await _last_item_of(alice, PROXY_JID)
    await subscribe(alice, node, to=ESCAPED)
    escaped = await _last_item_of(alice, ESCAPED)
    print(
        f"send_last_published_item={send_last}: direct {direct and _item_ids(direct)},"
        f" proxy {proxied and _item_ids(proxied)}, escaped {escaped and _item_ids(escaped)}"
    )
    if send_last == "never":
        assert direct is None
    elif send_last is not None:
        assert direct is not None
    if direct is None:
        assert proxied is None
        assert escaped is None
        return
    assert _item_ids(direct) == ["newest"]
    for msg in (proxied, escaped):
        assert msg is not None
        assert _item_ids(msg) == ["newest"]
        assert str(msg["to"]) == alice.boundjid.bare
        assert msg.xml.find(f"{{{EVENT}}}event/{{{EVENT}}}items/{{{EVENT}}}item/*") is not None
        assert msg.xml.find("{http://jabber.org/protocol/shim}headers") is None  # one each
        # stamped as upstream stamps it (ejabberd: XEP-0203 delay; Prosody: none)
        stamp = "{urn:xmpp:delay}delay"
        assert (msg.xml.find(stamp) is None) == (direct.xml.find(stamp) is None)
    # a second subscription of alice's at the proxy: the item names the new one only
    second = await subscribe(alice, node, form={"pubsub#include_body": "1"})
    assert second != subid
    again = await _last_item_of(alice, PROXY_JID)
    assert again is not None
    assert _item_ids(again) == ["newest"]
    headers = [h.text for h in again.xml.iter("{http://jabber.org/protocol/shim}header")]
    assert headers == [second]
    # the same subscribe again: the same subscription, and the item again (both
    # servers send it again to a direct subscriber repeating its subscribe)
    assert await subscribe(alice, node) == subid
    repeated = await _last_item_of(alice, PROXY_JID)
    assert repeated is not None
    assert [h.text for h in repeated.xml.iter("{http://jabber.org/protocol/shim}header")] == [subid]
    # bob, subscribed already, was sent nothing of all this; Herald's own upstream
    # subscription outlived the probes: a publication reaches both, once each
    await nothing_for(bob, "newest", wait=0.3)
    subscribers = await upstream_subscribers(clients["olivia"], node)
    assert PROXY_JID in subscribers
    assert not [s for s in subscribers if s.startswith(f"{PROXY_JID}/")]  # probes gone
    await owner.publish(node, "later", "x")
    await items_from(bob, PROXY_JID, "later")
    await items_from(alice, PROXY_JID, "later")


@pytest.mark.parametrize("left_by", ["this-process", "an-earlier-process"])
async def test_a_probe_left_subscribed_is_ended_and_never_fanned_out(
    proxy: Herald,
    clients: dict[str, TestClient],
    left_by: str,
) -> None:
    """A probe whose unsubscribe did not get through (a timeout, a lost connection),
    or that a process left subscribed when it stopped mid-probe (known to no one
    after the restart), stays subscribed upstream: what upstream sends it reaches no
    local subscriber, and the next upkeep (for the earlier process's, the one after
    upstream's first notification to it names it) unsubscribes it, so upstream stops
    sending Herald a second copy of every publication."""
    owner = Owner(clients["olivia"])
    node = unique("plain-leftover")
    await owner.create(node)
    bob = clients["bob"]
    events(bob)
    await subscribe(bob, node)
    held = proxy_of(proxy).held
    probe = f"{PROXY_JID}/last-item-0123456789abcdef"
    pubsub = ET.Element(f"{{{PUBSUB}}}pubsub")
    ET.SubElement(pubsub, f"{{{PUBSUB}}}subscribe", {"node": node, "jid": probe})
    reply = await held.upstream.as_herald("set", UPSTREAM_JID, pubsub)
    if left_by == "this-process":
        sub = reply.find(f".//{{{PUBSUB}}}subscription")
        subid = None if sub is None else sub.get("subid")
        held.last_items.leftover.add((UPSTREAM_JID, node, probe, subid))
    assert probe in await upstream_subscribers(clients["olivia"], node)
    await owner.publish(node, "while-probed", "x")
    await items_from(bob, PROXY_JID, "while-probed")
    await nothing_for(bob, "while-probed", wait=0.5)  # one copy, not two
    await held.upkeep(asyncio.get_running_loop().time())
    subscribers = await upstream_subscribers(clients["olivia"], node)
    print(f"probe left by {left_by} still subscribed after the upkeep: {probe in subscribers}")
    assert probe not in subscribers
    assert PROXY_JID in subscribers
    assert held.last_items.leftover == set()
