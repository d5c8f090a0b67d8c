"""The proxy's requester and target policy (pure)."""

from __future__ import annotations

import pytest

from component.pubsub.policy import requester_refusal, target_refusal

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
