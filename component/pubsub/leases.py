"""Who holds a node's sync lease, and whether that holder is gone.

A lease names its holder as ``host:pid:tag``, the tag being new for every run. A
lease left by a process that no longer runs (killed during a sync) must not keep the
node from being synced for the rest of the lease: on the same host, a holder whose
pid is dead, or whose pid is ours under another tag (an earlier run that had our pid,
as a container's pid 1 always does), is taken over at once. Holders on other hosts
cannot be checked; their leases run out.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Holder:
    """A lease holder: the host and process it ran in, and its run's tag."""

    host: str
    pid: int
    tag: str

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.tag}"

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        """The holder a lease names; None when it is not in Herald's form."""
        host, sep, rest = text.rpartition(":")
        host, sep2, pid = host.rpartition(":")
        if not (sep and sep2 and host and pid.isdigit()):
            return None
        return cls(host, int(pid), rest)


def this_process() -> Holder:
    """A holder name for this run of this process."""
    return Holder(socket.gethostname(), os.getpid(), uuid.uuid4().hex[:8])


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (as far as we may know)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def abandoned_by(me: Holder, alive: Callable[[int], bool] = pid_alive) -> Callable[[str], bool]:
    """A test for lease holders that are gone, as seen from `me` (pure but for `alive`)."""

    def abandoned(text: str) -> bool:
        holder = Holder.parse(text)
        if holder is None or holder.host != me.host or holder == me:
            return False
        if holder.pid == me.pid:
            return True  # an earlier run with our pid
        return not alive(holder.pid)

    return abandoned
