"""A per-sender token bucket: the pure core of the multicast rate limit."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RateLimiter:
    """Each sender may send `burst` stanzas at once, refilled at `per_minute`.

    `per_minute` 0 disables the limit. Idle buckets are dropped so memory stays
    bounded by the number of recently active senders.
    """

    per_minute: float
    burst: int
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # tokens, at

    def allow(self, sender: str, now: float) -> bool:
        """Take one token for sender at monotonic time now; False when none is left."""
        if self.per_minute <= 0:
            return True
        rate = self.per_minute / 60.0
        tokens, at = self._buckets.get(sender, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * rate)
        if tokens < 1.0:
            self._buckets[sender] = (tokens, now)
            return False
        self._buckets[sender] = (tokens - 1.0, now)
        if len(self._buckets) > 10_000:
            self._forget_idle(now)
        return True

    def _forget_idle(self, now: float) -> None:
        full_after = self.burst / (self.per_minute / 60.0)
        self._buckets = {
            s: (t, at) for s, (t, at) in self._buckets.items() if now - at < full_after
        }


@dataclass
class SenderLimits:
    """Which bucket a sender draws from: its bare JID when it is one of our users,
    its domain otherwise.

    A local server authenticates its users, so a local bare JID is one person. A remote
    domain can mint bare JIDs at will (and remote senders may reach every local user),
    so one bucket per remote domain is the only key such a sender cannot multiply.
    """

    local: RateLimiter
    remote: RateLimiter
    local_domains: frozenset[str]

    def refusal(self, sender_bare: str, now: float) -> str | None:
        """None when the sender may go on; else the readable reason it may not."""
        domain = sender_bare.rpartition("@")[2].lower()
        if domain in self.local_domains:
            if self.local.allow(sender_bare.lower(), now):
                return None
            return "Too many multicast stanzas from you; wait a little and try again."
        if self.remote.allow(domain, now):
            return None
        return f"Too many multicast stanzas from {domain}; wait a little and try again."
