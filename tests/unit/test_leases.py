"""Lease holders: who is gone, as seen from this process (pure)."""

from __future__ import annotations

import pytest

from component.pubsub.leases import Holder, abandoned_by, pid_alive, this_process

ME = Holder("box", 100, "aaaa1111")


def alive_only(*pids: int):  # type: ignore[no-untyped-def]
    return lambda pid: pid in pids


@pytest.mark.parametrize(
    ("holder", "gone"),
    [
        ("box:100:aaaa1111", False),  # this very run
        ("box:100:bbbb2222", True),  # an earlier run that had our pid (a container's pid 1)
        ("box:200:cccc3333", False),  # another live process here
        ("box:300:dddd4444", True),  # a dead one here
        ("other:300:dddd4444", False),  # another host: cannot tell, wait for the lease
        ("host.with:colons:300:dddd4444", False),
        ("other-process", False),  # not Herald's form
        ("box::x", False),
        ("", False),
    ],
)
def test_abandoned(holder: str, gone: bool) -> None:
    assert abandoned_by(ME, alive_only(100, 200))(holder) is gone


def test_holder_round_trips() -> None:
    me = this_process()
    assert Holder.parse(str(me)) == me
    assert Holder.parse("a.b:c:12:tag") == Holder("a.b:c", 12, "tag")


def test_pid_alive_sees_this_process_and_not_a_reaped_one() -> None:
    import os
    import subprocess
    import sys

    assert pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid)
