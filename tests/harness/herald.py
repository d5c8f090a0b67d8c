"""Herald settings and processes for the integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from component.config import Settings
from tests.harness.ejabberd import Ejabberd
from tests.harness.ports import free_port
from tests.harness.prosody import Prosody


def settings_for(prosody: Prosody | Ejabberd, db_url: str, **overrides: Any) -> Settings:
    """Settings that connect both services to the test server (Prosody or ejabberd)."""
    from tests.conftest import (
        MULTICAST_JID,
        MULTICAST_SECRET,
        PROXY_JID,
        PROXY_SECRET,
        UPSTREAM_JID,
    )

    data: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": prosody.port_of(MULTICAST_JID)},
        "database": {"url": db_url},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "multicast": {
            "jid": MULTICAST_JID,
            "secret": MULTICAST_SECRET,
            "local_domains": [prosody.domain],
        },
        "pubsub": {
            "jid": PROXY_JID,
            "secret": PROXY_SECRET,
            "upstream": UPSTREAM_JID,
        },
    }
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    for service in ("multicast", "pubsub"):
        # each component on its own listener where the server needs it (ejabberd)
        if data[service].get("enabled", True):
            data[service].setdefault("port", prosody.port_of(data[service]["jid"]))
    return Settings(**data)


def toml_for(settings: Settings) -> str:
    """A TOML file equivalent to settings, secrets included (for subprocess tests)."""
    from component.cli import render_toml
    from component.config import masked_view

    data = masked_view(settings)
    data["database"]["url"] = settings.database.url.get_secret_value()
    data["multicast"]["secret"] = settings.multicast.secret.get_secret_value()
    data["pubsub"]["secret"] = settings.pubsub.secret.get_secret_value()
    return render_toml(data)


def spawn(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`herald ARGS -c config` as a child process, logs captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "component.cli", *args, "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
