"""`herald cache ...` as an operator runs it, on SQLite and PostgreSQL: output for people
and JSON for scripts, filters, confirmation, exit codes (0 ok, 2 config, 1 runtime)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from component.storage import cache_admin_repo as admin_repo
from component.storage import migrate, pubsub_item_reads, pubsub_item_writes, pubsub_nodes
from component.storage.engine import create_engine, session_factory
from component.storage.records import COMPLETED, ERROR, ItemInput
from tests.harness.ports import free_port

pytestmark = pytest.mark.integration

ORIGIN, OTHER = "pubsub-origin.localhost", "pubsub.other.example"
NOW = datetime.now(UTC)


async def herald(config: Path, *args: str, stdin: str = "") -> tuple[int, str, str]:
    """Run `herald ARGS -c config`; its exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "component.cli",
        *args,
        "-c",
        str(config),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def populate(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    """Four nodes on two services, in three states; returns node ids by name."""
    ids = {}
    async with sessions.begin() as s:
        for service, name, requested in (
            (ORIGIN, "blog-1", NOW),
            (ORIGIN, "blog-2", NOW - timedelta(days=10)),
            (ORIGIN, "weather", NOW - timedelta(hours=1)),
            (OTHER, "news", NOW - timedelta(days=30)),
        ):
            node = await pubsub_nodes.ensure_node(s, service, name, analyser="r", now=requested)
            ids[name] = node.id
        await pubsub_item_writes.upsert_items(
            s, ids["blog-1"], [ItemInput(f"i{n}", f"<e>é{n}</e>") for n in range(3)], NOW
        )
        await pubsub_item_writes.upsert_items(
            s, ids["blog-2"], [ItemInput("only", "<e>x</e>")], NOW
        )
        for name in ("blog-1", "blog-2"):
            await pubsub_nodes.set_node_state(
                s, ids[name], now=NOW, sync_state=COMPLETED, shareable=True, last_synced=NOW
            )
        await pubsub_nodes.set_node_state(
            s,
            ids["weather"],
            now=NOW,
            sync_state=ERROR,
            sync_attempts=2,
            next_sync_at=NOW + timedelta(hours=1),
            last_error="remote-server-timeout",
        )
    return ids


@pytest.fixture
async def cache_db(
    db_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Path, async_sessionmaker[AsyncSession], dict[str, int]]]:
    """A migrated, populated database and a configuration file pointing at it."""
    engine = create_engine(db_url)
    await migrate.upgrade(engine)
    sessions = session_factory(engine)
    ids = await populate(sessions)
    config = tmp_path / "herald.toml"
    config.write_text(f'[database]\nurl = "{db_url}"\n')
    yield config, sessions, ids
    await engine.dispose()


