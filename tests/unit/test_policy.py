"""The proxy's requester and target policy (pure)."""

from __future__ import annotations

import pytest

from component.pubsub.policy import (
    is_pubsub_service,
    needs_pubsub_identity,
    requester_refusal,
    target_refusal,
)

LOCAL = frozenset({"example.org"})


@pytest.mark.parametrize(
    ("domain", "escaped", "reading", "refused"),
    [
        ("example.org", False, True, False),
        ("example.org", True, False, False),  # local users may do everything
        ("EXAMPLE.org", True, True, False),
        ("elsewhere.net", False, True, False),  # anyone reads at the bare proxy JID
        ("elsewhere.net", True, True, True),  # ... but reaches no other service
        ("elsewhere.net", False, False, True),  # ... and never writes or subscribes
        ("elsewhere.net", True, False, True),
    ],
)
def test_requesters(domain: str, escaped: bool, reading: bool, refused: bool) -> None:
    why = requester_refusal(domain, LOCAL, escaped, reading)
    assert (why is not None) is refused
    if why:
        assert "example.org" in why


@pytest.mark.parametrize(
    ("target", "refused"),
    [
        ("pubsub.remote.org", False),
        ("10.0.0.1", True),
        ("127.0.0.1", True),
        ("[::1]", True),
        ("::1", True),
        ("multicast.example.org", True),
        ("pubsub.example.org", True),
        ("PUBSUB.example.org", True),
    ],
)
def test_targets(target: str, refused: bool) -> None:
    own = frozenset({"multicast.example.org", "pubsub.example.org"})
    assert (target_refusal(target, own) is not None) is refused


@pytest.mark.parametrize(
    ("user", "domain", "checked"),
    [
        (None, "example.org", True),  # the server's own domain
        (None, "EXAMPLE.org", True),
        (None, "example.org.", True),
        (None, "conference.example.org", True),  # a component of it
        (None, "a.b.example.org", True),
        (None, "pubsub-origin.example.org", False),  # the configured upstream
        (None, "PUBSUB-origin.example.org", False),
        ("alice", "example.org", False),  # an account's PEP
        ("room", "conference.example.org", False),
        (None, "pubsub.remote.org", False),  # not a host of the local server
        (None, "badexample.org", False),  # a suffix, not a subdomain
        (None, "example.org.evil.net", False),
        (None, "other.net", False),
    ],
)
def test_local_hosts_need_a_pubsub_identity(user: str | None, domain: str, checked: bool) -> None:
    assert needs_pubsub_identity(user, domain, LOCAL, "pubsub-origin.example.org") is checked


@pytest.mark.parametrize(
    ("identities", "pubsub"),
    [
        ([("pubsub", "service")], True),
        ([("server", "im"), ("pubsub", "pep")], False),  # a server with PEP
        ([("conference", "text")], False),
        ([("PubSub", "Service"), ("component", "generic")], True),
        ([], False),
    ],
)
def test_a_pubsub_service_identity(identities: list[tuple[str, str]], pubsub: bool) -> None:
    assert is_pubsub_service(identities) is pubsub
