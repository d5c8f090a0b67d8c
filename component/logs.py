"""Logging set-up: readable lines by default, or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from component.xmpp.connection import install_log_redaction


class JsonFormatter(logging.Formatter):
    """One JSON object per record, for journald/Loki pipelines."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    """Route all logs to stderr (journald picks them up under systemd)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if level != "debug":
        # slixmpp is chatty at info about every connection detail we log ourselves.
        logging.getLogger("slixmpp").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
    install_log_redaction()
