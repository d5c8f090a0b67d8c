"""Presence-based delivery for the subscriptions Herald holds (issue 13), on real servers.

Prosody's mod_privilege (presence = "managed_entity") tells Herald every user's
presence, those current when it connects included: an unavailable subscriber gets no
notification on a presence-based node, and pubsub#show-values apply. ejabberd 23.01
(privilege:1) tells too little to be trusted: its users' presence is unknown to
Herald, which then delivers, and refuses show-values rather than ignore them.

An unavailable subscriber is seen from another of its resources: a normal message to
a full JID that is offline goes to the bare JID (RFC 6121 §8.5.3.2.1), so the
notification Herald should hold back would reach the other resource.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from xml.etree import ElementTree as ET

import pytest

from component.app import Herald
from tests.conftest import PROXY_JID, USERS, XmppServer, missing, standard_prosody
from tests.harness.client import TestClient
from tests.harness.prosody import Prosody
from tests.integration import test_pubsub_proxy as base
from tests.integration.test_pubsub_proxy import Owner, proxy_of, sample, start_proxy, unique, until
from tests.integration.test_pubsub_subscriptions import (
    PUBSUB,
    ask,
    error_of,
    events,
    items_from,
    nothing_for,
    subscribe,
)

pytestmark = pytest.mark.integration
clients = base.clients
proxy = base.proxy

FORM = "jabber:x:data"
OPTIONS_FORM = "http://jabber.org/protocol/pubsub#subscribe_options"
_seq = itertools.count()


def withheld() -> dict[str, float]:
    return {
        reason: sample("herald_pubsub_notifications_withheld_total", reason=reason) or 0.0
        for reason in ("unavailable", "show")
    }


def fanned_out() -> float:
    return sample("herald_pubsub_notifications_fanned_out_total") or 0.0


async def set_shows(client: TestClient, node: str, subid: str, shows: list[str]) -> None:
    """Set the subscription's pubsub#show-values (a list-multi: one <value/> each)."""
    iq = client.make_iq(ito=PROXY_JID, itype="set")
    pubsub = ET.SubElement(iq.xml, f"{{{PUBSUB}}}pubsub")
    attrs = {"node": node, "jid": client.boundjid.bare, "subid": subid}
    options = ET.SubElement(pubsub, f"{{{PUBSUB}}}options", attrs)
    form = ET.SubElement(options, f"{{{FORM}}}x", {"type": "submit"})
    for var, values in (("FORM_TYPE", [OPTIONS_FORM]), ("pubsub#show-values", shows)):
        field = ET.SubElement(form, f"{{{FORM}}}field", {"var": var})
        for value in values:
            ET.SubElement(field, f"{{{FORM}}}value").text = value
    await iq.send(timeout=5)


async def a_resource(server: XmppServer, name: str) -> TestClient:
    client = TestClient(
        f"{name}@localhost/gone{next(_seq)}",
        USERS[name],
        plugins=("xep_0030", "xep_0004", "xep_0060"),
    )
    await client.start(server.c2s_port)
    return client


async def known_offline(herald: Herald, jid: str) -> bool:
    from component.pubsub import availability as av

    presences = proxy_of(herald).presences
    seen = presences._seen.get(jid.partition("/")[0], {})
    return presences.knows(jid) and not av.status_of(jid, seen).available


@pytest.fixture(params=["always", "never"])
async def pbd_proxy(
    request: pytest.FixtureRequest, prosody: XmppServer, db_url: str
) -> AsyncIterator[Herald]:
    herald = await start_proxy(prosody, db_url, presence_based_delivery=request.param)
    yield herald
    await herald.stop()


@pytest.fixture(scope="module")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prosody]:
    """The standard Prosody, also granting the proxy presence = "managed_entity".

    A Prosody of its own: once a component with the grant has connected, Prosody
    answers every user presence it would forward to it, while it is away, with a
    presence error from the component, which other suites' clients would read.
    """
    if not Prosody.available():
        missing("Prosody")
    server = standard_prosody(tmp_path_factory.mktemp("prosody-presence"))
    granted = f'["{PROXY_JID}"] = {{ iq'
    assert any(granted in line for line in server.host_options)
    server.host_options = [
        line.replace(granted, f'["{PROXY_JID}"] = {{ presence = "managed_entity"; iq')
        for line in server.host_options
    ]
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(prosody: XmppServer) -> XmppServer:
    """Prosody only: the presence it reports is what these tests check."""
    return prosody


