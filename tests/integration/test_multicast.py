"""The XEP-0033 service on a real Prosody: delivery, remote domains, routes, presence, errors."""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from component.app import Herald
from component.multicast.service import MulticastComponent
from tests.conftest import (
    MULTICAST_JID,
    PLAIN_DOMAIN,
    PRIVILEGED_JID,
    PRIVILEGED_SECRET,
    PROXY_JID,
    REMOTE_DOMAIN,
    REMOTE_MULTICAST_JID,
    REMOTE_MULTICAST_SECRET,
    USERS,
    XmppServer,
)
from tests.harness.client import TestClient
from tests.harness.herald import settings_for
from tests.harness.silent import SilentComponent

pytestmark = pytest.mark.integration

NS = "http://jabber.org/protocol/address"
BOB, CAROL = "bob@localhost", "carol@localhost"
DAVE, ERIN = f"dave@{REMOTE_DOMAIN}", f"erin@{PLAIN_DOMAIN}"
_counter = itertools.count()


def addresses(*entries: tuple[str, str]) -> ET.Element:
    element = ET.Element(f"{{{NS}}}addresses")
    for kind, value in entries:
        attrs = {"type": kind}
        attrs["uri" if ":" in value and "@" not in value else "jid"] = value
        ET.SubElement(element, f"{{{NS}}}address", attrs)
    return element


def header_of(stanza: Any) -> list[tuple[str, str | None, bool]]:
    element = stanza.xml.find(f"{{{NS}}}addresses")
    assert element is not None, "the copy carries no <addresses/>"
    return [
        (a.get("type", ""), a.get("jid"), a.get("delivered") == "true")
        for a in element.findall(f"{{{NS}}}address")
    ]


async def start_herald(server: XmppServer, tmp_path: Path, name: str, **multicast: Any) -> Herald:
    """A Herald with multicast only."""
    settings = settings_for(
        server,
        f"sqlite+aiosqlite:///{tmp_path / name}.db",
        multicast={"max_recipients": 5, "sender_mode": "trusted", **multicast},
        pubsub={"enabled": False},
        metrics={"listen": ""},
    )
    herald = Herald(settings)
    await herald.start()
    await asyncio.wait_for(herald.wait_connected(), 10)
    return herald


@pytest.fixture
async def heralds(server: XmppServer, tmp_path: Path) -> AsyncIterator[list[Herald]]:
    """Herald for localhost, and remote.localhost's multicast service where it is ours.

    On Prosody that is a second Herald; ejabberd runs its own mod_multicast there,
    which Herald must interoperate with.
    """
    started = [await start_herald(server, tmp_path, "local")]
    if server.name == "prosody":
        started.append(
            await start_herald(
                server,
                tmp_path,
                "remote",
                jid=REMOTE_MULTICAST_JID,
                secret=REMOTE_MULTICAST_SECRET,
                local_domains=[REMOTE_DOMAIN],
            )
        )
    yield started
    for herald in started:
        await herald.stop()


@pytest.fixture
async def users(server: XmppServer) -> AsyncIterator[dict[str, TestClient]]:
    clients = {}
    for account in ("alice@localhost", BOB, CAROL, DAVE, ERIN):
        password = USERS.get(account.split("@")[0]) or USERS[account]
        client = TestClient(f"{account}/t{next(_counter)}", password)
        await client.start(server.c2s_port)
        clients[account.split("@")[0]] = client
    yield clients
    for client in clients.values():
        await client.stop()


def send(client: TestClient, to: str, header: ET.Element | None, body: str = "hi") -> None:
    msg = client.make_message(mto=to, mbody=body)
    msg["id"] = f"m{next(_counter)}"
    if header is not None:
        msg.append(header)
    msg.send()


async def next_message(client: TestClient, timeout: float = 5.0) -> Any:
    return await asyncio.wait_for(client.messages.get(), timeout)


async def assert_nothing_delivered(users: dict[str, TestClient], *names: str) -> None:
    """Each user's next message is a sentinel sent after the refusal: nothing came before."""
    alice = users["alice"]
    for name in names:
        send(alice, users[name].boundjid.bare, None, body="sentinel")
    for name in names:
        msg = await next_message(users[name])
        assert msg["body"] == "sentinel", f"{name} received {msg}"


