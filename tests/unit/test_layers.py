"""Dependencies point down: storage/ knows nothing of the services above it."""

from __future__ import annotations

import ast
from pathlib import Path

import component

STORAGE = Path(component.__file__).parent / "storage"


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_storage_imports_neither_pubsub_nor_multicast_nor_slixmpp() -> None:
    offenders = {
        f"{path.name}: {module}"
        for path in STORAGE.glob("*.py")
        for module in imported_modules(path)
        if module.startswith(("component.pubsub", "component.multicast", "slixmpp"))
    }
    assert not offenders
