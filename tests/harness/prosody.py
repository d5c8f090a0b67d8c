"""A real Prosody on loopback ports, configured in a temporary directory.

Used by the integration tests, the benchmarks and the local demo. Needs Debian's
`prosody` and `prosody-modules` packages (installed by the test command).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.ports import free_port, wait_listening

MODULES_DIR = "/usr/lib/prosody/modules"


class ProsodyUnavailable(RuntimeError):
    """Prosody is not installed here."""


@dataclass
class ComponentSpec:
    """An external component (XEP-0114) the server accepts."""

    jid: str
    secret: str
    options: list[str] = field(default_factory=list)  # raw Lua lines under Component


@dataclass
class Prosody:
    """One throwaway Prosody: config, data and logs under `root`."""

    root: Path
    domain: str = "localhost"
    components: list[ComponentSpec] = field(default_factory=list)
    users: dict[str, str] = field(default_factory=dict)
    extra_hosts: list[str] = field(default_factory=list)  # more VirtualHosts (other domains)
    pubsub_component: str | None = None  # Prosody's own pubsub, e.g. "pubsub.localhost"
    pubsub_admins: list[str] = field(default_factory=list)
    pubsub_options: list[str] = field(default_factory=list)  # raw Lua lines under it
    host_options: list[str] = field(default_factory=list)  # raw Lua lines in the main host
    c2s_port: int = field(default_factory=free_port)
    component_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    name: str = "prosody"
    #: (certificate, key) PEM files: enables mod_tls so c2s offers STARTTLS (still
    #: optional: c2s_require_encryption stays false). None: no TLS, as before.
    tls: tuple[Path, Path] | None = None

    def port_of(self, jid: str) -> int:
        """Prosody checks 'from' per component, so every component shares one port."""
        return self.component_port

    #: whether the server grants components XEP-0356 IQ permissions (Prosody's
    #: mod_privilege does; ejabberd 23.01 has only message/roster/presence)
    grants_iq_privileges: bool = True

    @staticmethod
    def available() -> bool:
        """Whether the prosody binaries are installed."""
        return shutil.which("prosody") is not None and shutil.which("prosodyctl") is not None

    @property
    def config_path(self) -> Path:
        return self.root / "prosody.cfg.lua"

    @property
    def log_path(self) -> Path:
        return self.root / "prosody.log"

    def _config(self) -> str:
        r = self.root
        tls_on, tls_off = ('"tls"; ', "") if self.tls else ("", '"tls"; ')
        lines = [
            "run_as_root = true",
            f'pidfile = "{r}/prosody.pid"',
            f'data_path = "{r}/data"',
            f'log = {{ info = "{r}/prosody.log"; error = "{r}/prosody.err" }}',
            f'plugin_paths = {{ "{MODULES_DIR}" }}',
            'interfaces = { "127.0.0.1" }',
            "network_settings = { nagle = false }",
            f"c2s_ports = {{ {self.c2s_port} }}",
            'c2s_interfaces = { "127.0.0.1" }',
            f"component_ports = {{ {self.component_port} }}",
            'component_interfaces = { "127.0.0.1" }',
            "s2s_ports = { }; c2s_direct_tls_ports = { }; s2s_direct_tls_ports = { }",
            "http_ports = { }; https_ports = { }",
            'modules_enabled = { "disco"; "roster"; "saslauth"; "ping"; "register"; '
            f'"version"; "privilege"; "pep"; {tls_on}}}',
            f'modules_disabled = {{ "s2s"; {tls_off}"limits"; "offline" }}',
            "c2s_require_encryption = false",
            "allow_unencrypted_plain_auth = true",
            "allow_registration = true",
            'authentication = "internal_plain"',
            'storage = "internal"',
            f'certificates = "{r}/certs"',
            "",
            f'VirtualHost "{self.domain}"',
            *(f"  {line}" for line in self.host_options),
        ]
        if self.tls:
            cert, key = self.tls
            lines.append(f'  ssl = {{ certificate = "{cert}"; key = "{key}" }}')
        for host in self.extra_hosts:
            lines.append(f'VirtualHost "{host}"')
        if self.pubsub_component:
            admins = "; ".join(f'"{a}"' for a in self.pubsub_admins)
            lines += [
                f'Component "{self.pubsub_component}" "pubsub"',
                "  pubsub_max_items = 10000",
                f"  admins = {{ {admins} }}",
                *(f"  {line}" for line in self.pubsub_options),
            ]
        for comp in self.components:
            lines.append(f'Component "{comp.jid}"')
            lines.append(f'  component_secret = "{comp.secret}"')
            lines.extend(f"  {line}" for line in comp.options)
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        """Write the config and register the users (offline, before start)."""
        if not self.available():
            raise ProsodyUnavailable("prosody is not installed (apt-get install prosody)")
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        (self.root / "certs").mkdir(exist_ok=True)
        self.config_path.write_text(self._config())
        for user, password in self.users.items():
            name, _, host = user.partition("@")
            subprocess.run(
                [
                    "prosodyctl",
                    "--config",
                    str(self.config_path),
                    "register",
                    name,
                    host or self.domain,
                    password,
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )

    def start(self, timeout: float = 15.0) -> None:
        """Start prosody in the foreground and wait for both ports."""
        if not self.config_path.exists():
            self.write()
        self.process = subprocess.Popen(
            ["prosody", "-F", "--config", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "HOME": str(self.root)},
        )
        for port in (self.c2s_port, self.component_port):
            if not wait_listening(port, timeout):
                self.stop()
                raise RuntimeError(f"prosody did not listen on {port}; see {self.log_path}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within timeout."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self) -> None:
        """Stop and start again on the same ports."""
        self.stop()
        time.sleep(0.1)
        self.start()

    def log(self) -> str:
        """Prosody's log so far, for failure messages."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
