"""`make demo`'s tour runs to the end and says what happened, so the quick start cannot rot."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, missing
from tests.harness.prosody import Prosody

pytestmark = pytest.mark.integration


def test_the_demo_tour_shows_a_miss_a_hit_and_a_fan_out(tmp_path: Path) -> None:
    if not Prosody.available():
        missing("prosody")
    demo = subprocess.Popen(
        [sys.executable, "-m", "tests.harness.demo", "--tour-only", "--root", str(tmp_path)],
        cwd=ROOT.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = demo.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        demo.send_signal(signal.SIGTERM)  # the demo stops its Prosody and Herald on SIGTERM
        out, _ = demo.communicate(timeout=20)
        pytest.fail(f"the tour took over 40 s:\n{out}")
    assert demo.returncode == 0, out
    assert "Tour OK" in out
    # TLS for real clients: a port, STARTTLS, the certificate, and the tour's own TLS login
    port = re.search(r"XMPP clients: 127\.0\.0\.1 port (\d+), STARTTLS", out)
    assert port, out
    assert f"-j 127.0.0.1:{port.group(1)} -n" in out  # the command-line client's example
    assert f"TLS cert:     {tmp_path}/prosody/certs/localhost.crt" in out
    assert (tmp_path / "prosody" / "certs" / "localhost.crt").is_file()
    assert "bob logged in over STARTTLS" in out
    # the miss, then the hit, each with the metric that moved
    assert "a cache miss" in out
    assert "herald_pubsub_requests_total{kind=items,result=miss} +1" in out
    assert "a cache hit" in out
    assert "herald_pubsub_requests_total{kind=items,result=hit} +1" in out
    assert out.index("result=miss} +1") < out.index("result=hit} +1")
    # one message fanned out to two recipients
    assert "2 copies, one to bob and one to carol" in out
    assert "herald_multicast_recipients_total{route=local} +2" in out
    # set up as the README says: Herald is no admin upstream
    config = (tmp_path / "prosody" / "prosody.cfg.lua").read_text()
    assert 'admins = { "alice@localhost" }' in config
    assert "privileged_entities" in config
