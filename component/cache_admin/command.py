"""`herald cache stats|nodes|show|sync|purge|reset -c FILE`: the cache in the configured
database, whether or not Herald runs. Tables for people, ``--json`` for scripts.

Exit codes as for every `herald` command: 0 ok, 2 configuration or usage error,
1 runtime failure (database unreachable or not migrated, no such node, reset declined).
The work is in component/cache_admin/runner.py, imported only when a cache command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from component.config import Settings
from component.storage.records import SYNC_STATES


def add_parser(commands: Any) -> None:
    """Add `cache` and its subcommands to the `herald` parser's subparsers."""
    cache = commands.add_parser(
        "cache",
        help="inspect and manage the pubsub cache in the configured database",
        description="Inspect and manage the pubsub cache in the configured database. "
        "A running Herald picks the changes up within seconds.",
    )
    sub = cache.add_subparsers(dest="cache_command", required=True, metavar="SUBCOMMAND")

    def leaf(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name, help=help_text, description=help_text
        )
        parser.add_argument(
            "-c", "--config", required=True, metavar="FILE", help="the TOML configuration file"
        )
        parser.add_argument("--json", action="store_true", help="print JSON, for scripts")
        return parser

    leaf("stats", "nodes by state, items and bytes, per service")
    nodes = leaf("nodes", "list the cached nodes")
    nodes.add_argument("--service", metavar="JID", help="only the nodes of this service")
    nodes.add_argument("--state", choices=SYNC_STATES, help="only the nodes in this sync state")
    show = leaf("show", "one node: state, counts, last sync, last request, errors")
    show.add_argument("service", metavar="SERVICE")
    show.add_argument("node", metavar="NODE")
    sync = leaf("sync", "have a running Herald fetch the node again")
    sync.add_argument("service", metavar="SERVICE")
    sync.add_argument("node", metavar="NODE")
    purge = leaf("purge", "drop nodes and their items from the cache")
    purge.add_argument("--service", metavar="JID", help="only nodes of this service")
    purge.add_argument("--node", metavar="GLOB", help="only nodes whose name matches the glob")
    purge.add_argument(
        "--idle-for",
        metavar="DURATION",
        help="only nodes not requested for this long (90s, 15m, 12h, 7d, 2w)",
    )
    purge.add_argument("--dry-run", action="store_true", help="list what would go, drop nothing")
    reset = leaf("reset", "drop every node and item (asks for confirmation)")
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Carry out `herald cache ...`; returns the exit code."""
    from component.cache_admin import runner

    return runner.run(args, settings)
