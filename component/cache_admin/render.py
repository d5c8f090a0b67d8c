"""How `herald cache` prints what it found: JSON values for scripts, and plain text
tables for people (pure functions; the time of printing is passed in)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from component.cache_admin.durations import format_duration
from component.cache_admin.operations import NodeDetail
from component.storage.cache_admin_repo import NodeSummary, ServiceStats
from component.storage.records import SYNC_STATES

# --- JSON ----------------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    """An aware UTC time as ISO 8601 with a Z, or None."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _by_state(nodes: dict[str, int]) -> dict[str, int]:
    return {"total": sum(nodes.values()), **{s: nodes.get(s, 0) for s in SYNC_STATES}}


def stats_json(found: Sequence[ServiceStats]) -> dict[str, Any]:
    """The whole cache's totals, then each service's."""
    overall = dict.fromkeys(SYNC_STATES, 0)
    for service in found:
        for state, count in service.nodes.items():
            overall[state] = overall.get(state, 0) + count
    return {
        "nodes": _by_state(overall),
        "items": sum(s.items for s in found),
        "bytes": sum(s.bytes for s in found),
        "services": [
            {
                "service": s.service,
                "nodes": _by_state(s.nodes),
                "items": s.items,
                "bytes": s.bytes,
            }
            for s in found
        ],
    }


def node_json(summary: NodeSummary) -> dict[str, Any]:
    """Everything known about a node, keys as the README documents them."""
    n = summary.node
    return {
        "service": n.service,
        "node": n.name,
        "state": n.sync_state,
        "state_since": iso(n.sync_state_updated),
        "items": summary.items,
        "bytes": summary.bytes,
        "last_synced": iso(n.last_synced),
        "last_requested": iso(n.last_requested),
        "failed_attempts": n.sync_attempts,
        "next_retry": iso(n.next_sync_at),
        "last_error": n.last_error,
        "subscribed": n.subscribed,
        "access_model": n.access_model,
        "shareable": n.shareable,
        "truncated": n.truncated,
        "upstream_max_items": n.upstream_max_items,
        "sync_lease_holder": n.sync_owner,
        "sync_lease_until": iso(n.sync_lease_until),
    }


def detail_json(detail: NodeDetail) -> dict[str, Any]:
    """A node in detail: node_json() and its items' time span."""
    return {
        **node_json(detail.summary),
        "oldest_item": iso(detail.oldest_item),
        "newest_item": iso(detail.newest_item),
    }


# --- text ----------------------------------------------------------------------------


def size(count: int) -> str:
    """Bytes in binary units: 512 B, 1.5 KiB, 12.0 MiB."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def ago(value: datetime | None, now: datetime) -> str:
    """How long before now: '3h12m ago', 'never'; a time to come is 'in 5m'."""
    if value is None:
        return "never"
    if value > now:
        return f"in {format_duration(value - now)}"
    return f"{format_duration(now - value)} ago"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> str:
    """Left-aligned columns (right-aligned where numeric), two spaces apart."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(widths[i]) if i in numeric else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


def stats_text(found: Sequence[ServiceStats]) -> str:
    """One row per service and a total row."""
    data = stats_json(found)
    header = ["SERVICE", "NODES", *(s.upper() for s in SYNC_STATES), "ITEMS", "SIZE"]

    def row(name: str, entry: dict[str, Any]) -> list[str]:
        nodes = entry["nodes"]
        return [
            name,
            str(nodes["total"]),
            *(str(nodes[s]) for s in SYNC_STATES),
            str(entry["items"]),
            size(entry["bytes"]),
        ]

    rows = [row(s["service"], s) for s in data["services"]]
    rows.append(row("(all)", data))
    return table(header, rows, numeric=set(range(1, len(header))))


def nodes_text(found: Sequence[NodeSummary], now: datetime) -> str:
    """One row per node; 'no nodes' when there are none."""
    if not found:
        return "no nodes"
    rows = [
        [
            s.node.service,
            s.node.name,
            s.node.sync_state,
            str(s.items),
            size(s.bytes),
            ago(s.node.last_synced, now),
            ago(s.node.last_requested, now),
        ]
        for s in found
    ]
    header = ["SERVICE", "NODE", "STATE", "ITEMS", "SIZE", "LAST SYNC", "LAST REQUEST"]
    return table(header, rows, numeric={3, 4})


def detail_text(detail: NodeDetail, now: datetime) -> str:
    """One 'key: value' line per fact about the node."""
    n = detail.summary.node
    lines = [
        ("service", n.service),
        ("node", n.name),
        ("state", f"{n.sync_state} (since {ago(n.sync_state_updated, now)})"),
        ("items", f"{detail.summary.items} ({size(detail.summary.bytes)})"),
        ("oldest item", ago(detail.oldest_item, now)),
        ("newest item", ago(detail.newest_item, now)),
        ("last sync", ago(n.last_synced, now)),
        ("last request", ago(n.last_requested, now)),
        ("failed attempts", str(n.sync_attempts)),
        ("next retry", ago(n.next_sync_at, now) if n.next_sync_at else "-"),
        ("last error", n.last_error or "-"),
        ("subscribed", "yes" if n.subscribed else "no"),
        ("access model", n.access_model or "unknown"),
        ("served from cache", "yes" if n.shareable and n.sync_state == "completed" else "no"),
        ("truncated", "yes (older items only upstream)" if n.truncated else "no"),
        ("upstream max items", "-" if n.upstream_max_items is None else str(n.upstream_max_items)),
        ("sync lease", f"{n.sync_owner} until {iso(n.sync_lease_until)}" if n.sync_owner else "-"),
    ]
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in lines)


def purged_text(found: Sequence[NodeSummary], dry_run: bool) -> str:
    """The nodes a purge dropped (or would drop), and the totals."""
    verb = "would purge" if dry_run else "purged"
    summary = f"{verb} {len(found)} nodes, {sum(s.items for s in found)} items"
    if not found:
        return summary
    rows = [[s.node.service, s.node.name, str(s.items), size(s.bytes)] for s in found]
    return table(["SERVICE", "NODE", "ITEMS", "SIZE"], rows, numeric={2, 3}) + "\n" + summary
