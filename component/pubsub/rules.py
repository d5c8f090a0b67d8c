"""Analysers: which upstream pubsub nodes the proxy caches, and how items are parsed.

Configured rules (``[[pubsub.rules]]``) are tried first, in file order, then the
analysers that plugins register through the ``herald.analysers`` entry-point group.
The first match wins; no match means the node is passed through and not cached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from importlib.metadata import EntryPoint, entry_points
from typing import Any
from xml.etree.ElementTree import Element

from pydantic import BaseModel, ConfigDict

from component.pubsub.parsers import BUILTIN_PARSERS

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "herald.analysers"

Parser = Callable[[Element], dict[str, Any]]
"""Turns an item's payload element into a JSON-able dict, stored beside the raw XML."""

MatchCallback = Callable[[str, str, str | None], bool]
"""Final say on a match: called with (service, node, namespace) once the globs match."""


class AnalyserRule(BaseModel):
    """One ``[[pubsub.rules]]`` table of the configuration file."""

    model_config = ConfigDict(extra="forbid")

    service: str = "*"
    node: str = "*"
    namespace: str = ""
    sync: bool = False
    parser: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Analyser:
    """A resolved rule: globs on service and node, an optional payload namespace."""

    name: str
    service: str = "*"
    node: str = "*"
    namespace: str = ""
    sync: bool = False
    parser: str | None = None
    match: MatchCallback | None = None

    def matches(self, service: str, node: str, namespace: str | None) -> bool:
        """Whether this analyser applies to ``node`` on ``service``.

        As in Libervia, an analyser that names a namespace matches only when the
        node's payload namespace is known and equal to it.
        """
        if self.namespace and namespace != self.namespace:
            return False
        if not (fnmatchcase(service, self.service) and fnmatchcase(node, self.node)):
            return False
        return self.match is None or self.match(service, node, namespace)


class Registry:
    """Parsers and analysers, in match order: configured rules, then plugins."""

    def __init__(self) -> None:
        self._parsers: dict[str, Parser] = dict(BUILTIN_PARSERS)
        self._rules: list[Analyser] = []
        self._plugins: list[Analyser] = []
        self.plugin_errors: list[str] = []
        """Why each plugin that failed to load was skipped, for start-up reporting."""

    @classmethod
    def from_config(
        cls, rules: Sequence[AnalyserRule], *, plugins: Iterable[EntryPoint] | None = None
    ) -> Registry:
        """Build the registry: built-ins, then plugins, then the configured rules.

        Plugins are loaded first so that rules may name the parsers they provide.
        ``plugins`` defaults to the installed ``herald.analysers`` entry points.
        Raises ValueError for a rule that names an unknown parser.
        """
        registry = cls()
        registry.load_plugins(plugins)
        registry.set_rules(rules)
        return registry

    @property
    def analysers(self) -> tuple[Analyser, ...]:
        """Every analyser, in the order match() tries them."""
        return (*self._rules, *self._plugins)

    @property
    def parser_names(self) -> frozenset[str]:
        """The names of the registered parsers."""
        return frozenset(self._parsers)

    def register_parser(self, name: str, func: Parser) -> None:
        """Register a payload parser under ``name``; names are unique."""
        if name in self._parsers:
            raise ValueError(f"a pubsub parser named {name!r} is already registered")
        self._parsers[name] = func

    def register_analyser(
        self,
        name: str,
        *,
        service: str = "*",
        node: str = "*",
        namespace: str = "",
        sync: bool = False,
        parser: str | None = None,
        match: MatchCallback | None = None,
    ) -> Analyser:
        """Register a plugin analyser, tried after the configured rules.

        The parser, if any, must already be registered.
        """
        analyser = Analyser(name, service, node, namespace, sync, parser, match)
        self._check(analyser, self.analysers)
        self._plugins.append(analyser)
        return analyser

    def set_rules(self, rules: Sequence[AnalyserRule]) -> None:
        """Replace the configured rules; a rule without a name is called ``rule-N``."""
        resolved: list[Analyser] = []
        for position, rule in enumerate(rules, start=1):
            analyser = Analyser(
                name=rule.name or f"rule-{position}",
                service=rule.service,
                node=rule.node,
                namespace=rule.namespace,
                sync=rule.sync,
                parser=rule.parser,
            )
            others = (*resolved, *self._plugins)
            self._check(analyser, others, where=f"pubsub.rules[{position - 1}]")
            resolved.append(analyser)
        self._rules = resolved

    def load_plugins(self, plugins: Iterable[EntryPoint] | None = None) -> list[str]:
        """Call each entry point with this registry; return the errors, also logged.

        A failing plugin is skipped whole: what it registered before failing is undone,
        so a plugin is never half-installed.
        """
        if plugins is None:
            plugins = entry_points(group=ENTRY_POINT_GROUP)
        errors: list[str] = []
        for entry_point in plugins:
            parsers, analysers = dict(self._parsers), list(self._plugins)
            try:
                entry_point.load()(self)
            except Exception as exc:
                self._parsers, self._plugins = parsers, analysers
                error = f"pubsub analyser plugin {entry_point.name!r} failed to load: {exc}"
                log.error("%s", error, exc_info=True)
                errors.append(error)
        self.plugin_errors.extend(errors)
        return errors

    def match(self, service: str, node: str, namespace: str | None) -> Analyser | None:
        """Return the first analyser matching the node, or None (pass-through)."""
        for analyser in self.analysers:
            if analyser.matches(service, node, namespace):
                return analyser
        return None

    def parse(self, parser: str, payload: Element) -> dict[str, Any] | None:
        """Run a parser on a payload; None (logged) if it fails, so caching goes on."""
        try:
            return self._parsers[parser](payload)
        except Exception:
            log.warning("pubsub parser %r failed on a payload", parser, exc_info=True)
            return None

    def _check(self, analyser: Analyser, others: Iterable[Analyser], where: str = "") -> None:
        prefix = f"{where}: " if where else ""
        if analyser.parser is not None and analyser.parser not in self._parsers:
            known = ", ".join(sorted(self._parsers)) or "none"
            raise ValueError(f"{prefix}unknown pubsub parser {analyser.parser!r} (known: {known})")
        if any(existing.name == analyser.name for existing in others):
            raise ValueError(f"{prefix}duplicate pubsub analyser name {analyser.name!r}")
