"""Herald answers for itself (issue 11): what either service does with IQs it did not expect.

- Unsolicited disco#info results are ignored: never stored, never answered. slixmpp's
  disco plugin used to cache every one it received, asked for or not, forever.
- Every IQ get or set gets exactly one reply, whatever it carries; a result or an
  error never gets one, nor does a message of type error.

A raw client (bench/rawclient.py) sends the stanzas through a real Prosody and counts
the replies per id; Herald runs as a child process so its resident memory is its own.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from bench.rawclient import RawClient
from tests.conftest import MULTICAST_JID, PROXY_JID, USERS
from tests.harness.herald import settings_for
from tests.harness.ports import free_port
from tests.harness.process import HeraldProcess
from tests.harness.prosody import Prosody

pytestmark = pytest.mark.integration

INFO = "http://jabber.org/protocol/disco#info"
ITEMS = "http://jabber.org/protocol/disco#items"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
CLIENT = "jabber:client"
ODD = "\U0001f600"  # Prosody accepts it in a resource; slixmpp's resourceprep does not
_seq = itertools.count()


class Recorder:
    """A logged-in raw client that keeps every stanza it receives."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.seen: list[ET.Element] = []
        feed = client.parser.feed

        def recording(data: bytes) -> list[ET.Element]:
            stanzas = feed(data)
            self.seen.extend(stanzas)
            return stanzas

        client.parser.feed = recording  # type: ignore[method-assign]

    def send(self, xml: str) -> None:
        self.client.send(xml)

    async def ask(self, xml: str) -> ET.Element:
        """Send an IQ get (with '{id}') and wait for its answer."""
        return await self.client.iq(xml, timeout=30, check=False)

    def replies(self, prefix: str) -> Counter[str]:
        """How many stanzas came back per id starting with prefix."""
        return Counter(s.get("id", "") for s in self.seen if s.get("id", "").startswith(prefix))


@pytest.fixture
async def herald(prosody: Prosody, tmp_path: Path) -> AsyncIterator[HeraldProcess]:
    """Both services, as a child process (its RSS is its own)."""
    settings = settings_for(
        prosody,
        f"sqlite+aiosqlite:///{tmp_path}/h.db",
        metrics={"listen": f"127.0.0.1:{free_port()}"},
        multicast={"sender_mode": "trusted", "rate_limit": 0},
    )
    process = HeraldProcess(settings, tmp_path)
    process.start()
    try:
        await process.wait_healthy()
        await asyncio.sleep(0.5)  # privilege advertisements have arrived
        yield process
    finally:
        code = process.stop()
        assert code == 0, process.log()


@pytest.fixture
async def alice(prosody: Prosody) -> AsyncIterator[Recorder]:
    client = RawClient(f"alice@{prosody.domain}/raw{next(_seq)}", USERS["alice"])
    await client.login("127.0.0.1", prosody.c2s_port)
    yield Recorder(client)
    await client.close()


def unsolicited_info(to: str, n: int, prefix: str) -> str:
    """A disco#info result nobody asked for, ~7 KB: many identities and features."""
    identities = "".join(
        f"<identity category='client' type='pc' name='unsolicited identity {n}-{i}'/>"
        for i in range(20)
    )
    features = "".join(
        f"<feature var='urn:example:unsolicited:{n}:feature:{i}:padding-padding-padding'/>"
        for i in range(80)
    )
    return (
        f"<iq type='result' id='{prefix}{n}' to='{to}'>"
        f"<query xmlns='{INFO}' node='urn:example:node:{n}'>{identities}{features}</query></iq>"
    )


async def flood(alice: Recorder, to: str, count: int, prefix: str) -> None:
    """count unsolicited results, then a get: answered once Herald has read them all."""
    for start in range(0, count, 100):
        alice.send("".join(unsolicited_info(to, n, prefix) for n in range(start, start + 100)))
        await asyncio.sleep(0)
    await alice.ask(f"<iq type='get' id='{{id}}' to='{to}'><query xmlns='{INFO}'/></iq>")
    await asyncio.sleep(1.0)  # handlers scheduled by the last of them have run


