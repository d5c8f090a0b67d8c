"""A real ejabberd (Debian's 23.01) on loopback ports, configured in a temporary directory.

The recipe is the one in shared/reference/servers.md: ejabberdctl runs the node as
the `ejabberd` user, so the directory is handed to that user; the Erlang node gets a
unique name and talks to epmd on loopback only.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.ports import free_port, wait_listening


@dataclass
class Ejabberd:
    """One throwaway ejabberd: config, spool and logs under `root`.

    Every component gets a listener of its own (`port_of(jid)`): ejabberd 23.01 routes
    *every* host of a listener to whichever component authenticates on it, so two
    components sharing a listener receive each other's stanzas. Trusted components'
    listeners have ``check_from: false``; checked ones keep the default check, for
    components that must prove they never send as someone else.
    """

    root: Path
    domain: str = "localhost"
    extra_hosts: list[str] = field(default_factory=list)
    trusted_components: dict[str, str] = field(default_factory=dict)  # jid -> secret
    checked_components: dict[str, str] = field(default_factory=dict)
    message_privileged: list[str] = field(default_factory=list)  # XEP-0356 message grant
    presence_privileged: list[str] = field(default_factory=list)  # presence: managed_entity
    pubsub_host: str | None = None  # mod_pubsub's host for the main domain
    remote_multicast: dict[str, int] = field(default_factory=dict)  # host -> message limit
    users: dict[str, str] = field(default_factory=dict)
    c2s_port: int = field(default_factory=free_port)
    ports: dict[str, int] = field(default_factory=dict)  # component jid -> its listener
    node: str = field(default_factory=lambda: f"herald{uuid.uuid4().hex[:8]}@localhost")
    process: subprocess.Popen[bytes] | None = None
    name: str = "ejabberd"

    #: whether the server grants components XEP-0356 IQ permissions (Prosody's
    #: mod_privilege does; ejabberd 23.01 has only message/roster/presence)
    grants_iq_privileges: bool = False

    def __post_init__(self) -> None:
        for jid in [*self.trusted_components, *self.checked_components]:
            self.ports.setdefault(jid, free_port())

    def port_of(self, jid: str) -> int:
        """The component listener for jid."""
        return self.ports[jid]

    @staticmethod
    def available() -> bool:
        """Whether ejabberd is installed."""
        return shutil.which("ejabberdctl") is not None

    @property
    def config_path(self) -> Path:
        return self.root / "ejabberd.yml"

    def _ctl(self, *args: str) -> list[str]:
        r = self.root
        return [
            "ejabberdctl",
            "--config",
            str(r / "ejabberd.yml"),
            "--ctl-config",
            str(r / "ejabberdctl.cfg"),
            "--spool",
            str(r / "spool"),
            "--logs",
            str(r / "logs"),
            "--node",
            self.node,
            *args,
        ]

    @staticmethod
    def _hosts_yaml(components: dict[str, str]) -> str:
        return "{" + ", ".join(f'"{j}": {{password: "{s}"}}' for j, s in components.items()) + "}"

    def _config(self) -> str:
        hosts = ", ".join([self.domain, *self.extra_hosts])
        lines = [
            "loglevel: info",
            f"hosts: [{hosts}]",
            "auth_method: internal",
            "auth_password_format: plain",
            "listen:",
            f'  - {{port: {self.c2s_port}, ip: "127.0.0.1", module: ejabberd_c2s, '
            "starttls: false, starttls_required: false}",
        ]
        for components, check in (
            (self.trusted_components, "check_from: false, "),
            (self.checked_components, ""),
        ):
            for jid, secret in components.items():
                lines.append(
                    f'  - {{port: {self.ports[jid]}, ip: "127.0.0.1", module: ejabberd_service, '
                    f"{check}hosts: {self._hosts_yaml({jid: secret})}}}"
                )
        privileged = ", ".join(f'"{j}"' for j in self.message_privileged) or '"none.invalid"'
        presence = ", ".join(f'"{j}"' for j in self.presence_privileged) or '"none.invalid"'
        lines += [
            "acl:",
            '  local: {user_regexp: ""}',
            f"  herald_privileged: {{server: [{privileged}]}}",
            f"  herald_presence: {{server: [{presence}]}}",
            "access_rules:",
            "  local: {allow: local}",
            "  c2s: {allow: all}",
            "  pubsub_createnode: {allow: all}",
            "  herald_privileged: {allow: herald_privileged}",
            "  herald_presence: {allow: herald_presence}",
            "modules:",
            "  mod_disco: {}",
            "  mod_roster: {}",
            "  mod_ping: {}",
            "  mod_caps: {}",
            "  mod_pubsub:",
            '    plugins: ["flat", "pep"]',
            "    access_createnode: pubsub_createnode",
            "    max_items_node: 10000",
            # The suite creates hundreds of nodes on one server; ejabberd cuts a
            # disco#items listing at 100 by default, so a test's node could be left out.
            "    max_nodes_discoitems: infinity",
        ]
        if self.pubsub_host:
            lines.append(f'    host: "{self.pubsub_host.replace(self.domain, "@HOST@", 1)}"')
        lines += [
            "  mod_privilege:",
            "    message: {outgoing: herald_privileged}",
            "    presence: {managed_entity: herald_presence}",
        ]
        if self.remote_multicast:
            lines.append("append_host_config:")
            for host, limit in self.remote_multicast.items():
                lines += [
                    f"  {host}:",
                    "    modules:",
                    f'      mod_multicast: {{host: "multicast.{host}", limits: '
                    f"{{local: {{message: {limit}}}, remote: {{message: {limit}}}}}}}",
                ]
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        """Write the config, owned by the ejabberd user as ejabberdctl requires."""
        for sub in ("spool", "logs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._config())
        (self.root / "ejabberdctl.cfg").write_text(
            f"ERLANG_NODE={self.node}\nERL_EPMD_ADDRESS=127.0.0.1\n"
            f"INET_DIST_INTERFACE=127.0.0.1\nEJABBERD_PID_PATH={self.root}/ejabberd.pid\n"
        )
        subprocess.run(["chown", "-R", "ejabberd:", str(self.root)], check=True)
        # The ejabberd user must be able to reach the directory.
        for parent in [self.root, *self.root.parents]:
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o011)

    def start(self, timeout: float = 30.0) -> None:
        """Start the node in the foreground, wait for its ports, register users."""
        if not self.config_path.exists():
            self.write()
        self.process = subprocess.Popen(
            self._ctl("foreground"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "HOME": str(self.root)},
        )
        for port in [self.c2s_port, *self.ports.values()]:
            if not wait_listening(port, timeout):
                self.stop()
                raise RuntimeError(f"ejabberd did not listen on {port}; see {self.root}/logs")
        self._register_users()

    def _register_users(self) -> None:
        pending = []
        for user, password in self.users.items():
            name, _, host = user.partition("@")
            pending.append(
                subprocess.Popen(
                    self._ctl("register", name, host or self.domain, password),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
            )
        for proc in pending:
            out, _ = proc.communicate(timeout=60)
            if proc.returncode != 0 and b"already registered" not in out:
                raise RuntimeError(f"ejabberdctl register failed: {out.decode()}")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the node (ejabberdctl stop), then make sure its processes are gone."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        subprocess.run(self._ctl("stop"), capture_output=True, timeout=30)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        # ejabberdctl runs beam as the ejabberd user in its own process tree.
        subprocess.run(
            ["pkill", "-KILL", "-f", f"-sname {self.node}|-name {self.node}"], capture_output=True
        )

    def restart(self) -> None:
        """Stop and start again on the same ports (users and data kept)."""
        self.stop()
        time.sleep(0.2)
        self.start()

    def log(self) -> str:
        """ejabberd's log so far, for failure messages."""
        path = self.root / "logs" / "ejabberd.log"
        return path.read_text(errors="replace") if path.exists() else ""
