"""The fuzzer's bookkeeping can fail: each invariant flags the stanza that breaks it."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from tests.fuzz.generator import Generator, World
from tests.fuzz.runner import Ledger

WORLD = World(
    multicast="multicast.localhost",
    pubsub="pubsub.localhost",
    upstream="pubsub-origin.localhost",
    local_recipients=("bob@localhost",),
    remote_recipients=("erin@plain.localhost",),
    pep_owner="olivia@localhost",
)
ERROR = (
    "<error type='modify'><bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
    "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>why</text></error>"
)


def ledger_with(*cases: tuple[str, str]) -> tuple[Ledger, dict[str, str]]:
    """A ledger that sent one case of each (class maker, wanted expect); ids by label."""
    ledger = Ledger(herald_domains=frozenset({WORLD.multicast, WORLD.pubsub}))
    gen = Generator(7, WORLD)
    ids = {}
    for label, maker in cases:
        case = getattr(gen, maker)()
        ledger.sent("local", case)
        ids[label] = case.stanza_id
    return ledger, ids


def receive(ledger: Ledger, xml: str) -> None:
    ledger.receive(ET.fromstring(xml))


def test_every_verdict_can_fail() -> None:
    ledger, ids = ledger_with(("valid", "mc_valid"), ("refused", "mc_bad_jid"))
    gen = Generator(8, WORLD)
    get = next(c for c in gen.cases(500) if c.kind == "iq" and c.expect == "answer")
    result = next(c for c in gen.cases(500) if c.kind == "iq" and c.expect == "silence")
    unanswered = next(c for c in gen.cases(500) if c.kind == "iq" and c.expect == "answer")
    for case in (get, result, unanswered):
        ledger.sent("remote", case)

    def q(value: str) -> str:
        return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")

    receive(ledger, f'<message from="alice@localhost/x" id="{q(ids["valid"])}"/>')
    receive(
        ledger,
        f'<message from="multicast.localhost" type="error" id="{q(ids["refused"])}">'
        f"{ERROR}</message>",
    )
    receive(ledger, f'<message from="alice@localhost/x" id="{q(ids["refused"])}"/>')
    for _ in range(2):
        receive(ledger, f'<iq from="multicast.localhost" type="result" id="{q(get.stanza_id)}"/>')
    receive(
        ledger, f'<iq from="pubsub.localhost" type="error" id="{q(result.stanza_id)}">{ERROR}</iq>'
    )

    assert ledger.refused_but_delivered() == [ids["refused"]]
    assert ledger.answered_twice() == [get.stanza_id]
    assert ledger.replies_to_silence() == [result.stanza_id]
    assert ledger.unanswered() == [unanswered.stanza_id]
    assert ledger.errors_by_condition() == {"bad-request": 2}
    assert ledger.error_texts[ids["refused"]] == "why"


def test_the_same_seed_gives_the_same_stanzas() -> None:
    first = [c.xml for c in Generator(42, WORLD).cases(300)]
    assert first == [c.xml for c in Generator(42, WORLD).cases(300)]
    assert first != [c.xml for c in Generator(43, WORLD).cases(300)]


def test_every_case_is_well_formed_xml() -> None:
    for case in Generator(1, WORLD).cases(2000):
        ET.fromstring(case.xml)  # a parse error would close the sender's stream
