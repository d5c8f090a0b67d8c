"""Analyser rules: config model, first-match-wins matching, parsers and plugins."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any
from xml.etree.ElementTree import Element

import pytest
from pydantic import ValidationError

from component.pubsub.rules import ENTRY_POINT_GROUP, AnalyserRule, Registry

ATOM = "http://www.w3.org/2005/Atom"
MICROBLOG = "urn:xmpp:microblog:0"


def tag_parser(payload: Element) -> dict[str, Any]:
    return {"tag": payload.tag}


def good_plugin(registry: Registry) -> None:
    registry.register_parser("tag", tag_parser)
    registry.register_analyser("events", node="urn:xmpp:events:*", sync=True, parser="tag")


def failing_plugin(registry: Registry) -> None:
    registry.register_parser("half", tag_parser)
    raise RuntimeError("boom")


def plugin(name: str, func: str) -> EntryPoint:
    return EntryPoint(name=name, value=f"{__name__}:{func}", group=ENTRY_POINT_GROUP)


def matched(registry: Registry, node: str, namespace: str | None = None) -> str | None:
    found = registry.match("pubsub.example.org", node, namespace)
    return found.name if found else None


def test_rule_model_defaults_and_extra_keys() -> None:
    rule = AnalyserRule()
    assert (rule.service, rule.node, rule.namespace) == ("*", "*", "")
    assert (rule.sync, rule.parser, rule.name) == (False, None, None)
    with pytest.raises(ValidationError, match="prefix"):
        AnalyserRule.model_validate({"node": "x", "prefix": "urn:"})


RULES = [
    AnalyserRule(node=f"{MICROBLOG}*", sync=True, parser="atom", name="blog"),
    AnalyserRule(service="pubsub.*.org", namespace="urn:example:tune", name="tune"),
    AnalyserRule(service="muc.example.org", name="muc-any"),
    AnalyserRule(node="urn:xmpp:bookmarks:1", sync=True),
]


@pytest.mark.parametrize(
    ("service", "node", "namespace", "expected"),
    [
        ("pubsub.example.org", MICROBLOG, ATOM, "blog"),
        ("juliet@capulet.lit", f"{MICROBLOG}:comments/123", None, "blog"),
        ("pubsub.remote.org", "tunes", "urn:example:tune", "tune"),
        ("pubsub.remote.org", "tunes", None, None),  # namespace unknown: no match
        ("pubsub.remote.org", "tunes", "urn:example:other", None),
        ("pubsub.remote.net", "tunes", "urn:example:tune", None),  # service glob
        ("muc.example.org", "anything", None, "muc-any"),
        ("Muc.Example.org", "anything", None, None),  # globs are case-sensitive
        ("x.org", "urn:xmpp:bookmarks:1", None, "rule-4"),
        ("x.org", "urn:xmpp:bookmarks:10", None, None),
        ("x.org", "unrelated", ATOM, None),
    ],
)
def test_first_matching_rule_wins(
    service: str, node: str, namespace: str | None, expected: str | None
) -> None:
    registry = Registry.from_config(RULES, plugins=[])
    found = registry.match(service, node, namespace)
    assert (found.name if found else None) == expected


def test_rule_order_decides_between_overlapping_rules() -> None:
    specific = AnalyserRule(node=MICROBLOG, name="specific")
    broad = AnalyserRule(node="urn:*", name="broad")
    first = Registry.from_config([specific, broad], plugins=[])
    second = Registry.from_config([broad, specific], plugins=[])
    assert matched(first, MICROBLOG) == "specific"
    assert matched(second, MICROBLOG) == "broad"


def test_resolved_rule_keeps_its_settings() -> None:
    analyser = Registry.from_config(RULES, plugins=[]).analysers[0]
    assert (analyser.service, analyser.node, analyser.sync, analyser.parser) == (
        "*",
        f"{MICROBLOG}*",
        True,
        "atom",
    )


def test_config_rules_come_before_plugin_analysers() -> None:
    registry = Registry.from_config(
        [AnalyserRule(node="urn:xmpp:events:*", name="configured")],
        plugins=[plugin("good", "good_plugin")],
    )
    assert [a.name for a in registry.analysers] == ["configured", "events"]
    assert matched(registry, "urn:xmpp:events:party") == "configured"


def test_plugin_registers_parser_and_analyser() -> None:
    registry = Registry()
    assert registry.load_plugins([plugin("good", "good_plugin")]) == []
    found = registry.match("s", "urn:xmpp:events:party", None)
    assert found is not None
    assert (found.name, found.sync, found.parser) == ("events", True, "tag")
    assert registry.parse("tag", Element("{urn:x}p")) == {"tag": "{urn:x}p"}


def test_plugin_errors_are_reported_and_rolled_back() -> None:
    registry = Registry()
    errors = registry.load_plugins(
        [
            plugin("broken", "failing_plugin"),
            plugin("missing", "no_such_function"),
            plugin("good", "good_plugin"),
        ]
    )
    assert len(errors) == 2
    assert "'broken'" in errors[0]
    assert "boom" in errors[0]
    assert "'missing'" in errors[1]
    assert registry.plugin_errors == errors
    assert "half" not in registry.parser_names  # the failing plugin left nothing behind
    assert [a.name for a in registry.analysers] == ["events"]


def test_load_plugins_defaults_to_installed_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    groups: list[str] = []

    def fake_entry_points(*, group: str) -> list[EntryPoint]:
        groups.append(group)
        return [plugin("good", "good_plugin")]

    monkeypatch.setattr("component.pubsub.rules.entry_points", fake_entry_points)
    registry = Registry.from_config([])
    assert groups == ["herald.analysers"]
    assert matched(registry, "urn:xmpp:events:party") == "events"


def test_unknown_parser_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match=r"pubsub\.rules\[1\].*'rss'"):
        Registry.from_config([AnalyserRule(), AnalyserRule(parser="rss")], plugins=[])
    with pytest.raises(ValueError, match="'rss'"):
        Registry().register_analyser("feeds", parser="rss")


def test_rule_may_use_a_plugin_parser() -> None:
    registry = Registry.from_config(
        [AnalyserRule(parser="tag", name="tagged")], plugins=[plugin("good", "good_plugin")]
    )
    assert registry.analysers[0].parser == "tag"
    assert matched(registry, "any-node") == "tagged"


def test_failed_set_rules_keeps_previous_rules() -> None:
    registry = Registry.from_config([AnalyserRule(name="kept")], plugins=[])
    with pytest.raises(ValueError, match="unknown"):
        registry.set_rules([AnalyserRule(name="new"), AnalyserRule(parser="nope")])
    assert [a.name for a in registry.analysers] == ["kept"]


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"duplicate.*'x'"):
        Registry.from_config([AnalyserRule(name="x"), AnalyserRule(name="x")], plugins=[])
    registry = Registry()
    with pytest.raises(ValueError, match="already registered"):
        registry.register_parser("atom", tag_parser)


def test_match_callback_has_the_last_word() -> None:
    registry = Registry()
    registry.register_analyser("odd", node="n*", match=lambda s, n, ns: len(n) % 2 == 1)
    registry.register_analyser("fallback", node="n*")
    assert matched(registry, "n1x") == "odd"
    assert matched(registry, "n1") == "fallback"
    assert matched(registry, "x1") is None


def test_builtin_atom_parser_and_failing_parsers() -> None:
    registry = Registry()
    entry = Element(f"{{{ATOM}}}entry")
    title = Element(f"{{{ATOM}}}title")
    title.text = "Hi"
    entry.append(title)
    assert registry.parse("atom", entry) == {"title": "Hi", "categories": [], "links": []}

    def explode(payload: Element) -> dict[str, Any]:
        raise ValueError(payload.tag)

    registry.register_parser("explode", explode)
    assert registry.parse("explode", entry) is None
    assert registry.parse("unknown", entry) is None