ROUTES = ("local", "remote_service", "remote_direct")


def recipients_by_route() -> dict[str, float]:
    """herald_multicast_recipients_total per route, summed over the Heralds in this process."""
    from prometheus_client import REGISTRY

    return {
        route: REGISTRY.get_sample_value("herald_multicast_recipients_total", {"route": route})
        or 0.0
        for route in ROUTES
    }


def record_messages(herald: Herald) -> list[ET.Element]:
    """Every message the Herald's multicast component receives from now on."""
    from slixmpp.xmlstream.handler import Callback
    from slixmpp.xmlstream.matcher import MatchXPath

    received: list[ET.Element] = []
    herald.services[0].register_handler(
        Callback(
            "test: record what the service receives",
            MatchXPath("{jabber:component:accept}message"),
            lambda stanza: received.append(copy.deepcopy(stanza.xml)),
        )
    )
    return received


async def send_to_all_four(users: dict[str, TestClient]) -> dict[str, Any]:
    """One stanza to bob, carol (local), dave (remote.localhost, which has a multicast
    service) and erin (plain.localhost, which has none); every copy, by recipient."""
    send(
        users["alice"],
        MULTICAST_JID,
        addresses(("to", BOB), ("cc", CAROL), ("bcc", DAVE), ("to", ERIN)),
        body="hello all",
    )
    return {name: await next_message(users[name]) for name in ("bob", "carol", "dave", "erin")}


def assert_went_through_the_remote_service(
    moved: dict[str, float], at_remote: list[ET.Element] | None, alice: str
) -> None:
    """dave's share left the local Herald as one stanza to remote.localhost's service.

    Without this, a direct copy to dave carries the very same header and body, and
    the copies alone cannot tell the routes apart. The route counters can: the local
    Herald counts dave as remote_service (a direct copy would be remote_direct), and
    where the remote service is a Herald too (Prosody), it counts him as its own local
    recipient and records the stanza it received: from alice, dave still undelivered.
    """
    # erin (no service there) is the only direct copy, dave the only hand-off
    assert moved["remote_direct"] == 1, f"dave got a direct copy: {moved}"
    assert moved["remote_service"] == 1, f"nothing was handed to the remote service: {moved}"
    if at_remote is None:  # ejabberd: its mod_multicast keeps no count we can read
        assert moved["local"] == 2, moved
        return
    assert moved["local"] == 3, f"the remote Herald did not deliver to dave: {moved}"
    assert len(at_remote) == 1, f"the remote service received {len(at_remote)} stanzas"
    handed = at_remote[0]
    assert handed.get("from") == alice
    assert handed.get("to") == REMOTE_MULTICAST_JID
    header = handed.find(f"{{{NS}}}addresses")
    assert header is not None
    entries = [(a.get("type"), a.get("jid"), a.get("delivered") == "true") for a in header]
    assert entries == [
        ("to", BOB, True),
        ("cc", CAROL, True),
        ("bcc", DAVE, False),
        ("to", ERIN, True),
    ]


async def test_delivers_locally_to_a_remote_service_and_directly(
    heralds: list[Herald], users: dict[str, TestClient]
) -> None:
    at_remote = record_messages(heralds[1]) if len(heralds) > 1 else None
    before = recipients_by_route()
    got = await send_to_all_four(users)
    for name, msg in got.items():
        assert msg["body"] == "hello all", name
        assert msg["from"] == users["alice"].boundjid, f"{name}: the outer from must be kept"
    # non-bcc recipients see every to/cc marked delivered and no bcc at all
    expected = [("to", BOB, True), ("cc", CAROL, True), ("to", ERIN, True)]
    assert header_of(got["bob"]) == expected
    assert header_of(got["carol"]) == expected
    assert header_of(got["erin"]) == expected
    # dave sees only his own bcc (ejabberd's mod_multicast reorders the entries; the
    # set is what XEP-0033 fixes). A direct copy would look the same: the route is
    # proved by what the remote service received and by the route counters.
    assert sorted(header_of(got["dave"])) == sorted([*expected, ("bcc", DAVE, False)])
    assert got["dave"]["to"].bare == DAVE
    after = recipients_by_route()
    moved = {route: after[route] - before[route] for route in ROUTES}
    print(f"route proof: recipients by route {moved}")
    assert_went_through_the_remote_service(moved, at_remote, str(users["alice"].boundjid))
    assert users["alice"].messages.empty()


