"""Learning which local hosts are pubsub services: the memo's bounds and expiry, and
one disco#info per host however many requests wait for it."""

from __future__ import annotations

import asyncio
from typing import cast
from xml.etree import ElementTree as ET

import pytest

from component.pubsub.local_hosts import KnownHosts, LocalHosts
from component.pubsub.upstream import Upstream, UpstreamError
from component.xmpp.errors import make_error
from component.xmpp.namespaces import DISCO_INFO_NS


def test_known_only_within_the_ttl_and_bounded() -> None:
    memo = KnownHosts(ttl=10.0, limit=2)
    assert memo.known("a.example.org", 0.0) is None
    memo.note("a.example.org", False, 100.0)
    assert memo.known("a.example.org", 109.9) is False
    assert memo.known("a.example.org", 110.0) is None  # stale: asked again
    memo.note("a.example.org", True, 200.0)
    memo.note("b.example.org", False, 201.0)
    memo.note("c.example.org", False, 202.0)
    assert len(memo) == 2
    assert memo.known("a.example.org", 203.0) is None  # the oldest went first


class Answers:
    """Stands in for Upstream.as_herald: answers each disco#info after a pause."""

    def __init__(self, identity: tuple[str, str] | None, error: str | None = None) -> None:
        self.identity = identity
        self.error = error
        self.asked: list[str] = []

    async def as_herald(self, iq_type: str, to: str, payload: ET.Element) -> ET.Element:
        self.asked.append(to)
        await asyncio.sleep(0.01)
        if self.error is not None:
            raise UpstreamError(make_error(self.error, "no"), "upstream error")
        iq = ET.Element("iq", {"type": "result"})
        query = ET.SubElement(iq, f"{{{DISCO_INFO_NS}}}query")
        if self.identity is not None:
            category, kind = self.identity
            ET.SubElement(
                query, f"{{{DISCO_INFO_NS}}}identity", {"category": category, "type": kind}
            )
        return iq


def hosts(answers: Answers) -> LocalHosts:
    return LocalHosts(cast(Upstream, answers), {"example.org"}, "pubsub-origin.example.org")


async def test_one_question_per_host_for_concurrent_requests() -> None:
    answers = Answers(("conference", "text"))
    local = hosts(answers)
    got = await asyncio.gather(*(local.refusal("conference.example.org") for _ in range(20)))
    assert all(why is not None and "not a pubsub service" in why for why in got)
    assert await local.refusal("conference.example.org") is not None  # from the memo
    assert answers.asked == ["conference.example.org"]
    # never asked: the upstream, a PEP account, a remote service
    for target in ("pubsub-origin.example.org", "alice@example.org", "pubsub.remote.org"):
        assert await local.refusal(target) is None
    assert answers.asked == ["conference.example.org"]


async def test_a_local_pubsub_service_is_used() -> None:
    answers = Answers(("pubsub", "service"))
    assert await hosts(answers).refusal("pubsub2.example.org") is None


async def test_an_error_answer_is_not_a_pubsub_service_but_a_timeout_says_nothing() -> None:
    refused = hosts(Answers(None, error="service-unavailable"))
    assert await refused.refusal("example.org") is not None
    silent = Answers(None, error="remote-server-timeout")
    local = hosts(silent)
    for _ in range(2):
        with pytest.raises(UpstreamError):
            await local.refusal("hung.example.org")
    assert silent.asked == ["hung.example.org"] * 2  # not remembered


async def test_a_requester_gone_does_not_cancel_the_others() -> None:
    answers = Answers(("conference", "text"))
    local = hosts(answers)
    first = asyncio.create_task(local.refusal("conference.example.org"))
    second = asyncio.create_task(local.refusal("conference.example.org"))
    await asyncio.sleep(0)
    first.cancel()
    assert await second is not None
    assert answers.asked == ["conference.example.org"]
