"""`make demo`: a throwaway Prosody and Herald on embedded SQLite, until Ctrl-C.

Everything lives in .demo/ (deleted and recreated on each run).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.harness.ports import free_port
from tests.harness.prosody import ComponentSpec, Prosody

ROOT = Path(__file__).resolve().parents[2] / ".demo"
USERS = {"alice": "alice", "bob": "bob"}

CONFIG = """\
[server]
host = "127.0.0.1"
port = {component_port}

[database]
url = "sqlite+aiosqlite:///{root}/herald.db"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[multicast]
jid = "multicast.localhost"
secret = "demo-multicast"
local_domains = ["localhost"]
sender_mode = "trusted"

[pubsub]
jid = "pubsub.localhost"
secret = "demo-pubsub"
upstream = "pubsub-origin.localhost"

[[pubsub.rules]]
node = "urn:xmpp:microblog:0*"
sync = true
parser = "atom"
"""


def main() -> int:
    """Start Prosody, then Herald in the foreground; stop both on Ctrl-C."""
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir()
    prosody = Prosody(
        root=ROOT / "prosody",
        components=[
            ComponentSpec(
                "multicast.localhost", "demo-multicast", ["validate_from_addresses = false"]
            ),
            ComponentSpec("pubsub.localhost", "demo-pubsub"),
        ],
        users=USERS,
        pubsub_component="pubsub-origin.localhost",
        pubsub_admins=["pubsub.localhost"],
    )
    prosody.start()
    metrics_port = free_port()
    config = ROOT / "herald.toml"
    config.write_text(
        CONFIG.format(component_port=prosody.component_port, root=ROOT, metrics_port=metrics_port)
    )
    print(
        f"""
Herald demo
  XMPP clients: connect to 127.0.0.1:{prosody.c2s_port} (plaintext, no TLS) as
                alice@localhost / alice  or  bob@localhost / bob
  multicast:    multicast.localhost   pubsub proxy: pubsub.localhost
                (proxying Prosody's own pubsub at pubsub-origin.localhost)
  metrics:      http://127.0.0.1:{metrics_port}/metrics
  health:       http://127.0.0.1:{metrics_port}/healthz
  files:        {ROOT}  (config herald.toml, SQLite herald.db, prosody/prosody.log)
Press Ctrl-C to stop.
""",
        flush=True,
    )
    herald = subprocess.Popen([sys.executable, "-m", "component.cli", "run", "-c", str(config)])
    try:
        return herald.wait()
    except KeyboardInterrupt:
        herald.send_signal(signal.SIGINT)
        return herald.wait(10)
    finally:
        prosody.stop()


if __name__ == "__main__":
    sys.exit(main())
