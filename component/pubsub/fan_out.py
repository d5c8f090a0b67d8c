"""One upstream notification, delivered to every local subscriber of the node.

The copies are built by the pure core (component/pubsub/subscriptions.py: who gets
one, from which address, with which SubID headers) and written here, in batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from component import metrics
from component.pubsub import subscriptions as core
from component.storage.subscriptions_repo import LocalSubscription

WRITE_BATCH = 64  # notification copies per socket write


def fan_out(
    send: Callable[[str], None],
    subs: Iterable[LocalSubscription],
    inner: str,
    withheld: Callable[[LocalSubscription], bool] | None = None,
) -> int:
    """Send the event child `inner` (serialised in the pubsub#event namespace) to the
    subscribers, but those `withheld` says are not to get it (presence-based
    delivery, component/pubsub/presence_edge.py); the number of messages sent."""
    # Written in batches: one write per copy costs a syscall and, with Nagle off, a
    # packet each; one write for all would hold the first copy back until the
    # last is built, while the server could already be routing it.
    batch: list[str] = []
    sent = 0
    for delivery in core.deliveries(subs, withheld):
        batch.append(core.notification_text(delivery, inner))
        if len(batch) == WRITE_BATCH:
            send("".join(batch))
            sent += len(batch)
            batch.clear()
    if batch:
        send("".join(batch))
        sent += len(batch)
    metrics.PUBSUB_NOTIFICATIONS_FANNED_OUT.inc(sent)
    if sent > 1:
        # Upstream would have sent each local subscriber its own; it sent Herald one.
        metrics.PUBSUB_UPSTREAM_NOTIFICATIONS_SAVED.inc(sent - 1)
    return sent