UNSOLICITED = 2000
# Herald keeps nothing of them: what remains is allocator noise.
RSS_BOUND = 4 * 2**20


async def test_unsolicited_disco_results_are_neither_stored_nor_answered(
    herald: HeraldProcess, alice: Recorder
) -> None:
    for to in (PROXY_JID, MULTICAST_JID):
        prefix = f"u{next(_seq)}-"
        await flood(alice, to, 300, f"{prefix}warm")  # imports, caches, allocator arenas
        before = herald.rss()
        await flood(alice, to, UNSOLICITED, prefix)
        after = herald.rss()
        growth = after - before
        answered = sum(alice.replies(prefix).values())
        print(
            f"\n[self-answer] {UNSOLICITED} unsolicited disco#info results (~7 KB each) to "
            f"{to}: Herald RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB "
            f"({growth / 2**20:+.1f} MiB); {answered} replies sent"
        )
        assert answered == 0
        assert growth < RSS_BOUND, f"{to}: RSS grew {growth / 2**20:.1f} MiB"


# -- exactly one reply to a get or set, none to a result or an error ---------------------

PUBSUB = "http://jabber.org/protocol/pubsub"
UNKNOWN = "urn:example:unknown"
ERROR = f"<error type='cancel'><item-not-found xmlns='{STANZAS}'/></error>"

# (name, stanza with {to} and {id}, expected reply: "result", an error condition, or None)
COMMON = [
    (
        "info set",
        f"<iq type='set' id='{{id}}' to='{{to}}'><query xmlns='{INFO}'/></iq>",
        "bad-request",
    ),
    (
        "items set",
        f"<iq type='set' id='{{id}}' to='{{to}}'><query xmlns='{ITEMS}'/></iq>",
        "bad-request",
    ),
    (
        "unknown get",
        f"<iq type='get' id='{{id}}' to='{{to}}'><x xmlns='{UNKNOWN}'/></iq>",
        "service-unavailable",
    ),
    (
        "unknown set",
        f"<iq type='set' id='{{id}}' to='{{to}}'><x xmlns='{UNKNOWN}'/></iq>",
        "service-unavailable",
    ),
    ("no child get", "<iq type='get' id='{id}' to='{to}'/>", "bad-request"),
    ("no child set", "<iq type='set' id='{id}' to='{to}'/>", "bad-request"),
    (
        "info and items",
        f"<iq type='get' id='{{id}}' to='{{to}}'><query xmlns='{INFO}'/>"
        f"<query xmlns='{ITEMS}'/></iq>",
        "bad-request",
    ),
    (
        "info and pubsub",
        f"<iq type='get' id='{{id}}' to='{{to}}'><query xmlns='{INFO}'/>"
        f"<pubsub xmlns='{PUBSUB}'><items node='n'/></pubsub></iq>",
        "bad-request",
    ),
    (
        "two unknown",
        f"<iq type='set' id='{{id}}' to='{{to}}'><x xmlns='{UNKNOWN}'/><y xmlns='{UNKNOWN}'/></iq>",
        "bad-request",
    ),
    (
        "info result",
        f"<iq type='result' id='{{id}}' to='{{to}}'><query xmlns='{INFO}'/></iq>",
        None,
    ),
    ("empty result", "<iq type='result' id='{id}' to='{to}'/>", None),
    (
        "items result",
        f"<iq type='result' id='{{id}}' to='{{to}}'><query xmlns='{ITEMS}'>"
        "<item jid='x.example'/></query></iq>",
        None,
    ),
    (
        "pubsub result",
        f"<iq type='result' id='{{id}}' to='{{to}}'><pubsub xmlns='{PUBSUB}'>"
        "<items node='n'/></pubsub></iq>",
        None,
    ),
    ("iq error", f"<iq type='error' id='{{id}}' to='{{to}}'>{ERROR}</iq>", None),
    (
        "info error",
        f"<iq type='error' id='{{id}}' to='{{to}}'><query xmlns='{INFO}'/>{ERROR}</iq>",
        None,
    ),
    ("message error", f"<message type='error' id='{{id}}' to='{{to}}'>{ERROR}</message>", None),
    (
        "odd get",
        f"<iq type='get' id='{{id}}' to='{{to}}/{ODD}'><query xmlns='{INFO}'/></iq>",
        "jid-malformed",
    ),
    (
        "odd result",
        f"<iq type='result' id='{{id}}' to='{{to}}/{ODD}'><query xmlns='{INFO}'/></iq>",
        None,
    ),
    ("odd error", f"<iq type='error' id='{{id}}' to='{{to}}/{ODD}'>{ERROR}</iq>", None),
    (
        "odd message error",
        f"<message type='error' id='{{id}}' to='{{to}}/{ODD}'>{ERROR}</message>",
        None,
    ),
]
MULTICAST_ONLY = [
    ("info get", f"<iq type='get' id='{{id}}' to='{{to}}'><query xmlns='{INFO}'/></iq>", "result"),
    (
        "items get",
        f"<iq type='get' id='{{id}}' to='{{to}}'><query xmlns='{ITEMS}'/></iq>",
        "result",
    ),
    (
        "info of a node",
        f"<iq type='get' id='{{id}}' to='{{to}}'><query xmlns='{INFO}' node='nothing'/></iq>",
        "item-not-found",
    ),
    (
        "pubsub get",
        f"<iq type='get' id='{{id}}' to='{{to}}'><pubsub xmlns='{PUBSUB}'>"
        "<items node='n'/></pubsub></iq>",
        "service-unavailable",
    ),
]
PROXY_ONLY = [
    ("info get", f"<iq type='get' id='{{id}}' to='{{to}}'><query xmlns='{INFO}'/></iq>", "result"),
    (
        "two pubsub",
        f"<iq type='get' id='{{id}}' to='{{to}}'><pubsub xmlns='{PUBSUB}'>"
        f"<items node='n'/></pubsub><pubsub xmlns='{PUBSUB}'><items node='m'/></pubsub></iq>",
        "bad-request",
    ),
]


