"""Small pure pieces of the XMPP edge: privileges, sender routes, rate limit, backoff."""

from __future__ import annotations

import random
from xml.etree import ElementTree as ET

import pytest

from component.multicast.ratelimit import RateLimiter, SenderLimits
from component.multicast.routes import choose_route
from component.xmpp.backoff import Backoff
from component.xmpp.privilege import HostPrivileges, parse_advertisement, wrap_message


def test_privilege_v2_with_prosody_nested_namespaces() -> None:
    # Prosody's mod_privilege (hg 2023-02) leaves each <namespace/> open.
    msg = ET.fromstring(
        """<message xmlns="jabber:component:accept" from="example.org" to="ps.example.org">
             <privilege xmlns="urn:xmpp:privilege:2">
               <perm access="message" type="outgoing"/>
               <perm access="iq">
                 <namespace ns="http://jabber.org/protocol/pubsub" type="both">
                   <namespace ns="http://jabber.org/protocol/pubsub#owner" type="set"/>
                 </namespace>
               </perm>
             </privilege></message>"""
    )
    granted = parse_advertisement("example.org", msg)
    assert granted is not None
    assert granted.can_send_messages()
    assert granted.can_iq("http://jabber.org/protocol/pubsub", "get")
    assert granted.can_iq("http://jabber.org/protocol/pubsub#owner", "set")
    assert not granted.can_iq("http://jabber.org/protocol/pubsub#owner", "get")
    assert not granted.can_iq("jabber:iq:roster", "get")


def test_privilege_v1_from_ejabberd_23() -> None:
    msg = ET.fromstring(
        """<message xmlns="jabber:component:accept" from="example.org">
             <privilege xmlns="urn:xmpp:privilege:1">
               <perm access="message" type="outgoing"/><perm access="roster" type="get"/>
             </privilege></message>"""
    )
    granted = parse_advertisement("example.org", msg)
    assert granted == HostPrivileges(
        "example.org", "urn:xmpp:privilege:1", roster="get", message="outgoing"
    )
    assert parse_advertisement("example.org", ET.fromstring("<message/>")) is None


def test_wrapped_message_is_in_jabber_client() -> None:
    granted = HostPrivileges("example.org", "urn:xmpp:privilege:2", message="outgoing")
    inner = ET.fromstring(
        '<message xmlns="jabber:component:accept" from="a@example.org" to="b@example.org">'
        "<body>hi</body></message>"
    )
    outer = wrap_message(granted, "mc.example.org", inner)
    assert (outer.get("from"), outer.get("to")) == ("mc.example.org", "example.org")
    forwarded = outer.find("{urn:xmpp:privilege:2}privilege/{urn:xmpp:forward:0}forwarded")
    assert forwarded is not None
    assert forwarded[0].tag == "{jabber:client}message"
    assert forwarded[0][0].tag == "{jabber:client}body"
    assert inner.tag == "{jabber:component:accept}message"  # the original is untouched


GRANTED = {"example.org": HostPrivileges("example.org", "urn:xmpp:privilege:2", message="outgoing")}


@pytest.mark.parametrize(
    ("mode", "kind", "domain", "granted", "expected"),
    [
        ("trusted", "message", "example.org", GRANTED, "trusted"),
        ("trusted", "presence", "example.org", GRANTED, "trusted"),
        ("auto", "message", "example.org", {}, "trusted"),
        ("auto", "message", "example.org", GRANTED, "privileged"),
        ("auto", "presence", "example.org", GRANTED, "feature-not-implemented"),
        ("privileged", "message", "example.org", GRANTED, "privileged"),
        ("privileged", "message", "remote.org", GRANTED, "service-unavailable"),
        ("privileged", "message", "example.org", {}, "service-unavailable"),
    ],
)
def test_sender_routes(
    mode: str, kind: str, domain: str, granted: dict[str, HostPrivileges], expected: str
) -> None:
    route = choose_route(mode, kind, domain, granted)  # type: ignore[arg-type]
    assert (route.mode or route.condition) == expected
    if route.mode is None:
        assert route.text


def test_rate_limiter() -> None:
    limiter = RateLimiter(per_minute=60, burst=2)
    assert [limiter.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow("b", 0.0)  # per sender
    assert not limiter.allow("a", 0.5)
    assert limiter.allow("a", 1.6)  # one token per second
    assert RateLimiter(per_minute=0, burst=1).allow("a", 0.0)


def test_backoff_is_capped_and_jittered() -> None:
    backoff = Backoff(base=0.5, cap=15, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(10)]
    assert 0.25 <= delays[0] <= 0.5
    assert all(d <= 15 for d in delays)
    assert delays[-1] >= 7.5  # capped ceiling, jitter within [cap/2, cap]
    assert len(set(delays)) == len(delays)
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_remote_senders_share_one_bucket_per_domain() -> None:
    # Issue 11: a remote domain minting bare JIDs got a fresh bucket for each.
    limits = SenderLimits(
        RateLimiter(per_minute=60, burst=2),
        RateLimiter(per_minute=60, burst=3),
        frozenset({"example.org"}),
    )
    minted = [limits.refusal(f"x{n}@evil.org", 0.0) for n in range(4)]
    print("minted senders:", minted)
    assert minted[:3] == [None, None, None]
    assert minted[3] == "Too many multicast stanzas from evil.org; wait a little and try again."
    assert limits.refusal("x9@EVIL.org", 0.0) is not None  # domains compare lowercased
    assert limits.refusal("y@other.net", 0.0) is None  # another domain has its own bucket
    # local users keep one bucket each
    assert [limits.refusal("alice@example.org", 0.0) for _ in range(3)][2] is not None
    assert limits.refusal("bob@example.org", 0.0) is None
