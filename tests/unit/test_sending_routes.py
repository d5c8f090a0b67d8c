"""The two routes to send as users are exclusive (issue 11): Herald's warning, and the
snippets it ships, which open exactly one of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from component.multicast.routes import overlapping_routes
from component.xmpp.privilege import HostPrivileges

CONFIG = Path(__file__).resolve().parents[2] / "config"


def grant(message: str) -> HostPrivileges:
    return HostPrivileges(host="example.org", namespace="urn:xmpp:privilege:2", message=message)


@pytest.mark.parametrize(
    ("mode", "message", "logged"),
    [
        ("trusted", "outgoing", "warning"),  # both routes open: warned
        ("auto", "outgoing", "info"),  # privileged from now on; trusted mode is unseen
        ("privileged", "outgoing", None),
        ("trusted", "none", None),
        ("auto", "none", None),
    ],
)
def test_the_start_up_warning(mode: str, message: str, logged: str | None) -> None:
    found = overlapping_routes(mode, grant(message))  # type: ignore[arg-type]
    if logged is None:
        assert found is None
        return
    assert found is not None
    warning, text = found
    assert warning is (logged == "warning")
    assert "example.org" in text
    if warning:
        assert "two routes" in text


def _active(text: str, comment: str) -> str:
    """The configuration without its comments."""
    return "\n".join(line.split(comment, 1)[0] for line in text.splitlines())


def test_the_prosody_snippet_opens_one_route() -> None:
    text = _active((CONFIG / "prosody.cfg.lua").read_text(), "--")
    multicast = text.split('Component "multicast.example.org"')[1].split("Component ")[0]
    trusted = "validate_from_addresses = false" in multicast
    entry = re.search(r'\["multicast\.example\.org"\] = \{(.*?)\};', text, re.DOTALL)
    privileged = entry is not None and 'message = "outgoing"' in entry.group(1)
    assert trusted != privileged, "the multicast component must have exactly one route"
    # the other one is documented, commented out
    assert 'message = "outgoing"' in (CONFIG / "prosody.cfg.lua").read_text()


def test_the_ejabberd_snippet_opens_one_route() -> None:
    raw = (CONFIG / "ejabberd.yml").read_text()
    text = _active(raw, "#")
    trusted = "check_from: false" in text
    privileged = re.search(r"^\s+message:\s*\n\s+outgoing:", text, re.MULTILINE) is not None
    assert trusted != privileged, "the multicast component must have exactly one route"
    assert re.search(r"^\s*#\s*message:", raw, re.MULTILINE)
