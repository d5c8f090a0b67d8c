"""What nodes' metadata said moments ago: open or closed (pure; the caller passes
the time).

A miss on a node whose metadata said, within the last few seconds, that anyone may
read it is forwarded upstream as Herald itself: cheaper for the server than a
privileged IQ, and what Herald reads there is what any requester could read. The
window is the one cached nodes already have between re-verifications.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

NodeKey = tuple[str, str]  # (service, node)
Access = Literal["open", "closed", "missing"]


class OpenNodes:
    """A bounded memo of recent access checks: node -> (access, when checked)."""

    def __init__(self, ttl: float, limit: int = 10_000) -> None:
        self.ttl = ttl
        self.limit = limit
        self._seen: OrderedDict[NodeKey, tuple[Access, float]] = OrderedDict()

    def known(self, key: NodeKey, now: float) -> Access | None:
        """What a check within the ttl found; None when unknown or stale."""
        found = self._seen.get(key)
        if found is None:
            return None
        access, when = found
        if now - when >= self.ttl:
            del self._seen[key]
            return None
        return access

    def needs_refresh(self, key: NodeKey, now: float) -> bool:
        """Unknown, or past half its ttl: check again before it expires."""
        found = self._seen.get(key)
        return found is None or now - found[1] >= self.ttl / 2

    def note(self, key: NodeKey, access: Access, now: float) -> None:
        """Record a check's outcome. "missing" is not kept: a node may be created the
        next moment, and saying item-not-found is only right for a fresh check."""
        found = self._seen.get(key)
        if found is not None and found[1] > now:
            return  # an answer to a later question is already here
        if access == "missing":
            self._seen.pop(key, None)
            return
        self._seen[key] = (access, now)
        self._seen.move_to_end(key)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)

    def forget(self, key: NodeKey) -> None:
        """Drop what is known (the node's configuration changed, or it is gone)."""
        self._seen.pop(key, None)
