"""Capped, jittered exponential backoff for reconnecting to the XMPP server."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays of base * 2**n, capped, each drawn uniformly from [d/2, d].

    The jitter keeps several Herald processes (or services) from hammering a
    restarted server in lock-step; the cap bounds how long a restart goes unnoticed.
    """

    base: float = 0.5
    cap: float = 15.0
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one attempt."""
        ceiling = min(self.cap, self.base * 2**self.attempts)
        self.attempts += 1
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Forget past failures, after a successful connection."""
        self.attempts = 0
