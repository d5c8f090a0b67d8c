"""Sends generated cases over raw c2s streams and books every reply and delivery.

Replies and deliveries are matched to cases by stanza id (Herald's copies keep the
original id). What comes back from one of Herald's JIDs is a reply; a message or
presence from a user is a delivery; anything else (a server's bounce) is counted apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

from bench.rawclient import STANZAS_NS, RawClient
from tests.fuzz.generator import Case


class RecordingClient(RawClient):
    """A RawClient that, once logged in, hands every stanza to `sink`."""

    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.sink: Ledger | None = None
        self.lost = False

    def data_received(self, data: bytes) -> None:
        if self.sink is None:
            super().data_received(data)
            return
        self.bytes_in += len(data)
        for stanza in self.parser.feed(data):
            self.sink.receive(stanza)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        super().connection_lost(exc)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _condition(stanza: ET.Element) -> str:
    error = next((c for c in stanza if _local(c.tag) == "error"), None)
    if error is None:
        return "(no error element)"
    names = [_local(c.tag) for c in error if c.tag.startswith(f"{{{STANZAS_NS}}}")]
    return next((n for n in names if n != "text"), "(no condition)")


@dataclass
class Ledger:
    """Everything sent and everything that came back, keyed by stanza id."""

    herald_domains: frozenset[str]
    cases: dict[str, Case] = field(default_factory=dict)
    senders: dict[str, str] = field(default_factory=dict)  # id -> sender name
    replies: dict[str, list[tuple[str, str, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )  # id -> [(type, from, condition)]
    deliveries: Counter[str] = field(default_factory=Counter)
    bounces: Counter[str] = field(default_factory=Counter)  # id -> server bounces
    unknown: int = 0
    error_texts: dict[str, str] = field(default_factory=dict)
    sent_per_class: Counter[str] = field(default_factory=Counter)
    outstanding: set[str] = field(default_factory=set)  # get/set still unanswered
    answered: asyncio.Event = field(default_factory=asyncio.Event)  # set on each reply

    def sent(self, sender: str, case: Case) -> None:
        self.cases[case.stanza_id] = case
        self.senders[case.stanza_id] = sender
        self.sent_per_class[f"{sender}:{case.klass}"] += 1
        if case.expect == "answer":
            self.outstanding.add(case.stanza_id)

    def _from_herald(self, sender: str) -> bool:
        domain = sender.partition("/")[0].rpartition("@")[2].lower()
        return domain in self.herald_domains

    def receive(self, stanza: ET.Element) -> None:
        sid = stanza.get("id")
        if sid is None or sid not in self.cases:
            self.unknown += 1  # roster pushes, presence broadcasts, greetings
            return
        kind, stype, sender = _local(stanza.tag), stanza.get("type", ""), stanza.get("from", "")
        if kind == "iq" or self._from_herald(sender):
            condition = _condition(stanza) if stype == "error" else ""
            self.replies[sid].append((stype, sender, condition))
            if condition:
                self.error_texts[sid] = stanza.findtext(f"{{*}}error/{{{STANZAS_NS}}}text") or ""
            self.outstanding.discard(sid)
            self.answered.set()
        elif stype == "error":
            self.bounces[sid] += 1
        else:
            self.deliveries[sid] += 1

    # -- verdicts --------------------------------------------------------------------------

    def unanswered(self) -> list[str]:
        return [s for s, c in self.cases.items() if c.expect == "answer" and not self.replies[s]]

    def answered_twice(self) -> list[str]:
        return [s for s, r in self.replies.items() if len(r) > 1]

    def replies_to_silence(self) -> list[str]:
        return [s for s, c in self.cases.items() if c.expect == "silence" and self.replies[s]]

    def refused_but_delivered(self) -> list[str]:
        """Cases Herald refused (an error reply) or ignored, of which a copy went out."""
        bad = []
        for sid in self.deliveries:
            case = self.cases[sid]
            refused = any(t == "error" for t, _, _ in self.replies[sid])
            if refused or case.expect == "silence" or case.target != "multicast":
                bad.append(sid)
        return bad

    def errors_by_condition(self) -> Counter[str]:
        """Error replies by condition, with 'server:' before those not from Herald."""
        return Counter(
            c if self._from_herald(f) else f"server:{c}"
            for r in self.replies.values()
            for t, f, c in r
            if t == "error"
        )

    def with_condition_from_herald(self) -> list[str]:
        """Cases that got an error from one of Herald's JIDs."""
        return [
            s
            for s, r in self.replies.items()
            if any(t == "error" and self._from_herald(f) for t, f, _ in r)
        ]

    def with_condition(self, condition: str) -> list[str]:
        return [s for s, r in self.replies.items() if any(c == condition for _, _, c in r)]

    def describe(self, ids: Iterable[str], limit: int = 5) -> str:
        lines = []
        for sid in list(ids)[:limit]:
            case = self.cases[sid]
            lines.append(
                f"  {self.senders[sid]} {case.klass} replies={self.replies.get(sid)} "
                f"deliveries={self.deliveries.get(sid, 0)} "
                f"text={self.error_texts.get(sid, '')!r}\n    {case.xml[:400]}"
            )
        return "\n".join(lines)


async def send_all(
    ledger: Ledger,
    plan: Iterable[tuple[str, RecordingClient, Case]],
    rate: float,
    window: int,
    batch: int = 20,
) -> float:
    """Send every case at up to `rate` stanzas/s, with at most `window` get/set unanswered.

    Returns the wall time.
    """
    began = time.perf_counter()
    pending: dict[RecordingClient, list[str]] = defaultdict(list)

    def flush() -> None:
        for client, chunks in pending.items():
            if chunks:
                client.send("".join(chunks))
                chunks.clear()

    for sent, (name, client, case) in enumerate(plan, start=1):
        if client.lost:
            raise RuntimeError(f"the server closed {name}'s stream (after {sent} stanzas)")
        ledger.sent(name, case)
        pending[client].append(case.xml)
        if sent % batch == 0:
            flush()
            await until(ledger, lambda: len(ledger.outstanding) <= window, 30)
            ahead = began + sent / rate - time.perf_counter()
            await asyncio.sleep(max(0.0, ahead))
    flush()
    return time.perf_counter() - began


async def until(ledger: Ledger, done: Callable[[], bool], timeout: float) -> None:
    """Wait for replies until done() holds, or timeout (then the verdicts tell)."""
    deadline = time.monotonic() + timeout
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        ledger.answered.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ledger.answered.wait(), left)


async def drain(ledger: Ledger, timeout: float) -> None:
    """Until every get/set is answered, or timeout."""
    await until(ledger, lambda: not ledger.outstanding, timeout)
