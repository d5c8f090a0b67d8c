"""Command line: herald run | migrate | check-config | cache ..., each with -c FILE;
herald --version."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

import component
from component.cache_admin import command as cache_command
from component.config import ConfigError, Settings, load_settings, masked_view

EXIT_OK, EXIT_RUNTIME, EXIT_CONFIG = 0, 1, 2

log = logging.getLogger("herald")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="herald",
        description="XEP-0033 multicast service and caching XEP-0060 pubsub proxy "
        "(an XMPP server component).",
    )
    parser.add_argument("--version", action="version", version=f"herald {component.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in (
        ("run", "migrate the database, connect the services and serve until SIGTERM"),
        ("migrate", "upgrade the database to the newest schema and exit"),
        ("check-config", "validate the file and print the effective settings, secrets masked"),
    ):
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument(
            "-c", "--config", required=True, metavar="FILE", help="the TOML configuration file"
        )
    cache_command.add_parser(sub)
    return parser


def _toml_value(value: Any) -> str:
    # JSON scalars and arrays of scalars are valid TOML as written.
    return json.dumps(value, ensure_ascii=False)


def render_toml(data: dict[str, Any]) -> str:
    """The effective settings as TOML (every value present, None omitted)."""
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        tables: list[tuple[str, list[dict[str, Any]]]] = []
        for key, value in values.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                tables.append((key, value))
            elif value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, rows in tables:
            for row in rows:
                lines.append("")
                lines.append(f"[[{section}.{key}]]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in row.items() if v is not None)
        lines.append("")
    return "\n".join(lines)


def _load(path: str) -> Settings:
    return load_settings(path)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `herald` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        settings = _load(args.config)
    except ConfigError as exc:
        print(f"herald: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    if args.command == "check-config":
        print(f"# {args.config}: valid")
        print(render_toml(masked_view(settings)), end="")
        return EXIT_OK
    if args.command == "cache":
        return cache_command.run(args, settings)

    from component import app, logs  # heavy imports only where needed

    logs.configure(settings.log.level, settings.log.format)
    try:
        if args.command == "migrate":
            revision = asyncio.run(app.migrate_only(settings))
            print(f"database {settings.database.masked()} is at revision {revision}")
            return EXIT_OK
        asyncio.run(app.serve(settings))
        return EXIT_OK
    except app.StartupError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:
        log.exception("fatal error: %s", exc)
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