async def test_the_route_proof_catches_direct_copies(
    prosody: XmppServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The proof above can fail: with remote discovery off, dave gets a direct copy that
    looks exactly like the one the remote service delivers, and the proof rejects it."""
    local = await start_herald(prosody, tmp_path, "blind-local")
    remote = await start_herald(
        prosody,
        tmp_path,
        "blind-remote",
        jid=REMOTE_MULTICAST_JID,
        secret=REMOTE_MULTICAST_SECRET,
        local_domains=[REMOTE_DOMAIN],
    )
    clients: dict[str, TestClient] = {}
    try:
        component = local.services[0]
        assert isinstance(component, MulticastComponent)

        async def nothing_found(*_args: Any) -> dict[str, Any]:
            return {}  # as if no remote domain ran a multicast service

        monkeypatch.setattr(component.discovery, "lookup", nothing_found)
        for account in ("alice@localhost", BOB, CAROL, DAVE, ERIN):
            password = USERS.get(account.split("@")[0]) or USERS[account]
            clients[account.split("@")[0]] = client = TestClient(
                f"{account}/t{next(_counter)}", password
            )
            await client.start(prosody.c2s_port)
        at_remote = record_messages(remote)
        before = recipients_by_route()
        got = await send_to_all_four(clients)
        # the copy dave gets is indistinguishable from the one the remote service sends
        expected = [("to", BOB, True), ("cc", CAROL, True), ("to", ERIN, True)]
        assert sorted(header_of(got["dave"])) == sorted([*expected, ("bcc", DAVE, False)])
        after = recipients_by_route()
        moved = {route: after[route] - before[route] for route in ROUTES}
        print(
            f"route proof, discovery off: recipients by route {moved}, "
            f"stanzas at the remote service {len(at_remote)}"
        )
        with pytest.raises(AssertionError, match="direct copy"):
            assert_went_through_the_remote_service(moved, at_remote, str(clients["alice"].boundjid))
        assert at_remote == []
    finally:
        for client in clients.values():
            await client.stop()
        await local.stop()
        await remote.stop()


@pytest.mark.parametrize(
    ("header", "condition"),
    [
        (None, "bad-request"),
        (addresses(), "bad-request"),
        (addresses(("to", BOB), ("to", "not a@@jid")), "jid-malformed"),
        (addresses(("to", BOB), ("cc", "mailto:bob@example.org")), "jid-malformed"),
        (
            addresses(*[("to", BOB), ("cc", CAROL), ("bcc", DAVE), ("to", ERIN)] * 2),
            "not-acceptable",
        ),
    ],
    ids=["no-addresses", "empty", "bad-jid", "uri", "too-many"],
)
async def test_refusals_deliver_to_nobody(
    heralds: list[Herald],
    users: dict[str, TestClient],
    header: ET.Element | None,
    condition: str,
) -> None:
    send(users["alice"], MULTICAST_JID, header)
    reply = await next_message(users["alice"])
    assert reply["type"] == "error"
    assert reply["from"] == MULTICAST_JID
    assert reply["error"]["condition"] == condition
    assert reply["error"]["text"], "every refusal explains itself"
    await assert_nothing_delivered(users, "bob", "carol", "dave", "erin")


def _flooded_header() -> ET.Element:
    """One recipient and 300 delivered entries: only undelivered to/cc/bcc used to count."""
    element = addresses(("to", BOB))
    for n in range(300):
        ET.SubElement(
            element,
            f"{{{NS}}}address",
            {"type": "cc", "jid": f"u{n}@localhost", "delivered": "true"},
        )
    return element


def _padded_header() -> ET.Element:
    """One recipient, but a 40 KB header (over multicast.max_header_bytes, 32 KiB)."""
    element = ET.Element(f"{{{NS}}}addresses")
    ET.SubElement(element, f"{{{NS}}}address", {"type": "to", "jid": BOB, "desc": "x" * 40_000})
    return element


@pytest.mark.parametrize(
    ("header", "expected"),
    [(_flooded_header(), "301 <address/> elements"), (_padded_header(), "header is too large")],
    ids=["delivered-flood", "huge-header"],
)
async def test_header_limits_deliver_to_nobody(
    heralds: list[Herald], users: dict[str, TestClient], header: ET.Element, expected: str
) -> None:
    """Issue 11: a header of delivered entries, or a huge one, was repeated in every copy."""
    rejected = _samples("herald_multicast_stanzas_total")
    send(users["alice"], MULTICAST_JID, header)
    reply = await next_message(users["alice"])
    print("reply:", reply["type"], reply["error"]["condition"], reply["error"]["text"])
    assert reply["type"] == "error"
    assert reply["error"]["condition"] == "not-acceptable"
    assert expected in reply["error"]["text"]
    await assert_nothing_delivered(users, "bob")
    assert _samples("herald_multicast_stanzas_total") - rejected == 1


async def test_remote_sender_may_not_relay(
    heralds: list[Herald], users: dict[str, TestClient]
) -> None:
    send(users["dave"], MULTICAST_JID, addresses(("to", BOB), ("to", ERIN)))
    reply = await next_message(users["dave"])
    assert reply["error"]["condition"] == "forbidden"
    assert "Relaying denied" in reply["error"]["text"]
    await assert_nothing_delivered(users, "bob", "erin")


async def test_rate_limit(server: XmppServer, tmp_path: Path, users: dict[str, TestClient]) -> None:
    herald = await start_herald(server, tmp_path, "rl", rate_limit=1, rate_burst=2)
    try:
        for _ in range(3):
            send(users["alice"], MULTICAST_JID, addresses(("to", BOB)))
        assert (await next_message(users["bob"]))["body"] == "hi"
        assert (await next_message(users["bob"]))["body"] == "hi"
        reply = await next_message(users["alice"])
        assert reply["error"]["condition"] == "resource-constraint"
        await assert_nothing_delivered(users, "bob")
    finally:
        await herald.stop()


# Prosody only: remote.localhost's trusted component exists on the Prosody topology.
@pytest.mark.parametrize("server", ["prosody"], indirect=True)
async def test_a_remote_domain_cannot_mint_jids_past_the_rate_limit(
    server: XmppServer, tmp_path: Path, users: dict[str, TestClient]
) -> None:
    """Issue 11: the limit was keyed on the bare JID, which a remote domain mints at will.

    Default settings: remote.localhost's server (here a trusted component there) sends
    one stanza from each of 40 fresh JIDs, the remote-domain burst; its real user dave
    is then over the limit too, though he has sent nothing yet.
    """
    herald = await start_herald(server, tmp_path, "remote-rl", max_recipients=50)
    minter = SilentComponent(
        REMOTE_MULTICAST_JID, REMOTE_MULTICAST_SECRET, server.port_of(REMOTE_MULTICAST_JID)
    )
    await minter.start()
    try:
        header = ET.tostring(addresses(("to", BOB)), encoding="unicode")
        minter.send(
            "".join(
                f"<message from='x{n}@{REMOTE_DOMAIN}' to='{MULTICAST_JID}' id='x{n}'>"
                f"<body>minted</body>{header}</message>"
                for n in range(40)
            )
        )
        for _ in range(40):
            assert (await next_message(users["bob"]))["body"] == "minted"
        rejected = _samples("herald_multicast_stanzas_total")
        send(users["dave"], MULTICAST_JID, addresses(("to", BOB)))
        reply = await next_message(users["dave"])
        print("dave, after 40 minted senders:", reply["type"], reply["error"]["text"])
        assert reply["error"]["condition"] == "resource-constraint"
        assert REMOTE_DOMAIN in reply["error"]["text"]
        await assert_nothing_delivered(users, "bob")
        assert _samples("herald_multicast_stanzas_total") - rejected == 1
    finally:
        await minter.stop()
        await herald.stop()


async def test_a_stanza_over_max_stanza_bytes_is_refused(
    server: XmppServer, tmp_path: Path, users: dict[str, TestClient]
) -> None:
    herald = await start_herald(server, tmp_path, "size", max_stanza_bytes=4096)
    try:
        rejected = _samples("herald_multicast_stanzas_total")
        send(users["alice"], MULTICAST_JID, addresses(("to", BOB)), body="x" * 5000)
        reply = await next_message(users["alice"])
        print("reply:", reply["type"], reply["error"]["condition"], reply["error"]["text"])
        assert reply["type"] == "error"
        assert reply["error"]["condition"] == "not-acceptable"
        assert "multicast.max_stanza_bytes" in reply["error"]["text"]
        await assert_nothing_delivered(users, "bob")
        assert _samples("herald_multicast_stanzas_total") - rejected == 1
        send(users["alice"], MULTICAST_JID, addresses(("to", BOB)), body="x" * 3000)
        assert (await next_message(users["bob"]))["body"] == "x" * 3000  # under it: delivered
    finally:
        await herald.stop()


async def test_presence_is_tracked_and_unavailable_broadcast(
    heralds: list[Herald], server: XmppServer, users: dict[str, TestClient]
) -> None:
    frank = TestClient(f"alice@localhost/presence{next(_counter)}", USERS["alice"])
    await frank.start(server.c2s_port)
    pres = frank.make_presence(pto=MULTICAST_JID, pstatus="here")
    pres.append(addresses(("to", BOB), ("to", CAROL)))
    pres.send()
    for name in ("bob", "carol"):
        got = await asyncio.wait_for(users[name].presences.get(), 5)
        assert got["from"] == frank.boundjid
        assert got["type"] == "available"
        assert got["status"] == "here"
    await frank.stop()  # Prosody sends our service the unavailable presence (§5)
    for name in ("bob", "carol"):
        got = await asyncio.wait_for(users[name].presences.get(), 5)
        assert got["from"] == frank.boundjid
        assert got["type"] == "unavailable"


async def test_privileged_mode(
    server: XmppServer, tmp_path: Path, users: dict[str, TestClient]
) -> None:
    herald = await start_herald(
        server,
        tmp_path,
        "priv",
        jid=PRIVILEGED_JID,
        secret=PRIVILEGED_SECRET,
        sender_mode="privileged",
    )
    try:
        send(users["alice"], PRIVILEGED_JID, addresses(("to", BOB), ("cc", CAROL)))
        for name in ("bob", "carol"):
            msg = await next_message(users[name])
            assert msg["from"] == "alice@localhost"  # XEP-0356 forwards the bare JID
            assert header_of(msg) == [("to", BOB, True), ("cc", CAROL, True)]
        # no presence permission: refused with a reason, nothing sent, stream still up
        pres = users["alice"].make_presence(pto=PRIVILEGED_JID)
        pres.append(addresses(("to", BOB)))
        pres.send()
        reply = await asyncio.wait_for(users["alice"].presences.get(), 5)
        assert reply["type"] == "error"
        assert reply["error"]["condition"] == "feature-not-implemented"
        assert herald.services[0].connected_event.is_set()
    finally:
        await herald.stop()


async def test_auto_mode_picks_privileges(
    server: XmppServer, tmp_path: Path, users: dict[str, TestClient]
) -> None:
    # This component is not trusted by Prosody: a trusted-mode send would kill the stream.
    herald = await start_herald(
        server,
        tmp_path,
        "auto",
        jid=PRIVILEGED_JID,
        secret=PRIVILEGED_SECRET,
        sender_mode="auto",
    )
    try:
        send(users["alice"], PRIVILEGED_JID, addresses(("to", BOB)))
        msg = await next_message(users["bob"])
        assert msg["from"] == "alice@localhost"
        await asyncio.sleep(0.2)
        assert herald.services[0].connected_event.is_set()
    finally:
        await herald.stop()


async def test_disco_advertises_limits(heralds: list[Herald], users: dict[str, TestClient]) -> None:
    info = await users["alice"].plugin["xep_0030"].get_info(jid=MULTICAST_JID, timeout=5)
    form = info["disco_info"].xml.find("{jabber:x:data}x")
    assert form is not None
    fields = {
        f.get("var"): f.findtext("{jabber:x:data}value")
        for f in form.findall("{jabber:x:data}field")
    }
    assert fields == {"FORM_TYPE": NS, "message": "5", "presence": "5"}


async def test_remote_limits_split_the_stanza(
    server: XmppServer, tmp_path: Path, users: dict[str, TestClient]
) -> None:
    """The remote service advertises a limit of 2 (a second Herald on Prosody, ejabberd's
    mod_multicast on ejabberd); three recipients there must go as two stanzas."""
    from prometheus_client import REGISTRY

    def delivered() -> float:
        labels = {"stanza": "message", "result": "delivered"}
        return REGISTRY.get_sample_value("herald_multicast_stanzas_total", labels) or 0

    started = [await start_herald(server, tmp_path, "split-local")]
    if server.name == "prosody":
        started.append(
            await start_herald(
                server,
                tmp_path,
                "split-remote",
                jid=REMOTE_MULTICAST_JID,
                secret=REMOTE_MULTICAST_SECRET,
                local_domains=[REMOTE_DOMAIN],
                max_recipients=2,
            )
        )
    try:
        before = delivered()
        recipients = [f"{DAVE}/r{i}" for i in range(3)]
        send(users["alice"], MULTICAST_JID, addresses(*[("to", r) for r in recipients]))
        got = [await next_message(users["dave"]) for _ in recipients]
        assert all(m["type"] != "error" for m in got)
        assert all(m["from"] == users["alice"].boundjid for m in got)
        # ejabberd refuses a stanza over its limit ("Too many receiver fields"), so
        # three copies arriving prove the split; on Prosody both services are ours and
        # count: one stanza into the local one, two (2 + 1) into the remote one.
        if server.name == "prosody":
            assert delivered() == before + 3
        assert users["alice"].messages.empty()
    finally:
        for herald in started:
            await herald.stop()


def _samples(name: str) -> float:
    from prometheus_client import REGISTRY

    return sum(
        sample.value
        for metric in REGISTRY.collect()
        for sample in metric.samples
        if sample.name == name
    )


@pytest.mark.parametrize("target", [MULTICAST_JID, f"x@{MULTICAST_JID}"])
async def test_an_address_at_our_own_service_is_refused_not_looped(
    server: XmppServer, tmp_path: Path, users: dict[str, TestClient], target: str
) -> None:
    """Issue 11: Herald discovered itself as the remote service for its own domain and
    handed the stanza back to itself, thousands of times a second with no rate limit."""
    herald = await start_herald(server, tmp_path, "loop", rate_limit=0)
    try:
        stanzas = _samples("herald_multicast_stanzas_total")
        discos = _samples("herald_multicast_remote_disco_total")
        send(users["alice"], MULTICAST_JID, addresses(("to", BOB), ("cc", target)))
        reply = await next_message(users["alice"])
        assert reply["type"] == "error"
        assert reply["error"]["condition"] == "forbidden"
        assert "own service" in reply["error"]["text"]
        await assert_nothing_delivered(users, "bob")
        await asyncio.sleep(0.5)
        # exactly one stanza came in (the refused one) and nothing was discovered
        assert _samples("herald_multicast_stanzas_total") == stanzas + 1
        assert _samples("herald_multicast_remote_disco_total") == discos
        assert users["alice"].messages.empty()
    finally:
        await herald.stop()


async def test_a_resource_slixmpp_rejects_gets_jid_malformed_not_a_crash(
    heralds: list[Herald], server: XmppServer, users: dict[str, TestClient]
) -> None:
    """Issue 11: the server accepts an emoji resource that slixmpp's stringprep rejects;
    Herald answered results with errors and logged a traceback per stanza."""
    from slixmpp.xmlstream.handler import Callback
    from slixmpp.xmlstream.matcher import MatchXPath

    alice = users["alice"]
    replies: asyncio.Queue[ET.Element] = asyncio.Queue()
    alice.register_handler(
        Callback("raw iq", MatchXPath("{jabber:client}iq"), lambda s: replies.put_nowait(s.xml))
    )
    target = f"{MULTICAST_JID}/\U0001f600"
    disco = "<query xmlns='http://jabber.org/protocol/disco#info'/>"
    alice.send_raw(f"<iq type='result' id='odd-r' to='{target}'>{disco}</iq>")
    alice.send_raw(f"<iq type='get' id='odd-g' to='{target}'>{disco}</iq>")
    reply = await asyncio.wait_for(replies.get(), 5)
    # the result is never answered: the first reply is the get's
    assert (reply.get("id"), reply.get("type")) == ("odd-g", "error")
    # ejabberd refuses such a JID itself (bad-request); Prosody passes it to Herald
    condition = "jid-malformed" if server.name == "prosody" else "bad-request"
    found = reply.find(f"{{*}}error/{{urn:ietf:params:xml:ns:xmpp-stanzas}}{condition}")
    assert found is not None, ET.tostring(reply)
    await asyncio.sleep(0.3)
    assert replies.empty()
    assert heralds[0].services[0].connected_event.is_set()
    send(alice, MULTICAST_JID, addresses(("to", BOB)))  # the service still works
    assert (await next_message(users["bob"]))["body"] == "hi"


async def test_a_bare_noreply_is_accepted(
    heralds: list[Herald], users: dict[str, TestClient]
) -> None:
    """Issue 11: <address type='noreply'/> carries no address (XEP-0033 §4.6.6); it was
    refused with bad-request, and the whole message with it."""
    header = addresses(("to", BOB))
    ET.SubElement(header, f"{{{NS}}}address", {"type": "noreply"})
    send(users["alice"], MULTICAST_JID, header)
    got = await next_message(users["bob"])
    assert got["type"] != "error"
    assert header_of(got) == [("to", BOB, True), ("noreply", None, False)]
    assert users["alice"].messages.empty()


async def test_a_presence_with_show_is_followed_by_unavailable(
    heralds: list[Herald], server: XmppServer, users: dict[str, TestClient]
) -> None:
    """Issue 11: an away presence was not tracked, so no unavailable followed it (§5)."""
    frank = TestClient(f"alice@localhost/away{next(_counter)}", USERS["alice"])
    await frank.start(server.c2s_port)
    pres = frank.make_presence(pto=MULTICAST_JID, pshow="away")
    pres.append(addresses(("to", BOB)))
    pres.send()
    got = await asyncio.wait_for(users["bob"].presences.get(), 5)
    assert (got["from"], got["show"]) == (frank.boundjid, "away")
    await frank.stop()
    got = await asyncio.wait_for(users["bob"].presences.get(), 5)
    assert (got["from"], got["type"]) == (frank.boundjid, "unavailable")


async def test_an_address_at_the_pubsub_proxy_is_refused_too(
    server: XmppServer, tmp_path: Path, users: dict[str, TestClient]
) -> None:
    """Herald's other JID is never a recipient either (issue 11)."""
    settings = settings_for(
        server,
        f"sqlite+aiosqlite:///{tmp_path / 'both'}.db",
        multicast={"sender_mode": "trusted", "rate_limit": 0},
        metrics={"listen": ""},
    )
    herald = Herald(settings)
    await herald.start()
    try:
        await asyncio.wait_for(herald.wait_connected(), 10)
        send(users["alice"], MULTICAST_JID, addresses(("to", BOB), ("cc", f"x@{PROXY_JID}")))
        reply = await next_message(users["alice"])
        assert reply["type"] == "error"
        assert reply["error"]["condition"] == "forbidden"
        await assert_nothing_delivered(users, "bob")
    finally:
        await herald.stop()