async def node_names(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    async with sessions() as s:
        return [x.node.name for x in await admin_repo.node_summaries(s)]


async def test_stats_nodes_and_show(cache_db: Any) -> None:
    config, _, _ = cache_db
    code, out, err = await herald(config, "cache", "stats", "--json")
    assert code == 0, err
    stats = json.loads(out)
    assert stats["nodes"] == {
        "total": 4,
        "no-sync": 1,
        "in-progress": 0,
        "completed": 2,
        "error": 1,
    }
    assert stats["items"] == 4
    # bytes of UTF-8: "é" is two
    assert stats["bytes"] == 3 * len("<e>é0</e>".encode()) + len(b"<e>x</e>")
    assert [(s["service"], s["nodes"]["total"], s["items"]) for s in stats["services"]] == [
        (ORIGIN, 3, 4),
        (OTHER, 1, 0),
    ]

    code, out, _ = await herald(config, "cache", "stats")
    assert code == 0
    print(out)
    assert out.splitlines()[0].split() == [
        "SERVICE", "NODES", "NO-SYNC", "IN-PROGRESS", "COMPLETED", "ERROR", "ITEMS", "SIZE"
    ]  # fmt: skip
    assert out.splitlines()[-1].split()[:7] == ["(all)", "4", "1", "0", "2", "1", "4"]

    code, out, _ = await herald(
        config, "cache", "nodes", "--service", ORIGIN, "--state", "completed", "--json"
    )
    assert code == 0
    listed = json.loads(out)["nodes"]
    assert [(n["node"], n["state"], n["items"]) for n in listed] == [
        ("blog-1", "completed", 3),
        ("blog-2", "completed", 1),
    ]
    assert set(listed[0]) >= {"last_synced", "last_requested", "last_error", "bytes"}

    code, out, _ = await herald(config, "cache", "show", ORIGIN, "weather", "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["state"] == "error"
    assert shown["failed_attempts"] == 2
    assert shown["last_error"] == "remote-server-timeout"
    assert shown["next_retry"] is not None
    assert shown["oldest_item"] is None

    code, out, _ = await herald(config, "cache", "show", ORIGIN, "blog-1")
    assert code == 0
    print(out)
    assert "last sync:" in out
    assert "3 (" in out

    code, _, err = await herald(config, "cache", "show", ORIGIN, "nope")
    assert code == 1
    assert "no node 'nope'" in err


async def test_sync_logs_a_request_and_makes_a_failed_node_due(cache_db: Any) -> None:
    config, sessions, ids = cache_db
    code, out, err = await herald(config, "cache", "sync", ORIGIN, "weather", "--json")
    assert code == 0, err
    assert json.loads(out) == {"requested": "resync", "service": ORIGIN, "node": "weather"}
    async with sessions() as s:
        logged = await admin_repo.requests_after(s, 0)
        record = await pubsub_nodes.get_node_by_id(s, ids["weather"])
    assert [(r.action, r.service, r.node, r.node_id) for r in logged] == [
        ("resync", ORIGIN, "weather", ids["weather"])
    ]
    assert record is not None
    assert record.next_sync_at is not None
    assert record.next_sync_at <= datetime.now(UTC)  # retried by upkeep even without a watcher

    code, _, err = await herald(config, "cache", "sync", OTHER, "missing")
    assert code == 1
    assert "no node 'missing'" in err


async def test_purge_by_glob_service_and_idleness(cache_db: Any) -> None:
    config, sessions, ids = cache_db
    code, out, _ = await herald(
        config, "cache", "purge", "--node", "blog-*", "--idle-for", "7d", "--dry-run", "--json"
    )
    assert code == 0
    dry = json.loads(out)
    assert (dry["dry_run"], dry["nodes"], dry["items"]) == (True, 1, 1)
    assert [n["node"] for n in dry["purged"]] == ["blog-2"]
    assert await node_names(sessions) == ["blog-1", "blog-2", "weather", "news"]

    code, out, _ = await herald(config, "cache", "purge", "--node", "blog-*", "--idle-for", "7d")
    assert code == 0
    print(out)
    assert out.strip().endswith("purged 1 nodes, 1 items")
    assert await node_names(sessions) == ["blog-1", "weather", "news"]
    async with sessions() as s:
        assert await pubsub_item_reads.count_items(s) == 3  # blog-2's item went with it
        logged = await admin_repo.requests_after(s, 0)
    assert [(r.action, r.node, r.node_id) for r in logged] == [("purged", "blog-2", ids["blog-2"])]

    code, out, _ = await herald(config, "cache", "purge", "--service", OTHER, "--json")
    assert code == 0
    assert json.loads(out)["nodes"] == 1
    assert await node_names(sessions) == ["blog-1", "weather"]

    for bad in ([], ["--idle-for", "soon"], ["--idle-for", "0s"]):
        code, _, err = await herald(config, "cache", "purge", *bad)
        print(f"purge {bad}: exit {code}: {err.strip()}")
        assert code == 2
    assert await node_names(sessions) == ["blog-1", "weather"]


async def test_reset_asks_first(cache_db: Any) -> None:
    config, sessions, _ = cache_db
    code, out, err = await herald(config, "cache", "reset", stdin="n\n")
    assert code == 1
    assert "Drop all 4 cached nodes and 4 items? [y/N]" in err
    assert out == ""
    assert len(await node_names(sessions)) == 4

    code, out, err = await herald(config, "cache", "reset", "--yes", "--json")
    assert code == 0, err
    assert json.loads(out) == {"nodes": 4, "items": 4}
    assert await node_names(sessions) == []
    async with sessions() as s:
        assert await pubsub_item_reads.count_items(s) == 0
        assert [r.action for r in await admin_repo.requests_after(s, 0)] == ["reset"]


async def test_exit_codes(tmp_path: Path) -> None:
    """Bad configuration: 2. Database missing, unreachable or not migrated: 1."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[database]\nurl = "mysql://x@y/z"\n')
    code, _, err = await herald(bad, "cache", "stats")
    print(f"bad config: exit {code}: {err.strip()}")
    assert code == 2
    assert "database.url" in err

    missing = tmp_path / "missing.toml"
    missing.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/none.db"\n')
    code, _, err = await herald(missing, "cache", "stats")
    print(f"missing SQLite file: exit {code}: {err.strip()}")
    assert code == 1
    assert not (tmp_path / "none.db").exists()  # not created by looking

    down = tmp_path / "down.toml"
    down.write_text(
        f'[database]\nurl = "postgresql+psycopg://herald:s3cret@127.0.0.1:{free_port()}/h"\n'
    )
    code, _, err = await herald(down, "cache", "nodes")
    print(f"unreachable PostgreSQL: exit {code}: {err.strip()}")
    assert code == 1
    assert "cannot reach database" in err
    assert "s3cret" not in err
    assert "Traceback" not in err

    old = tmp_path / "old.toml"
    old.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/old.db"\n')
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/old.db")
    await migrate.upgrade(engine, "0003")
    await engine.dispose()
    code, _, err = await herald(old, "cache", "stats")
    print(f"database at 0003: exit {code}: {err.strip()}")
    assert code == 1
    assert "herald migrate" in err
