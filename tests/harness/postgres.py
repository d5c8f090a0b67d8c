"""A private PostgreSQL cluster on a loopback port, for tests that stop and start it.

The recipe is the one in shared/reference/servers.md ("Recommended private instance"):
initdb runs as the `postgres` user into a directory handed to that user, trust auth,
listening on 127.0.0.1 and a Unix socket inside the directory only.
"""

from __future__ import annotations

import glob
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.ports import free_port, wait_listening


def _binary(name: str) -> str | None:
    """The newest installed PostgreSQL's `name` (initdb, pg_ctl), or None."""
    found = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return found[-1] if found else None


@dataclass
class PrivatePostgres:
    """One throwaway cluster under `root`, owned by the postgres user."""

    root: Path
    port: int = field(default_factory=free_port)
    user: str = "postgres"
    # Extra server settings (name -> value), passed as -c at every start.
    settings: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def available() -> bool:
        """Whether initdb/pg_ctl and the postgres user exist, and we may switch to it."""
        if _binary("initdb") is None or _binary("pg_ctl") is None:
            return False
        if os.geteuid() != 0:
            return False
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return False
        return True

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "pg.log"

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of `database` on this cluster."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def _as_postgres(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}\n{self.log()}")

    def init(self) -> None:
        """initdb the cluster (trust auth, no locale)."""
        self.root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "-R", "postgres:", str(self.root)], check=True)
        # The postgres user must be able to reach the directory.
        for parent in [self.root, *self.root.parents]:
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o011)
        initdb = _binary("initdb")
        assert initdb is not None
        self._as_postgres(
            initdb,
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start the cluster and wait until it accepts connections."""
        if not (self.data / "PG_VERSION").exists():
            self.init()
        pg_ctl = _binary("pg_ctl")
        assert pg_ctl is not None
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
            "-c fsync=off -c full_page_writes=off"
        ) + "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._as_postgres(
            pg_ctl, "-D", str(self.data), "-l", str(self.log_path), "-w", "-o", options, "start"
        )
        if not wait_listening(self.port, timeout):
            raise RuntimeError(f"postgres did not listen on {self.port}\n{self.log()}")

    def stop(self, mode: str = "immediate") -> None:
        """pg_ctl stop -m MODE (immediate: as abrupt as a crash). Quiet if not running."""
        pg_ctl = _binary("pg_ctl")
        assert pg_ctl is not None
        command = [pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"]
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            capture_output=True,
            timeout=60,
        )

    def running(self) -> bool:
        """Whether the postmaster's pid file is there."""
        return (self.data / "postmaster.pid").exists()

    def log(self) -> str:
        """The server log so far, for failure messages."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