async def test_an_unavailable_subscriber_gets_nothing_on_a_presence_based_node(
    pbd_proxy: Herald, clients: dict[str, TestClient], prosody: XmppServer
) -> None:
    presence_based = proxy_of(pbd_proxy).presences.mode == "always"
    owner = Owner(clients["olivia"])
    node = unique("plain-pbd")
    await owner.create(node)
    alice, bob = clients["alice"], clients["bob"]
    events(alice), events(bob)
    await subscribe(alice, node)  # alice: online
    # bob subscribes one resource of his, which then goes offline
    gone = await a_resource(prosody, "bob")
    got = await ask(gone, "set", PROXY_JID, "subscribe", {"node": node, "jid": str(gone.boundjid)})
    assert got.find(f"{{{PUBSUB}}}subscription") is not None
    await gone.stop()

    async def bob_gone() -> bool:
        return await known_offline(pbd_proxy, str(gone.boundjid))

    await until(bob_gone)
    before, sent = withheld(), fanned_out()
    await owner.publish(node, "first", "hello")
    await items_from(alice, PROXY_JID, "first")
    if presence_based:
        await nothing_for(bob, "first")  # his other resource would have got it
        assert withheld()["unavailable"] - before["unavailable"] == 1
        assert fanned_out() - sent == 1
    else:
        await items_from(bob, PROXY_JID, "first")  # as the server routes it: to the bare JID
        assert withheld() == before
    # the resource comes back: it gets the next one
    back = TestClient(str(gone.boundjid), USERS["bob"], plugins=("xep_0030", "xep_0060"))
    events(back)
    await back.start(prosody.c2s_port)
    try:

        async def bob_back() -> bool:
            return not await known_offline(pbd_proxy, str(gone.boundjid))

        await until(bob_back)
        await owner.publish(node, "second", "again")
        await items_from(back, PROXY_JID, "second")
    finally:
        await back.stop()


async def test_subscribers_online_before_herald_connects_are_known(
    clients: dict[str, TestClient], prosody: XmppServer, db_url: str
) -> None:
    # Herald (re)starts while alice is online: Prosody tells it her current presence.
    alice = clients["alice"]
    alice.send_presence(pshow="xa")
    herald = await start_proxy(prosody, db_url, presence_based_delivery="always")
    try:
        owner = Owner(clients["olivia"])
        node = unique("plain-early")
        await owner.create(node)
        events(alice)
        subid = await subscribe(alice, node)
        await set_shows(alice, node, subid, ["xa"])  # accepted: her presence is known
        before = withheld()
        await owner.publish(node, "first", "x")
        await items_from(alice, PROXY_JID, "first")
        assert withheld() == before
    finally:
        await herald.stop()


async def test_show_values_follow_the_subscriber_presence(
    proxy: Herald, clients: dict[str, TestClient]
) -> None:
    owner = Owner(clients["olivia"])
    node = unique("plain-shows")
    await owner.create(node)
    alice = clients["alice"]
    events(alice)
    info = await alice.plugin["xep_0030"].get_info(jid=PROXY_JID, timeout=5)
    assert f"{PUBSUB}#presence-notifications" in info["disco_info"]["features"]
    subid = await subscribe(alice, node)
    got = await ask(
        alice, "get", PROXY_JID, "options", {"node": node, "jid": "alice@localhost", "subid": subid}
    )
    (field,) = [f for f in got.iter(f"{{{FORM}}}field") if f.get("var") == "pubsub#show-values"]
    assert field.get("type") == "list-multi"
    await set_shows(alice, node, subid, ["chat", "online"])
    got = await ask(
        alice, "get", PROXY_JID, "options", {"node": node, "jid": "alice@localhost", "subid": subid}
    )
    (field,) = [f for f in got.iter(f"{{{FORM}}}field") if f.get("var") == "pubsub#show-values"]
    assert [v.text for v in field.findall(f"{{{FORM}}}value")] == ["chat", "online"]
    # online without <show/>: "online" is listed
    await owner.publish(node, "online", "x")
    await items_from(alice, PROXY_JID, "online")
    # away: not listed, though alice is online and would see it
    await shows_as(proxy, alice, "away")
    before = withheld()
    await owner.publish(node, "away", "x")
    await nothing_for(alice, "away")
    assert withheld()["show"] - before["show"] == 1
    await shows_as(proxy, alice, "chat")
    await owner.publish(node, "chat", "x")
    await items_from(alice, PROXY_JID, "chat")
    # a value XEP-0060 does not define
    assert await error_of(set_shows(alice, node, subid, ["busy"])) == (
        "bad-request",
        "invalid-options",
    )


async def shows_as(herald: Herald, client: TestClient, show: str) -> None:
    """The client's presence shows `show`, and Herald has been told."""
    client.send_presence(pshow=show)
    presences = proxy_of(herald).presences

    async def told() -> bool:
        resources = presences._seen.get(client.boundjid.bare, {})
        found = resources.get(client.boundjid.resource)
        return found is not None and found.show == show

    await until(told)


async def test_presence_herald_is_not_told_of_is_unknown_on_ejabberd(
    ejabberd: XmppServer, db_url: str
) -> None:
    herald = await start_proxy(ejabberd, db_url, presence_based_delivery="always")
    made: list[TestClient] = []
    try:
        for name in ("olivia", "alice"):
            made.append(await a_resource(ejabberd, name))
        owner, alice_c = Owner(made[0]), made[1]
        node = unique("plain-unknown")
        await owner.create(node)
        events(alice_c)
        await subscribe(alice_c, node)
        # show-values cannot apply: refused rather than ignored
        assert await error_of(subscribe(alice_c, node, form={"pubsub#show-values": "chat"})) == (
            "bad-request",
            "invalid-options",
        )
        before = withheld()
        await owner.publish(node, "first", "x")
        await items_from(alice_c, PROXY_JID, "first")
        assert withheld() == before
    finally:
        for client in made:
            await client.stop()
        await herald.stop()
