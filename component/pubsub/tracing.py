"""Timestamps of the steps between a notification's arrival and a fresh answer.

For finding where staleness goes (bench/pubsub_staleness.py --trace): each step
logs one DEBUG line on the ``herald.trace`` logger, ``<step> <monotonic time> <node>
<detail>``. The time is time.perf_counter(), the system's monotonic clock on Linux,
so it lines up with a benchmark's own clock in another process. Off (one level
check per step) unless that logger is at DEBUG: the log level debug, or the
environment variable HERALD_TRACE=1 for this logger alone.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("herald.trace")
if os.environ.get("HERALD_TRACE") == "1":
    log.setLevel(logging.DEBUG)


def on() -> bool:
    """Whether steps are being logged (callers skip building details when not)."""
    return log.isEnabledFor(logging.DEBUG)


def step(name: str, node: str, detail: str = "") -> None:
    """Log that a step happened now for the node."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s %.6f %s %s", name, time.perf_counter(), node, detail)