def outcome(reply: ET.Element) -> str:
    if reply.get("type") != "error":
        return str(reply.get("type"))
    error = next((c for c in reply if c.tag.endswith("}error")), None)
    names = [] if error is None else [c.tag.partition("}")[2] for c in error]
    return next((n for n in names if n != "text"), "no condition")


async def test_every_get_and_set_gets_exactly_one_reply(
    herald: HeraldProcess, alice: Recorder
) -> None:
    sent: dict[str, tuple[str, str, str | None]] = {}
    for to, cases in ((MULTICAST_JID, COMMON + MULTICAST_ONLY), (PROXY_JID, COMMON + PROXY_ONLY)):
        for name, template, expected in cases:
            stanza_id = f"t{next(_seq)}-"
            sent[stanza_id] = (to, name, expected)
            alice.send(template.replace("{to}", to).replace("{id}", stanza_id))
    wanted = {i for i, (_, _, expected) in sent.items() if expected is not None}
    for _ in range(100):  # until every expected reply is in, then a little more
        if wanted <= set(alice.replies("t")):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # duplicates, and replies that should never come
    replies: dict[str, list[str]] = {}
    for stanza in alice.seen:
        if stanza.get("id", "") in sent:
            replies.setdefault(stanza.get("id", ""), []).append(outcome(stanza))
    wrong = []
    for stanza_id, (to, name, expected) in sent.items():
        got = replies.get(stanza_id, [])
        if got != ([] if expected is None else [expected]):
            wrong.append(f"{to} {name}: expected {expected or 'no reply'}, got {got or 'none'}")
    print(f"\n[self-answer] {len(sent)} stanzas, {len(wrong)} answered wrongly")
    for line in wrong:
        print(f"  {line}")
    assert not wrong
