"""XEP-0106 escaping and the proxy addressing built on it."""

from __future__ import annotations

import pytest

from component.xmpp.escaping import (
    escape_localpart,
    proxied_target,
    proxy_jid_for,
    unescape_localpart,
)

# XEP-0106 §5.1 "JID Examples": (user input localpart, escaped localpart on the wire).
XEP_0106_TABLE = [
    ("space cadet", r"space\20cadet"),
    ('call me "ishmael"', r"call\20me\20\22ishmael\22"),
    ("at&t guy", r"at\26t\20guy"),
    ("d'artagnan", r"d\27artagnan"),
    ("/.fanboy", r"\2f.fanboy"),
    ("::foo::", r"\3a\3afoo\3a\3a"),
    ("<foo>", r"\3cfoo\3e"),
    ("user@host", r"user\40host"),
    ("c:\\net", r"c\3a\5cnet"),
    ("c:\\\\net", r"c\3a\5c\5cnet"),
    ("c:\\cool stuff", r"c\3a\5ccool\20stuff"),
    ("c:\\5commas", r"c\3a\5c5commas"),
]

# Rows 9-11 escape every backslash, which contradicts the normative rule (§4.3 rule 7,
# §4.4 exceptions): a backslash is escaped only before an escape sequence. We follow
# the rule (as Prosody's util.jid does); both forms unescape to the same input.
NORMATIVE_ESCAPE = {
    "c:\\net": r"c\3a\net",
    "c:\\\\net": r"c\3a\\net",
    "c:\\cool stuff": r"c\3a\cool\20stuff",
}


@pytest.mark.parametrize(("raw", "escaped"), XEP_0106_TABLE)
def test_xep_0106_table_unescapes(raw: str, escaped: str) -> None:
    assert unescape_localpart(escaped) == raw


@pytest.mark.parametrize(("raw", "escaped"), XEP_0106_TABLE)
def test_xep_0106_table_escapes(raw: str, escaped: str) -> None:
    expected = NORMATIVE_ESCAPE.get(raw, escaped)
    assert escape_localpart(raw) == expected
    assert unescape_localpart(expected) == raw


@pytest.mark.parametrize(
    "unchanged",
    [
        r"\2plus\2is\4",  # §4.4: partial escape sequences
        r"foo\bar",  # §4.4: not an escape sequence
        r"foob\41r",  # §4.4: escapes a character that is not on the list
        r"\2F\3A",  # case is significant: uppercase hex is not an escape sequence
        "plain.node-name_1",
        "",
    ],
)
def test_exceptions_are_left_alone(unchanged: str) -> None:
    assert escape_localpart(unchanged) == unchanged
    assert unescape_localpart(unchanged) == unchanged


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        (r"\3and\2is\5cool", r"\5c3and\2is\5c5cool"),  # §4.3 Wireless Village example
        (r"d\27artagnan", r"d\5c27artagnan"),
        ("\\", "\\"),
        (r"\5c", r"\5c5c"),
        ("a\\", "a\\"),
    ],
)
def test_backslash_before_a_sequence_is_escaped(raw: str, escaped: str) -> None:
    assert escape_localpart(raw) == escaped
    assert unescape_localpart(escaped) == raw


def test_unescaping_is_not_recursive() -> None:
    assert unescape_localpart(r"\5c20") == r"\20"


@pytest.mark.parametrize("raw", [" lead", "trail ", " "])
def test_escape_refuses_leading_or_trailing_space(raw: str) -> None:
    with pytest.raises(ValueError, match="space"):
        escape_localpart(raw)


@pytest.mark.parametrize("escaped", [r"\20lead", r"trail\20", r"\20"])
def test_unescape_refuses_leading_or_trailing_20(escaped: str) -> None:
    with pytest.raises(ValueError, match=r"\\20"):
        unescape_localpart(escaped)


@pytest.mark.parametrize(
    "raw",
    [
        "all \" & ' / : < > @ \\ in one",
        r"\20\22\26\27\2f\3a\3c\3e\40\5c",
        "juliet@capulet.lit",
        "ünïcödé@例え.jp",
        "a\\b\\\\c\\5",
    ],
)
def test_round_trip(raw: str) -> None:
    escaped = escape_localpart(raw)
    assert unescape_localpart(escaped) == raw
    assert escape_localpart(unescape_localpart(escaped)) == escaped
    assert not any(char in escaped for char in " \"&'/:<>@")


UPSTREAM = "pubsub-origin.example.org"
PROXY = "pubsub.example.org"


@pytest.mark.parametrize(
    ("localpart", "target"),
    [
        (None, UPSTREAM),
        ("", UPSTREAM),
        ("pubsub.remote.org", "pubsub.remote.org"),
        (r"juliet\40capulet.lit", "juliet@capulet.lit"),
        (r"juliet\40Capulet.LIT", "juliet@capulet.lit"),
        (r"d\5c27artagnan\40musketeers.lit", r"d\27artagnan@musketeers.lit"),
        (UPSTREAM, UPSTREAM),
    ],
)
def test_proxied_target(localpart: str | None, target: str) -> None:
    assert proxied_target(localpart, UPSTREAM) == target


@pytest.mark.parametrize(
    ("localpart", "message"),
    [
        (r"juliet\40capulet.lit\2fbalcony", "bare JID"),
        (r"juliet\40", "not a valid JID"),
        (r"\40capulet.lit", "not a valid JID"),
        (r"a\40b\40c", "not a valid JID"),
        (r"bad\20domain", "not a valid JID"),
        (r"\20space", r"\\20"),
    ],
)
def test_proxied_target_rejects_bad_localparts(localpart: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        proxied_target(localpart, UPSTREAM)


@pytest.mark.parametrize("localpart", [PROXY, r"someone\40pubsub.example.org"])
def test_proxied_target_refuses_loops(localpart: str) -> None:
    assert proxied_target(localpart, UPSTREAM) == unescape_localpart(localpart)
    with pytest.raises(ValueError, match="proxy itself"):
        proxied_target(localpart, UPSTREAM, proxy_domain=PROXY)


@pytest.mark.parametrize(
    ("target", "jid"),
    [
        (UPSTREAM, PROXY),
        ("pubsub.remote.org", f"pubsub.remote.org@{PROXY}"),
        ("juliet@capulet.lit", rf"juliet\40capulet.lit@{PROXY}"),
        ("Juliet@Capulet.lit", rf"juliet\40capulet.lit@{PROXY}"),
        (r"d\27artagnan@musketeers.lit", rf"d\5c27artagnan\40musketeers.lit@{PROXY}"),
    ],
)
def test_proxy_jid_for_and_back(target: str, jid: str) -> None:
    assert proxy_jid_for(target, PROXY, UPSTREAM) == jid
    localpart = jid.rpartition("@")[0] or None
    assert proxied_target(localpart, UPSTREAM, proxy_domain=PROXY) == target.lower()


@pytest.mark.parametrize(
    ("target", "message"),
    [("", "empty"), ("juliet@capulet.lit/balcony", "bare JID"), ("a b@c", "not a valid JID")],
)
def test_proxy_jid_for_rejects_bad_targets(target: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        proxy_jid_for(target, PROXY, UPSTREAM)
