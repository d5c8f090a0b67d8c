"""Built-in payload parsers: item XML to a JSON-able dict stored beside the raw XML."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from xml.etree.ElementTree import Element

from component.pubsub.parsers.atom import parse_atom

BUILTIN_PARSERS: Mapping[str, Callable[[Element], dict[str, Any]]] = {"atom": parse_atom}

__all__ = ["BUILTIN_PARSERS", "parse_atom"]
