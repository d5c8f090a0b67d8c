"""Herald as a child process (`herald run`), for tests that measure its memory.

In-process, Herald's memory cannot be told apart from the test clients'; as a child
its resident set size is its own. Metrics are read over its HTTP exporter.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from component.config import Settings
from tests.harness.herald import toml_for


class HeraldProcess:
    """`python -m component.cli run -c FILE`, logging to a file under root."""

    def __init__(self, settings: Settings, root: Path) -> None:
        address = settings.metrics.address()
        assert address is not None, "the child's metrics exporter must be enabled"
        self.metrics_url = f"http://{address[0]}:{address[1]}"
        self.root = root
        self.config = root / "herald.toml"
        self.log_path = root / "herald.log"
        self.config.write_text(toml_for(settings))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "component.cli", "run", "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=os.environ.copy(),
            )

    async def wait_healthy(self, timeout: float = 20.0) -> None:
        """Until /healthz says ok (database up, every service connected)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"herald exited {self.process.returncode}:\n{self.log()}")
            status, _ = await asyncio.to_thread(self._get, "/healthz")
            if status == 200:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"herald not healthy after {timeout} s:\n{self.log()}")

    def _get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.metrics_url + path, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError:
            return 0, ""

    async def sample(self, name: str, labels: dict[str, str]) -> float:
        """One sample's value from /metrics (0 when absent)."""
        _, text = await asyncio.to_thread(self._get, "/metrics")
        for family in text_string_to_metric_families(text):
            for found in family.samples:
                if found.name == name and labels.items() <= found.labels.items():
                    return float(found.value)
        return 0.0

    def rss(self) -> int:
        """The child's resident set size, in bytes."""
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (a clean shutdown), SIGKILL after timeout; the exit code."""
        proc, self.process = self.process, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
