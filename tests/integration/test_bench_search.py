"""bench/pubsub_search.py still runs end to end on both databases (a tiny node; the
figures are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import missing
from tests.harness.prosody import Prosody

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_the_search_benchmark_runs_and_prints_its_figures(
    tmp_path: Path, postgres_url: str
) -> None:
    if not Prosody.available():
        missing("Prosody")
    args = ["--items", "300", "--queries", "5", "--warmup", "1", "--baseline", "1", "--settle", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.pubsub_search", *args, "--root", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    print(done.stdout[-1500:])
    assert done.returncode == 0, done.stderr[-3000:]
    for figure in ("herald fulltext", "server alone", "client parsed", "p50 speed-up"):
        assert figure in done.stdout
    report = done.stdout.rpartition("cached items")[2]
    for db in ("sqlite", "postgresql"):
        assert f"\n  {db}\n" in report
    assert report.count("index size") == 2
