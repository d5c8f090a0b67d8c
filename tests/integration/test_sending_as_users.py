"""Defence in depth on sending as users (issue 11), on a Prosody that opens both routes.

Here the multicast component is trusted (validate_from_addresses = false) *and* holds
the XEP-0356 message privilege, as the snippet Herald used to ship configured it.
Prosody's mod_privilege obeys a <privilege/> envelope by the session that delivers it:
before the fix, alice could address a multicast copy to the server itself with an
envelope inside, and Prosody delivered the enveloped message from bob to carol.

- Herald warns at start-up that both routes are open;
- recipients without a user part (the server, a component) are refused, and a stanza
  carrying a privilege envelope or a top-level <forwarded/> is refused, to anyone;
  nothing is delivered, and the stream stays up.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from component.app import Herald
from tests.conftest import UPSTREAM_JID, USERS, missing
from tests.harness.client import TestClient
from tests.harness.herald import settings_for
from tests.harness.prosody import ComponentSpec, Prosody

pytestmark = pytest.mark.integration

BOTH_JID, BOTH_SECRET = "mc-both.localhost", "mc-both-secret"
# Trusted only, without mod_privilege on it: stanzas reach Herald as they were sent.
TRUSTED_JID, TRUSTED_SECRET = "mc-trusted.localhost", "mc-trusted-secret"
ADDR = "http://jabber.org/protocol/address"
PRIV = "urn:xmpp:privilege:2"
FWD = "urn:xmpp:forward:0"
_seq = itertools.count()


@pytest.fixture(scope="module")
def both_routes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prosody]:
    """A Prosody whose multicast component is trusted and message-privileged at once."""
    if not Prosody.available():
        missing("Prosody")
    server = Prosody(
        root=tmp_path_factory.mktemp("both-routes"),
        components=[
            ComponentSpec(
                BOTH_JID,
                BOTH_SECRET,
                ['modules_enabled = { "privilege" }', "validate_from_addresses = false"],
            ),
            ComponentSpec(TRUSTED_JID, TRUSTED_SECRET, ["validate_from_addresses = false"]),
        ],
        host_options=[
            "privileged_entities = {",
            f'  ["{BOTH_JID}"] = {{ message = "outgoing" }};',
            "}",
        ],
        users={name: USERS[name] for name in ("alice", "bob", "carol")},
        pubsub_component=UPSTREAM_JID,  # a component to address
    )
    server.start()
    yield server
    server.stop()


async def start_herald(server: Prosody, db: Path, jid: str, secret: str) -> Herald:
    started = Herald(
        settings_for(
            server,
            f"sqlite+aiosqlite:///{db}",
            multicast={"jid": jid, "secret": secret, "sender_mode": "trusted", "rate_limit": 0},
            pubsub={"enabled": False},
            metrics={"listen": ""},
        )
    )
    await started.start()
    await asyncio.wait_for(started.wait_connected(), 10)
    return started


@pytest.fixture
async def both_herald(
    both_routes: Prosody, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Herald]:
    """Herald on the component that is trusted and message-privileged at once."""
    caplog.set_level(logging.INFO, logger="component")
    started = await start_herald(both_routes, tmp_path / "h.db", BOTH_JID, BOTH_SECRET)
    for _ in range(100):  # the advertisement follows the handshake
        if started.services[0].privileges:
            break
        await asyncio.sleep(0.05)
    yield started
    await started.stop()


@pytest.fixture
async def herald(both_routes: Prosody, tmp_path: Path) -> AsyncIterator[Herald]:
    """Herald on the trusted-only component (the route the snippets ship)."""
    started = await start_herald(both_routes, tmp_path / "h.db", TRUSTED_JID, TRUSTED_SECRET)
    yield started
    await started.stop()


@pytest.fixture
async def people(both_routes: Prosody) -> AsyncIterator[dict[str, TestClient]]:
    clients = {}
    for name in ("alice", "bob", "carol"):
        client = TestClient(f"{name}@localhost/t{next(_seq)}", USERS[name])
        await client.start(both_routes.c2s_port)
        clients[name] = client
    yield clients
    for client in clients.values():
        await client.stop()


def multicast(
    sender: TestClient, recipients: list[str], *extra: ET.Element, to: str = TRUSTED_JID
) -> str:
    msg = sender.make_message(mto=to, mbody="multicast")
    msg["id"] = f"m{next(_seq)}"
    header = ET.Element(f"{{{ADDR}}}addresses")
    for jid in recipients:
        ET.SubElement(header, f"{{{ADDR}}}address", {"type": "to", "jid": jid})
    msg.append(header)
    for element in extra:
        msg.append(element)
    msg.send()
    return str(msg["id"])


def envelope(sender: str, to: str, body: str) -> ET.Element:
    privilege = ET.Element(f"{{{PRIV}}}privilege")
    forwarded = ET.SubElement(privilege, f"{{{FWD}}}forwarded")
    inner = ET.SubElement(forwarded, "{jabber:client}message", {"from": sender, "to": to})
    ET.SubElement(inner, "{jabber:client}body").text = body
    return privilege


def error_text(reply: Any) -> str:
    # reply["error"]["text"] reads only a text in the stanza's own language
    text = reply.xml.find("{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}text")
    return "" if text is None else str(text.text or "")


async def refusal(client: TestClient, msg_id: str) -> Any:
    while True:
        msg = await asyncio.wait_for(client.messages.get(), 5)
        if msg["id"] == msg_id:
            return msg


async def nothing_but_sentinel(people: dict[str, TestClient], *names: str) -> None:
    alice = people["alice"]
    for name in names:
        alice.send_message(mto=f"{name}@localhost", mbody="sentinel")
    for name in names:
        msg = await asyncio.wait_for(people[name].messages.get(), 5)
        assert msg["body"] == "sentinel", f"{name} received {msg['from']}: {msg['body']}"


async def test_both_routes_open_is_warned_at_start(
    both_herald: Herald, caplog: pytest.LogCaptureFixture
) -> None:
    warnings = [
        r.getMessage()
        for r in caplog.get_records("setup") + caplog.records
        if r.levelno == logging.WARNING and "two routes" in r.getMessage()
    ]
    print(f"\n[sending-as-users] start-up warning: {warnings}")
    assert len(warnings) == 1
    assert "localhost" in warnings[0]
    assert "sender_mode" in warnings[0]


async def test_an_envelope_to_the_server_reaches_nobody(
    both_herald: Herald, people: dict[str, TestClient]
) -> None:
    """End to end on the component with both routes: carol never gets a message "from
    bob". (Prosody's mod_privilege, loaded on that component, refuses an envelope sent to
    the component before Herald sees it; Herald's own refusal is the table below.)"""
    alice = people["alice"]
    spoof = envelope("bob@localhost", "carol@localhost", "spoofed: I am bob")
    msg_id = multicast(alice, ["localhost"], spoof, to=BOTH_JID)
    await nothing_but_sentinel(people, "bob", "carol")
    reply = await refusal(alice, msg_id)
    print(
        f"\n[sending-as-users] envelope to the server via {BOTH_JID}: {reply['type']} "
        f"{reply['error']['condition']} from {reply['from']} ({error_text(reply)!r})"
    )
    assert reply["type"] == "error"
    assert both_herald.services[0].connected_event.is_set()


