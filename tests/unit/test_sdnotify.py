"""component.sdnotify against a stand-in for systemd: a unix datagram socket we bind."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from component import sdnotify


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """What systemd does for Type=notify: a SOCK_DGRAM socket named by $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    if len(os.fsencode(path)) >= 108:  # sun_path limit
        path = Path(f"/tmp/herald-notify-{uuid.uuid4().hex[:12]}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        try:
            yield sock, str(path)
        finally:
            path.unlink(missing_ok=True)


def test_ready_arrives_on_the_path_socket(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sdnotify.notify("READY=1") is True
    assert sock.recv(4096) == b"READY=1"


def test_multi_line_state_is_one_datagram(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sdnotify.notify("READY=1\nSTATUS=connected")
    assert sdnotify.notify("STOPPING=1")
    assert sock.recv(4096).decode().split("\n") == ["READY=1", "STATUS=connected"]
    assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_socket_address(monkeypatch: pytest.MonkeyPatch) -> None:
    # systemd may hand out "@name": an abstract socket, the @ standing for a NUL byte.
    name = f"herald-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("READY=1") is True
        assert sock.recv(4096) == b"READY=1"


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert sdnotify.notify("READY=1") is False


def test_unreachable_socket_is_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stale $NOTIFY_SOCKET (systemd gone, path removed) must not crash Herald.
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sdnotify.notify("READY=1") is False


async def test_ready_waits_for_every_stream_up_at_the_same_time() -> None:
    """A stream that drops while another is awaited (a server restart) is waited for
    again: each having been up once is not READY. Seen in CI: READY=1 sent while the
    multicast stream was down, because pubsub's came up after multicast's had
    dropped."""
    import asyncio
    from types import SimpleNamespace

    from component.app import Herald

    multicast = SimpleNamespace(connected_event=asyncio.Event())
    pubsub = SimpleNamespace(connected_event=asyncio.Event())
    herald = SimpleNamespace(services=[multicast, pubsub])
    multicast.connected_event.set()
    waiting = asyncio.create_task(Herald.wait_connected(herald))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    multicast.connected_event.clear()  # the server restarts
    pubsub.connected_event.set()  # pubsub comes back first
    await asyncio.sleep(0.01)
    assert not waiting.done(), "ready while the multicast stream was down"
    multicast.connected_event.set()
    await asyncio.wait_for(waiting, 1)
