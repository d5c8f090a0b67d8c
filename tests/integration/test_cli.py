"""The `herald` command as an operator runs it: run, migrate, SIGTERM, an installed wheel."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

from component.storage.migrate import head_revision
from tests.harness.herald import settings_for, spawn, toml_for
from tests.harness.ports import free_port
from tests.harness.prosody import Prosody

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def wait_healthy(port: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def test_run_then_sigterm_exits_0_within_5s(prosody: Prosody, tmp_path: Path) -> None:
    metrics_port = free_port()
    settings = settings_for(
        prosody,
        f"sqlite+aiosqlite:///{tmp_path}/h.db",
        metrics={"listen": f"127.0.0.1:{metrics_port}"},
    )
    config = tmp_path / "herald.toml"
    config.write_text(toml_for(settings))
    proc = spawn(config, "run")
    try:
        assert wait_healthy(metrics_port), proc.stderr.read() if proc.poll() is not None else ""
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    _, err = proc.communicate()
    assert code == 0, err
    assert elapsed < 5, f"took {elapsed:.1f}s to exit"
    assert "shutting down" in err
    for secret in ("multicast-secret", "pubsub-secret"):
        assert secret not in err


def test_run_fails_with_exit_1_when_metrics_port_is_taken(prosody: Prosody, tmp_path: Path) -> None:
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        settings = settings_for(
            prosody, f"sqlite+aiosqlite:///{tmp_path}/h.db", metrics={"listen": f"127.0.0.1:{port}"}
        )
        config = tmp_path / "herald.toml"
        config.write_text(toml_for(settings))
        proc = spawn(config, "run")
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert f"metrics.listen '127.0.0.1:{port}'" in err
    assert "Traceback" not in err


def test_config_error_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "herald.toml"
    config.write_text('[multicast]\nmax_recipients = "fifty"\n')
    for command in ("run", "migrate", "check-config"):
        proc = spawn(config, command)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 2, command
        assert "max_recipients" in err


def test_wheel_ships_migrations(tmp_path: Path) -> None:
    """Build the wheel, install it in a fresh venv outside the repo, migrate a new SQLite."""
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(dist.glob("herald-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    target = next((venv / "lib").glob("python3*/site-packages"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # The dependencies come from the test venv, appended *after* the fresh
    # site-packages; .pth files there (our editable install) are not processed.
    (target / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "herald.toml").write_text('[database]\nurl = "sqlite+aiosqlite:///state/herald.db"\n')
    (work / "state").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    python = venv / "bin" / "python"
    where = subprocess.run(
        [str(python), "-c", "import component.storage.migrate as m; print(m.migrations_path())"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert where.startswith(str(target)), where
    proc = subprocess.run(
        [str(venv / "bin" / "herald"), "migrate", "-c", "herald.toml"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(work / "state" / "herald.db") as db:
        (version,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
    assert version == head_revision()
