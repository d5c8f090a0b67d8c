"""Carrying out `herald cache ...` (see command.py for the command line itself)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from component.cache_admin import operations as ops
from component.cache_admin import render
from component.cache_admin.durations import parse_duration
from component.config import Settings
from component.storage import migrate
from component.storage.engine import create_engine, session_factory

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


class Failed(Exception):
    """The command cannot do what was asked; the message says why (exit 1)."""


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Carry out the parsed `herald cache ...` command; returns the exit code."""
    try:
        purge_filter = _purge_filter(args) if args.cache_command == "purge" else None
    except ValueError as exc:
        print(f"herald cache purge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        _check_sqlite_file(settings)
        output = asyncio.run(_run(args, settings, purge_filter))
    except Failed as exc:
        print(f"herald cache {args.cache_command}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    print(output)
    return EXIT_OK


def _check_sqlite_file(settings: Settings) -> None:
    # Opening a missing SQLite file would create an empty database.
    parsed = make_url(settings.database.url.get_secret_value())
    name = parsed.database
    on_disk = parsed.get_backend_name() == "sqlite" and name and name != ":memory:"
    if on_disk and not Path(str(name)).is_file():
        where = settings.database.masked()
        raise Failed(f"database {where}: no such file (has Herald ever run with it?)")


def _purge_filter(args: argparse.Namespace) -> ops.PurgeFilter:
    which = ops.PurgeFilter(
        service=args.service,
        node=args.node,
        idle_for=None if args.idle_for is None else parse_duration(args.idle_for),
    )
    if which.empty:
        raise ValueError(
            "say which nodes: --service, --node or --idle-for (`herald cache reset` drops all)"
        )
    return which


async def _run(
    args: argparse.Namespace, settings: Settings, purge_filter: ops.PurgeFilter | None
) -> str:
    url = settings.database.url.get_secret_value()
    where = settings.database.masked()
    engine = create_engine(url)
    try:
        try:
            revision = await migrate.current_revision(engine)
        except (OSError, SQLAlchemyError) as exc:
            raise Failed(f"cannot reach database {where}: {_reason(exc)}") from None
        head = migrate.head_revision()
        if revision != (head,):
            found = ", ".join(revision) or "no Herald schema"
            raise Failed(
                f"database {where} is at {found}, this Herald needs {head}: "
                "run `herald migrate -c FILE` first"
            )
        sessions = session_factory(engine)
        action = _ACTIONS[args.cache_command]
        try:
            return await action(sessions, args, purge_filter)
        except ops.NoSuchNode as exc:
            raise Failed(str(exc)) from None
        except (OSError, SQLAlchemyError) as exc:
            raise Failed(f"database {where}: {_reason(exc)}") from None
    finally:
        await engine.dispose()


def _reason(exc: BaseException) -> str:
    # The driver's own message, first line: SQLAlchemy appends SQL and a doc link.
    cause = getattr(exc, "orig", None) or exc
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]


def _now() -> datetime:
    return datetime.now(UTC)


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


async def _stats(sessions: ops.Sessions, args: argparse.Namespace, _: object) -> str:
    found = await ops.stats(sessions)
    return _dump(render.stats_json(found)) if args.json else render.stats_text(found)


async def _nodes(sessions: ops.Sessions, args: argparse.Namespace, _: object) -> str:
    found = await ops.nodes(sessions, service=args.service, sync_state=args.state)
    if args.json:
        return _dump({"nodes": [render.node_json(s) for s in found]})
    return render.nodes_text(found, _now())


async def _show(sessions: ops.Sessions, args: argparse.Namespace, _: object) -> str:
    detail = await ops.show(sessions, args.service, args.node)
    return _dump(render.detail_json(detail)) if args.json else render.detail_text(detail, _now())


async def _sync(sessions: ops.Sessions, args: argparse.Namespace, _: object) -> str:
    await ops.request_resync(sessions, args.service, args.node, _now())
    if args.json:
        return _dump({"requested": "resync", "service": args.service, "node": args.node})
    return (
        f"resync of {args.node!r} on {args.service} requested: a running Herald "
        "fetches it again within seconds"
    )


async def _purge(
    sessions: ops.Sessions, args: argparse.Namespace, which: ops.PurgeFilter | None
) -> str:
    assert which is not None
    found = await ops.purge(sessions, which, _now(), dry_run=args.dry_run)
    if args.json:
        return _dump(
            {
                "dry_run": args.dry_run,
                "nodes": len(found),
                "items": sum(s.items for s in found),
                "bytes": sum(s.bytes for s in found),
                "purged": [render.node_json(s) for s in found],
            }
        )
    return render.purged_text(found, args.dry_run)


async def _reset(sessions: ops.Sessions, args: argparse.Namespace, _: object) -> str:
    if not args.yes:
        nodes, items = await ops.totals(sessions)
        question = f"Drop all {nodes} cached nodes and {items} items? [y/N] "
        if not confirm(question, sys.stdin, sys.stderr):
            raise Failed("not confirmed; nothing dropped")
    nodes, items = await ops.reset(sessions, _now())
    if args.json:
        return _dump({"nodes": nodes, "items": items})
    return f"dropped {nodes} nodes and {items} items"


def confirm(question: str, answers: TextIO, prompt: TextIO) -> bool:
    """Ask on prompt (stderr, so that --json output stays clean); yes only for y/yes."""
    prompt.write(question)
    prompt.flush()
    return answers.readline().strip().lower() in ("y", "yes")


_ACTIONS: dict[
    str, Callable[[ops.Sessions, argparse.Namespace, ops.PurgeFilter | None], Awaitable[str]]
] = {
    "stats": _stats,
    "nodes": _nodes,
    "show": _show,
    "sync": _sync,
    "purge": _purge,
    "reset": _reset,
}