@pytest.mark.parametrize(
    ("recipients", "extra", "condition"),
    [
        (["localhost"], "", "forbidden"),
        ([UPSTREAM_JID], "", "forbidden"),
        (["bob@localhost", "localhost/res"], "", "forbidden"),
        (["bob@localhost"], "privilege", "not-acceptable"),
        (["localhost"], "privilege", "not-acceptable"),
        (["bob@localhost"], "forwarded", "not-acceptable"),
    ],
)
async def test_domains_and_envelopes_are_refused(
    herald: Herald,
    people: dict[str, TestClient],
    recipients: list[str],
    extra: str,
    condition: str,
) -> None:
    alice = people["alice"]
    elements = []
    if extra == "privilege":
        elements.append(envelope("bob@localhost", "carol@localhost", "spoofed"))
    elif extra == "forwarded":
        elements.append(envelope("bob@localhost", "carol@localhost", "spoofed")[0])
    msg_id = multicast(alice, recipients, *elements)
    reply = await refusal(alice, msg_id)
    assert reply["from"] == TRUSTED_JID  # Herald refused it, never carried it
    assert reply["type"] == "error"
    assert reply["error"]["condition"] == condition, reply["error"]["text"]
    assert error_text(reply)
    await nothing_but_sentinel(people, "bob", "carol")
