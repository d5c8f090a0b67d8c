"""Operations: systemd readiness, the server snippets, and the monitoring files.

- READY=1 reaches $NOTIFY_SOCKET only once the database is migrated and *both*
  component streams are up; STOPPING=1 when Herald stops. In-process, and as the real
  `herald run` in a sandbox like the systemd unit's (W^X memory, umask 0077, state
  directory as working directory, secrets from the environment).
- config/prosody.cfg.lua passes `prosodyctl check config`, and a Prosody running it
  accepts both components, grants the privileges, and lets the multicast component
  send as a user (trusted mode) while still refusing that to the pubsub component.
- config/ejabberd.yml, config/prometheus.yml and config/herald-alerts.yml have the
  structure they need; promtool checks them where it is installed.
- Every PromQL expression in the Grafana dashboard and the alert rules names only
  metrics that Herald's live exporter serves.

PyYAML is not a dependency. The YAML files here are written in a plain block style
that `yaml_values` below reads (mappings, "-" sequences, quoted and plain scalars,
"|" blocks); where PyYAML happens to be importable, a test checks that this reader
and PyYAML agree on all three files.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from slixmpp import JID, ComponentXMPP
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from component import sdnotify
from component.app import Herald
from component.config import load_settings
from component.storage import migrate
from tests.conftest import (
    IN_CI,
    MULTICAST_JID,
    MULTICAST_SECRET,
    PROXY_JID,
    PROXY_SECRET,
    missing,
)
from tests.harness.client import TestClient
from tests.harness.herald import settings_for, toml_for
from tests.harness.prosody import MODULES_DIR, ComponentSpec, Prosody

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
PROSODY_SNIPPET = CONFIG / "prosody.cfg.lua"
EJABBERD_SNIPPET = CONFIG / "ejabberd.yml"
PROMETHEUS_CONFIG = CONFIG / "prometheus.yml"
ALERT_RULES = CONFIG / "herald-alerts.yml"
DASHBOARD = CONFIG / "grafana-dashboard.json"
EXAMPLE_CONFIG = CONFIG / "herald.example.toml"

PUBSUB_NS = "http://jabber.org/protocol/pubsub"
PRIVILEGE_NS = "urn:xmpp:privilege:2"


# -- helpers -------------------------------------------------------------------------


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A stand-in for systemd's notification socket: bound, non-blocking."""
    path = tmp_path / "notify"
    if len(os.fsencode(path)) >= 108:  # sun_path limit
        path = Path(f"/tmp/herald-notify-{uuid.uuid4().hex[:12]}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        try:
            yield sock, str(path)
        finally:
            path.unlink(missing_ok=True)


def schema_revision(db: Path) -> str | None:
    """The Alembic revision stored in an SQLite database, None before migration."""
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError:
            return None
    return str(row[0]) if row else None


# -- READY=1 / STOPPING=1, in-process --------------------------------------------------


@dataclass
class Sent:
    """One sdnotify.notify() call and Herald's state at that very moment."""

    state: str
    connected: dict[str, bool]
    revision: str | None


@pytest.fixture
def multicast_only_prosody(tmp_path: Path) -> Iterator[Prosody]:
    """A Prosody that knows the multicast component but not (yet) the pubsub one."""
    if not Prosody.available():
        missing("Prosody")
    server = Prosody(
        root=tmp_path / "prosody", components=[ComponentSpec(MULTICAST_JID, MULTICAST_SECRET)]
    )
    server.start()
    yield server
    server.stop()


@pytest.mark.integration
async def test_ready_only_once_migrated_and_both_services_connected(
    multicast_only_prosody: Prosody,
    notify_socket: tuple[socket.socket, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prosody = multicast_only_prosody
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    db = tmp_path / "herald.db"
    herald = Herald(settings_for(prosody, f"sqlite+aiosqlite:///{db}"))

    # Record Herald's state when it notifies (exact), and read what really arrives.
    sent: list[Sent] = []
    real_notify = sdnotify.notify

    def recording_notify(state: str) -> bool:
        sent.append(
            Sent(
                state,
                {s.service_name: s.connected_event.is_set() for s in herald.services},
                schema_revision(db),
            )
        )
        return real_notify(state)

    monkeypatch.setattr(sdnotify, "notify", recording_notify)
    received: list[list[str]] = []

    async def receive() -> None:
        loop = asyncio.get_running_loop()
        while True:
            received.append((await loop.sock_recv(sock, 4096)).decode().split("\n"))

    receiver = asyncio.create_task(receive())
    try:
        try:
            await herald.start()
            services = {s.service_name: s for s in herald.services}
            assert set(services) == {"multicast", "pubsub"}
            assert schema_revision(db) == migrate.head_revision()

            # One of two services up: Prosody refuses the pubsub stream (unknown host).
            await asyncio.wait_for(services["multicast"].connected_event.wait(), 10)
            await asyncio.sleep(1.5)
            assert not services["pubsub"].connected_event.is_set()
            assert sent == [], "notified before every service was connected"
            assert received == []

            # Declare the pubsub component; after the restart both streams come up.
            prosody.components.append(ComponentSpec(PROXY_JID, PROXY_SECRET))
            await asyncio.to_thread(prosody.write)
            await asyncio.to_thread(prosody.restart)
            await asyncio.wait_for(herald.wait_connected(), 20)
            await until(lambda: bool(received), 5, "READY=1 on the socket")

            assert len(sent) == 1
            ready = sent[0]
            assert "READY=1" in ready.state.split("\n")
            assert ready.connected == {"multicast": True, "pubsub": True}
            assert ready.revision == migrate.head_revision()
            assert "READY=1" in received[0]
        finally:
            await herald.stop()
        await until(lambda: len(received) >= 2, 5, "STOPPING=1 on the socket")
    finally:
        receiver.cancel()
    assert received[1] == ["STOPPING=1"]
    assert [s.state for s in sent] == [ready.state, "STOPPING=1"]


# -- `herald run` in a sandbox like the unit's ------------------------------------------

# Applies what the kernel can emulate of the unit before running the real CLI:
# MemoryDenyWriteExecute (prctl PR_SET_MDWE, Linux >= 6.3, the same W^X rule
# systemd enforces with seccomp) and UMask=0077.
LAUNCHER = """
import ctypes, os, sys
if sys.argv[1] == "--mdwe":
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit("launcher: PR_SET_MDWE failed")
    if libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) != PR_MDWE_REFUSE_EXEC_GAIN:
        sys.exit("launcher: W^X not in force")
os.umask(0o077)
from component.cli import main
sys.exit(main(sys.argv[2:]))
"""


def kernel_has_mdwe() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(66, 0, 0, 0, 0)) >= 0  # PR_GET_MDWE: -1/EINVAL before Linux 6.3


def test_the_mdwe_emulation_is_real() -> None:
    """Control for the next test: under the launcher, W+X memory is really refused."""
    if not kernel_has_mdwe():
        pytest.skip("this kernel lacks PR_SET_MDWE (Linux >= 6.3)")
    probe = LAUNCHER.split("os.umask")[0] + (
        "import mmap\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "except PermissionError:\n"
        "    sys.exit(0)\n"
        "sys.exit('a writable and executable mapping was allowed')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "--mdwe"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.integration
def test_herald_run_in_a_sandbox_like_the_units(
    prosody: Prosody, notify_socket: tuple[socket.socket, str], tmp_path: Path
) -> None:
    sock, path = notify_socket
    sock.setblocking(True)
    state = tmp_path / "state"  # StateDirectory=herald, WorkingDirectory=/var/lib/herald
    state.mkdir(mode=0o700)
    # The file keeps placeholder secrets; the real ones come from the environment,
    # as from EnvironmentFile=/etc/herald/herald.env.
    settings = settings_for(
        prosody,
        "sqlite+aiosqlite:///herald.db",  # the default: relative to the working directory
        multicast={"secret": "change-me"},
        pubsub={"secret": "change-me"},
    )
    config = tmp_path / "herald.toml"
    config.write_text(toml_for(settings))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HERALD_")},
        "NOTIFY_SOCKET": path,
        "HERALD_MULTICAST__SECRET": MULTICAST_SECRET,
        "HERALD_PUBSUB__SECRET": PROXY_SECRET,
    }
    mdwe = kernel_has_mdwe()
    flag = "--mdwe" if mdwe else "--no-mdwe"
    log = tmp_path / "herald.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, flag, "run", "-c", str(config)],
            cwd=state,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        sock.settimeout(20)
        try:
            ready = sock.recv(4096).decode()
        except TimeoutError:
            raise AssertionError(f"no READY=1 in 20 s; log:\n{log.read_text()}") from None
        assert "READY=1" in ready.split("\n"), f"got {ready!r}; log:\n{log.read_text()}"
        metrics = settings.metrics.address()
        assert metrics is not None
        base = f"http://{metrics[0]}:{metrics[1]}"
        assert http_get(f"{base}/healthz") == (200, "ok\n")
        status, exposition = http_get(f"{base}/metrics")
        assert status == 200
        assert 'herald_component_connected{service="multicast"} 1.0' in exposition
        assert 'herald_component_connected{service="pubsub"} 1.0' in exposition
        assert "process_cpu_seconds_total " in exposition

        database = state / "herald.db"
        assert database.is_file(), sorted(p.name for p in state.iterdir())
        assert database.stat().st_mode & 0o777 == 0o600  # UMask=0077

        proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096) == b"STOPPING=1"
        assert proc.wait(15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    if not mdwe:
        pytest.skip(
            "all else passed; MemoryDenyWriteExecute was not emulated: "
            "this kernel lacks PR_SET_MDWE (Linux >= 6.3)"
        )


# -- the Prosody snippet ----------------------------------------------------------------


def snippet_components(text: str) -> dict[str, str]:
    """External components declared by the snippet: {jid: component_secret}."""
    found = re.findall(
        r'^Component "([^"]+)"\s*\n\s*component_secret = "([^"]*)"', text, flags=re.MULTILINE
    )
    return dict(found)


def internal_components(text: str) -> dict[str, str]:
    """Components served by a Prosody module: {jid: module}."""
    return dict(re.findall(r'^Component "([^"]+)" "([^"]+)"', text, flags=re.MULTILINE))


def prosody_config(root: Path, snippet: str, c2s_port: int, component_port: int) -> str:
    """A complete, runnable Prosody config: test-friendly globals, then the snippet."""
    assert snippet.count("component_ports = { 5347 }") == 1
    snippet = snippet.replace(
        "component_ports = { 5347 }", f"component_ports = {{ {component_port} }}"
    )
    head = f"""
run_as_root = true
pidfile = "{root}/prosody.pid"
data_path = "{root}/data"
log = {{ info = "{root}/prosody.log"; error = "{root}/prosody.err" }}
plugin_paths = {{ "{MODULES_DIR}" }}
certificates = "{root}/certs"
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s_port} }}
c2s_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{ }}; c2s_direct_tls_ports = {{ }}; s2s_direct_tls_ports = {{ }}
http_ports = {{ }}; https_ports = {{ }}
modules_enabled = {{ "disco"; "roster"; "saslauth"; "ping"; "register"; }}
modules_disabled = {{ "s2s"; "tls"; "limits"; "offline" }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
"""
    return head + "\n" + snippet


def check_config(root: Path, text: str) -> subprocess.CompletedProcess[str]:
    for sub in ("data", "certs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    path = root / "prosody.cfg.lua"
    path.write_text(text)
    return subprocess.run(
        ["prosodyctl", "--config", str(path), "check", "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(root)},
    )


def needs_prosody() -> None:
    if not Prosody.available():
        missing("Prosody")


def test_prosody_snippet_matches_the_example_configuration() -> None:
    text = PROSODY_SNIPPET.read_text()
    example = load_settings(EXAMPLE_CONFIG)
    assert set(snippet_components(text)) == {example.multicast.jid, example.pubsub.jid}
    assert internal_components(text) == {example.pubsub.upstream: "pubsub"}
    assert re.search(r"^component_interfaces = \{ \"127\.0\.0\.1\" \}", text, re.MULTILINE)
    assert re.search(r"^network_settings = \{ nagle = false \}", text, re.MULTILINE)
    # trusted mode on the multicast component only, with its warning
    multicast_block = text.split(f'Component "{example.multicast.jid}"')[1].split("Component ")[0]
    assert "validate_from_addresses = false" in multicast_block
    assert "trust" in multicast_block
    assert text.count("validate_from_addresses = false") == 1


@pytest.mark.integration
def test_prosody_snippet_passes_prosodyctl_check(tmp_path: Path) -> None:
    needs_prosody()
    root = tmp_path / "prosody"
    done = check_config(root, prosody_config(root, PROSODY_SNIPPET.read_text(), 5222, 5347))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All checks passed" in done.stdout


@pytest.mark.integration
def test_prosodyctl_check_would_catch_a_misplaced_option(tmp_path: Path) -> None:
    """Control: the check above can fail. A global option under the VirtualHost fails it."""
    needs_prosody()
    text = PROSODY_SNIPPET.read_text()
    assert text.count("network_settings = { nagle = false }\n") == 1
    broken = text.replace("network_settings = { nagle = false }\n", "").replace(
        'VirtualHost "example.org"\n',
        'VirtualHost "example.org"\nnetwork_settings = { nagle = false }\n',
    )
    root = tmp_path / "prosody"
    done = check_config(root, prosody_config(root, broken, 5222, 5347))
    assert done.returncode != 0
    assert "network_settings" in done.stdout


class RawComponent(ComponentXMPP):
    """A bare XEP-0114 component that records the privileges the server grants it."""

    def __init__(self, jid: str, secret: str, port: int) -> None:
        super().__init__(jid, secret, "127.0.0.1", port, fix_error_ns=True)  # type: ignore[no-untyped-call]
        self.online = asyncio.Event()
        self.offline = asyncio.Event()
        self.privileged = asyncio.Event()
        self.perms: dict[str, str] = {}
        self.iq_perms: dict[str, str] = {}
        self.add_event_handler("session_start", lambda _: self.online.set())
        self.add_event_handler("disconnected", lambda _: self.offline.set())
        # slixmpp's "message" event only fires for messages with a <body/>.
        self.register_handler(
            Callback(
                "privilege advertisement",
                MatchXPath(f"{{{self.default_ns}}}message/{{{PRIVILEGE_NS}}}privilege"),
                self._privilege,
            )
        )

    def _privilege(self, msg: Any) -> None:
        privilege = msg.xml.find(f"{{{PRIVILEGE_NS}}}privilege")
        for perm in privilege.iter(f"{{{PRIVILEGE_NS}}}perm"):
            if perm.get("access") == "iq":
                for ns in perm.iter(f"{{{PRIVILEGE_NS}}}namespace"):
                    self.iq_perms[ns.get("ns", "")] = ns.get("type", "")
            else:
                self.perms[perm.get("access", "")] = perm.get("type", "")
        self.privileged.set()


@pytest.fixture
async def snippet_prosody(tmp_path: Path) -> AsyncIterator[Prosody]:
    """A Prosody running the snippet, with users alice and bob on example.org."""
    needs_prosody()
    server = Prosody(root=tmp_path / "prosody", domain="example.org")
    text = prosody_config(
        server.root, PROSODY_SNIPPET.read_text(), server.c2s_port, server.component_port
    )
    done = await asyncio.to_thread(check_config, server.root, text)  # writes config_path
    assert done.returncode == 0, done.stdout
    for user in ("alice", "bob"):
        await asyncio.to_thread(
            subprocess.run,
            [
                "prosodyctl",
                "--config",
                str(server.config_path),
                "register",
                user,
                "example.org",
                user,
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
    await asyncio.to_thread(server.start)  # the config exists, so start() keeps it
    yield server
    await asyncio.to_thread(server.stop)


@pytest.mark.integration
async def test_prosody_running_the_snippet(snippet_prosody: Prosody) -> None:
    secrets = snippet_components(PROSODY_SNIPPET.read_text())
    multicast_jid, pubsub_jid = "multicast.example.org", "pubsub.example.org"
    multicast = RawComponent(multicast_jid, secrets[multicast_jid], snippet_prosody.component_port)
    pubsub = RawComponent(pubsub_jid, secrets[pubsub_jid], snippet_prosody.component_port)
    bob = TestClient("bob@example.org/test", "bob")
    try:
        for component in (multicast, pubsub):
            component.connect()
            await asyncio.wait_for(component.online.wait(), 10)
            await asyncio.wait_for(component.privileged.wait(), 5)
        # XEP-0356 privileges as the snippet grants them
        # one route to send as users: trusted mode, so no message privilege as well
        assert multicast.perms == {"presence": "managed_entity"}
        assert multicast.iq_perms == {}
        # presence: for presence-based delivery of the subscriptions it holds
        assert pubsub.perms == {"presence": "managed_entity"}
        assert pubsub.iq_perms == {
            PUBSUB_NS: "both",
            f"{PUBSUB_NS}#owner": "both",
            "http://jabber.org/protocol/disco#items": "get",
        }

        # Trusted mode: the multicast component may send as alice, and bob gets it.
        await bob.start(snippet_prosody.c2s_port)
        multicast.send_message(
            mto=JID("bob@example.org"), mfrom=JID("alice@example.org"), mbody="sent as alice"
        )
        msg = await asyncio.wait_for(bob.messages.get(), 5)
        assert (str(msg["from"]), msg["body"]) == ("alice@example.org", "sent as alice")
        await asyncio.sleep(0.3)
        assert not multicast.offline.is_set()

        # Control: without validate_from_addresses = false the same closes the stream.
        pubsub.send_message(
            mto=JID("bob@example.org"), mfrom=JID("alice@example.org"), mbody="spoof"
        )
        await asyncio.wait_for(pubsub.offline.wait(), 5)
        assert bob.messages.empty()
    finally:
        await bob.stop()
        for component in (multicast, pubsub):
            if component.transport is not None:
                await component.disconnect(wait=1)


# -- a reader for the block-style YAML these files use ----------------------------------

Path_ = tuple[str, ...]
_KEY = re.compile(
    r"""^("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s"'#:-][^:#]*?|-[^\s][^:#]*?)\s*:(?:\s+(.*))?$"""
)
_BLOCK = ("|", "|-", "|+", ">", ">-", ">+")


def _scalar(text: str) -> str:
    text = text.strip()
    if text.startswith('"'):
        end = re.match(r'"((?:[^"\\]|\\.)*)"', text)
        if end is None:
            raise ValueError(f"unterminated string: {text}")
        return str(json.loads(f'"{end.group(1)}"'))
    if text.startswith("'"):
        end = re.match(r"'((?:[^']|'')*)'", text)
        if end is None:
            raise ValueError(f"unterminated string: {text}")
        return end.group(1).replace("''", "'")
    return re.split(r"\s+#", text, maxsplit=1)[0].strip()


def yaml_values(text: str) -> dict[Path_, list[str]]:
    """Scalars by path ("-" for a sequence item), in document order.

    The subset: block mappings and sequences, plain/quoted scalars, '|' and '>' block
    scalars (kept line for line, like '|'). No flow style, anchors or multi-documents.
    """
    result: dict[Path_, list[str]] = defaultdict(list)
    stack: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        raw = lines[i]
        i += 1
        content = raw.strip()
        if not content or content.startswith("#") or content == "---":
            continue
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise ValueError(f"line {i}: tab in indentation")
        indent = len(raw) - len(raw.lstrip(" "))
        while content == "-" or content.startswith("- "):
            while stack and (stack[-1][0] > indent or stack[-1] == (indent, "-")):
                stack.pop()
            stack.append((indent, "-"))
            rest = content[1:].lstrip(" ")
            indent += len(content) - len(rest)
            content = rest
        if not content:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = tuple(key for _, key in stack)
        match = _KEY.match(content)
        if match is None:
            result[path].append(_scalar(content))
            continue
        key, value = _scalar(match.group(1)), (match.group(2) or "").strip()
        if value.split(" #")[0].strip() in _BLOCK:
            block: list[str] = []
            while i < len(lines) and (
                not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip(" ")) > indent
            ):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            margin = min(len(b) - len(b.lstrip(" ")) for b in block if b.strip())
            result[(*path, key)].append("\n".join(b[margin:] for b in block) + "\n")
        elif value and not value.startswith("#"):
            if value[0] in "[{&*!":
                raise ValueError(f"line {i}: flow style or tags are outside the subset")
            result[(*path, key)].append(_scalar(value))
        else:
            stack.append((indent, key))
    return dict(result)


def flatten(data: Any, path: Path_ = ()) -> dict[Path_, list[str]]:
    """PyYAML's result in yaml_values' shape (for the cross-check)."""
    out: dict[Path_, list[str]] = defaultdict(list)

    def walk(node: Any, where: Path_) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, (*where, str(key)))
        elif isinstance(node, list):
            for child in node:
                walk(child, (*where, "-"))
        elif isinstance(node, bool):
            out[where].append("true" if node else "false")
        else:
            out[where].append(str(node))

    walk(data, path)
    return dict(out)


def test_yaml_reader_reads_the_subset() -> None:
    text = """
# comment
a:
  b: 1          # trailing comment
  "c.d": "x: y"
  list:
    - one
    - 'two'
  items:
    - name: n1
      value: |
        line 1
          line 2
    -
      name: n2
e: false
"""
    assert yaml_values(text) == {
        ("a", "b"): ["1"],
        ("a", "c.d"): ["x: y"],
        ("a", "list", "-"): ["one", "two"],
        ("a", "items", "-", "name"): ["n1", "n2"],
        ("a", "items", "-", "value"): ["line 1\n  line 2\n"],
        ("e",): ["false"],
    }
    with pytest.raises(ValueError, match="flow style"):
        yaml_values("a: [1, 2]\n")


@pytest.mark.parametrize("path", [EJABBERD_SNIPPET, PROMETHEUS_CONFIG, ALERT_RULES])
def test_yaml_reader_agrees_with_pyyaml(path: Path) -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is optional; the reader is tested above")
    assert yaml_values(path.read_text()) == flatten(yaml.safe_load(path.read_text()))


# -- the ejabberd snippet -------------------------------------------------------------


def test_ejabberd_snippet_structure() -> None:
    text = EJABBERD_SNIPPET.read_text()
    values = yaml_values(text)
    example = load_settings(EXAMPLE_CONFIG)
    listener = ("listen", "-")
    # one listener per component (ejabberd routes every host of a listener to each
    # component on it); only the multicast one is trusted
    assert values[(*listener, "module")] == ["ejabberd_service"] * 2
    assert values[(*listener, "ip")] == ["127.0.0.1"] * 2
    assert values[(*listener, "port")] == [str(example.server.port), "5348"]
    assert values[(*listener, "check_from")] == ["false"]
    for jid in (example.multicast.jid, example.pubsub.jid):
        assert values[(*listener, "hosts", jid, "password")] == ["change-me"]
    blocks = re.split(r"^  -\s*$", text.split("\nacl:")[0], flags=re.MULTILINE)[1:]
    assert len(blocks) == 2
    assert example.multicast.jid in blocks[0]
    assert "check_from: false" in blocks[0]
    assert example.pubsub.jid in blocks[1]
    assert "check_from" not in blocks[1]

    privilege = ("modules", "mod_privilege")
    rule = values[(*privilege, "presence", "managed_entity")][0]
    # the message permission is the other route to send as users: documented, not in
    # force beside check_from: false
    assert (*privilege, "message", "outgoing") not in values
    assert re.search(r"^\s*#\s*message:", text, re.MULTILINE)
    assert values[(*privilege, "roster", "get")] == [rule]
    # the access rule allows exactly Herald's two components
    acl = values[("access_rules", rule, "allow")][0]
    assert sorted(values[("acl", acl, "server", "-")]) == sorted(
        [example.multicast.jid, example.pubsub.jid]
    )
    # no IQ permission in force (ejabberd 23.01 rejects it), but documented
    assert not any("iq" in path for path in values)
    assert re.search(r"^\s*#\s*iq:", text, re.MULTILINE)
    assert re.search(rf'^\s*#\s*"{re.escape(PUBSUB_NS)}":', text, re.MULTILINE)
    assert "urn:xmpp:privilege:1" in text
    assert "24.10" in text


def test_the_ejabberd_harness_follows_the_snippet(tmp_path: Path) -> None:
    """The integration suites run ejabberd the way config/ejabberd.yml says to."""
    from tests.conftest import MULTICAST_JID, PROXY_JID, standard_ejabberd

    text = standard_ejabberd(tmp_path)._config()
    listeners = [line for line in text.splitlines() if "ejabberd_service" in line]
    assert len(listeners) >= 2
    for line in listeners:
        assert line.count("password") == 1  # one component per listener
        trusted = "check_from: false" in line
        assert trusted == (f'"{MULTICAST_JID}"' in line), line
    assert any(f'"{PROXY_JID}"' in line for line in listeners)
    assert "mod_privilege:" in text
    assert "message: {outgoing: herald_privileged}" in text


# -- Prometheus: scrape config and alert rules -------------------------------------------


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        # tests/bootstrap.sh installs it: in CI its absence is a failure
        if IN_CI:
            pytest.fail("promtool is not installed (Debian package: prometheus)")
        pytest.skip("promtool is not installed (Debian package: prometheus)")
    return path


def test_prometheus_scrapes_herald_where_the_example_config_listens() -> None:
    values = yaml_values(PROMETHEUS_CONFIG.read_text())
    job = ("scrape_configs", "-")
    assert values[(*job, "job_name")] == ["herald"]
    example = load_settings(EXAMPLE_CONFIG)
    assert values[(*job, "static_configs", "-", "targets", "-")] == [example.metrics.listen]
    assert values[("rule_files", "-")] == [ALERT_RULES.name]


def test_promtool_accepts_the_config_and_rules() -> None:
    tool = promtool()
    for command in (
        ["check", "config", str(PROMETHEUS_CONFIG)],
        ["check", "rules", str(ALERT_RULES)],
    ):
        done = subprocess.run([tool, *command], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def alert_rules() -> list[tuple[str, str]]:
    """(alert name, expr) for every rule in herald-alerts.yml."""
    values = yaml_values(ALERT_RULES.read_text())
    rule = ("groups", "-", "rules", "-")
    names, exprs = values[(*rule, "alert")], values[(*rule, "expr")]
    assert len(names) == len(exprs), "every rule needs one alert: and one expr:"
    return list(zip(names, exprs, strict=True))


def test_alert_rules_cover_the_issue() -> None:
    rules = dict(alert_rules())
    values = yaml_values(ALERT_RULES.read_text())
    rule = ("groups", "-", "rules", "-")
    assert len(values[(*rule, "labels", "severity")]) == len(rules)
    assert len(values[(*rule, "annotations", "summary")]) == len(rules)
    used = {name: metric_names(expr) for name, expr in rules.items()}
    assert "up" in used["HeraldDown"]
    assert re.search(
        r"herald_component_connected\{[^}]*\}\s*==\s*0", rules["HeraldComponentDisconnected"]
    )
    expected = {
        "herald_component_reconnects_total",
        "herald_pubsub_requests_total",
        "herald_multicast_stanzas_total",
        "herald_pubsub_sync_runs_total",
        "herald_pubsub_upstream_request_seconds_bucket",
    }
    assert expected <= set().union(*used.values())
    assert 'result="error"' in rules["HeraldPubsubErrorRatioHigh"]
    assert 'result="rejected"' in rules["HeraldMulticastRejectionRatioHigh"]
    assert 'result="failed"' in rules["HeraldPubsubSyncFailing"]
    assert "histogram_quantile(0.99" in rules["HeraldUpstreamSlow"]


# -- the Grafana dashboard ---------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def promql_in(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """(location, expr) for every targets[].expr anywhere in the JSON, recursively."""
    if isinstance(node, dict):
        for key, child in node.items():
            here = f"{where}.{key}"
            if key == "targets" and isinstance(child, list):
                for index, target in enumerate(child):
                    if isinstance(target, dict) and isinstance(target.get("expr"), str):
                        yield f"{here}[{index}]", target["expr"]
            yield from promql_in(child, here)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from promql_in(child, f"{where}[{index}]")


def variable_queries(data: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The selector inside each label_values(SELECTOR, label) template query."""
    for variable in data["templating"]["list"]:
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        match = re.fullmatch(r"\s*label_values\((.+),\s*\w+\)\s*", text)
        if match:
            yield f"templating.{variable['name']}", match.group(1)


def test_dashboard_structure() -> None:
    data = dashboard()
    assert data["schemaVersion"] == 39
    assert data["uid"]
    assert data["title"]
    assert [i["name"] for i in data["__inputs"]] == ["DS_PROMETHEUS"]
    assert data["__inputs"][0]["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"

    panels = [p for p in all_panels(data["panels"]) if p["type"] != "row"]
    ids = [p["id"] for p in all_panels(data["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]

    # the panels the issue asks for, each on the metric it names
    by_title = {
        p["title"]: " ".join(f"{t['expr']} {t.get('legendFormat', '')}" for t in p["targets"])
        for p in panels
    }
    wanted = {
        "Cache hit ratio": ("herald_pubsub_requests_total", 'result="hit"'),
        "Upstream latency": ("herald_pubsub_upstream_request_seconds_bucket", "0.99"),
        "Fan-out by route": ("herald_multicast_recipients_total", "route"),
        "Stanzas by result": ("herald_multicast_stanzas_total", "result"),
        "Errors": ("herald_pubsub_requests_total", 'result="error"'),
        "Nodes by sync state": ("herald_pubsub_cached_nodes", "sync_state"),
        "Cached items": ("herald_pubsub_cached_items", ""),
        "Connection state per service": ("herald_component_connected", "service"),
        "Reconnects": ("herald_component_reconnects_total", ""),
        "Remote disco cache hit ratio": ("herald_multicast_remote_disco_lookups_total", "hit"),
        "Database query latency": ("herald_db_query_seconds_bucket", ""),
        "CPU": ("process_cpu_seconds_total", ""),
        "Memory and file descriptors": ("process_resident_memory_bytes", ""),
    }
    for title, (metric, detail) in wanted.items():
        assert title in by_title, f"missing panel {title!r}"
        assert metric in metric_names(by_title[title]), title
        assert detail in by_title[title], title
    assert "0.5" in by_title["Upstream latency"]


# -- PromQL: which metric names an expression uses ------------------------------------

AGGREGATIONS = {
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
}
FUNCTIONS = {
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count_over_time",
    "cos",
    "cosh",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_stddev",
    "histogram_stdvar",
    "histogram_sum",
    "holt_winters",
    "double_exponential_smoothing",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "mad_over_time",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_by_label",
    "sort_by_label_desc",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = LABEL_LIST_KEYWORDS | {"bool", "and", "or", "unless", "offset", "atan2", "inf", "nan"}
_TOKEN = re.compile(r"\$\{?\w+\}?|\.?\d[\w.]*|[A-Za-z_:][\w:]*|\S")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: every identifier that is not a function,
    aggregation, keyword, label name (in {}, by(), on() ...), string or duration."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    tokens = _TOKEN.findall(text)
    names: set[str] = set()
    i = 0
    while i < len(tokens):
        token, following = tokens[i], tokens[i + 1] if i + 1 < len(tokens) else ""
        i += 1
        if not re.fullmatch(r"[A-Za-z_:][\w:]*", token):
            continue  # operator, number, duration, Grafana $variable
        if token.lower() in LABEL_LIST_KEYWORDS:
            if following == "(":
                depth = 0
                while i < len(tokens):
                    depth += {"(": 1, ")": -1}.get(tokens[i], 0)
                    i += 1
                    if depth == 0:
                        break
            continue
        if token.lower() in KEYWORDS:
            continue
        if token in AGGREGATIONS and following.lower() in ("by", "without"):
            continue  # sum by (...) (...)
        if following == "(":
            if token not in AGGREGATIONS and token not in FUNCTIONS:
                raise ValueError(f"unknown PromQL function {token}() in: {expr}")
            continue
        names.add(token)
    return names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up == 0", {"up"}),
        ('sum by (le, route) (rate(herald_x_bucket{a="b", c=~"d|e"}[5m]))', {"herald_x_bucket"}),
        ("histogram_quantile(0.99, sum(rate(a_bucket[$__rate_interval])) by (le))", {"a_bucket"}),
        ("a / on (instance) group_left (version) b offset 1h", {"a", "b"}),
        ('label_replace(x, "dst", "$1", "src", "(.*)") > bool 1e3', {"x"}),
        ("max_over_time(rate(m_total[5m])[1h:1m]) and ignoring (job) n", {"m_total", "n"}),
        ('count(foo{job="x by (y)"}) without (z)', {"foo"}),
    ],
)
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_metric_name_extraction_rejects_unknown_functions() -> None:
    with pytest.raises(ValueError, match="rat"):
        metric_names("rat(herald_x_total[5m])")


def exposed_names(exposition: str) -> set[str]:
    """Sample names a Prometheus text exposition serves.

    A labelled metric with no label values yet (e.g. herald_pubsub_requests_total
    before the first request) has only its # TYPE line; it still counts, as the
    names its samples will have: NAME for counters (the TYPE line already carries
    _total), gauges and untyped; NAME_bucket/_sum/_count for histograms;
    NAME/_sum/_count for summaries.
    """
    suffixes = {
        "histogram": ("_bucket", "_sum", "_count"),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
        "summary": ("", "_sum", "_count"),
    }
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.update(name + suffix for suffix in suffixes.get(kind, ("",)))
        elif line and not line.startswith("#"):
            match = re.match(r"[A-Za-z_:][\w:]*", line)
            assert match, line
            names.add(match.group())
    return names


@pytest.fixture
async def live_exposition(prosody: Prosody, tmp_path: Path) -> str:
    herald = Herald(settings_for(prosody, f"sqlite+aiosqlite:///{tmp_path}/herald.db"))
    try:
        await herald.start()
        await asyncio.wait_for(herald.wait_connected(), 10)
        assert herald.metrics_server is not None
        url = f"http://127.0.0.1:{herald.metrics_server.port}/metrics"
        status, body = await asyncio.to_thread(http_get, url)
    finally:
        await herald.stop()
    assert status == 200
    return body


@pytest.mark.integration
def test_dashboard_and_alerts_use_only_exposed_metrics(live_exposition: str) -> None:
    exposed = exposed_names(live_exposition)
    assert "herald_component_connected" in exposed  # the scrape is Herald's
    assert "herald_pubsub_upstream_request_seconds_bucket" in exposed

    data = dashboard()
    expressions = [(f"{DASHBOARD.name}{where}", expr) for where, expr in promql_in(data)]
    expressions += [(f"{DASHBOARD.name} {where}", sel) for where, sel in variable_queries(data)]
    panels_with_targets = [p for p in all_panels(data["panels"]) if p.get("targets")]
    assert len(expressions) >= sum(len(p["targets"]) for p in panels_with_targets) + 2
    rules = alert_rules()
    assert len(rules) == ALERT_RULES.read_text().count("- alert:")
    expressions += [(f"{ALERT_RULES.name} {name}", expr) for name, expr in rules]

    problems: list[str] = []
    for where, expr in expressions:
        names = metric_names(expr)
        if not names:
            problems.append(f"{where}: selects no metric at all: {expr!r}")
        for name in sorted(names):
            if name == "up":
                continue
            if not name.startswith(("herald_", "process_", "python_")):
                problems.append(f"{where}: {name} is not one of Herald's metrics")
            elif name not in exposed:
                problems.append(f"{where}: {name} is not exposed by Herald")
    assert problems == [], "\n".join(problems)
