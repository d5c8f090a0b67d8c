"""Where the staleness goes: a breakdown of `pubsub_staleness --trace DIR`'s runs.

Run:
    .venv/bin/python -m bench.staleness_trace DIR

For each <server>-<db> run in DIR, reads the changes (the bench's clock) and Herald's
trace lines (component/pubsub/tracing.py: the same monotonic clock) and prints, for
the notified publications and retractions, p50/p99 of each step:
  upstream     the owner's send -> Herald receives the notification
  queue        received -> its group (or its own application) starts
  write        that start -> applied (database written, memory updated)
  answer       applied -> the first fresh answer arrives at the bench (a poll's
               wait, the read's own decision and database read, the round trip;
               below 0 when the read applied the notification before its write)
  fresh read   that answer's read: received -> it reaches Herald (the poll's
               wait and the way in), -> answered, -> the bench has the answer
for the throughput phase's notifications, Herald's own part (received -> applied),
and for the paced phase's the whole lag split (upstream, Herald, the bench's watcher),
and of the group writes (checkout and statements, commit) and the staleness
phase's reads (how many waited for an access check or an upstream comparison, and
how long; the set-up's first reads are left out).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
from collections import defaultdict
from pathlib import Path

Step = tuple[float, str]  # (time, detail)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def parse(log: str) -> dict[str, dict[str, list[Step]]]:
    """step name -> node -> [(time, detail)], in time order."""
    steps: dict[str, dict[str, list[Step]]] = defaultdict(lambda: defaultdict(list))
    for line in log.splitlines():
        _, found, rest = line.partition("herald.trace: ")
        if not found:
            continue
        parts = rest.split(" ", 3)
        if len(parts) < 3:
            continue
        name, at, node = parts[0], float(parts[1]), parts[2]
        steps[name][node].append((at, parts[3] if len(parts) > 3 else ""))
    return steps


def first_after(seq: list[Step], t: float, want: str | None = None) -> Step | None:
    i = bisect.bisect_left(seq, (t, ""))
    for at, detail in seq[i:]:
        if want is None or want in detail.split(" ")[-1].split(","):
            return at, detail
    return None


def last_before(seq: list[Step], t: float) -> Step | None:
    i = bisect.bisect_left(seq, (t, ""))
    return seq[i - 1] if i else None


def line(name: str, values: list[float]) -> str:
    return (
        f"  {name:<34} n={len(values):<5} p50 {pct(values, 50) * 1000:8.1f}"
        f"  p99 {pct(values, 99) * 1000:8.1f}  max {max(values, default=math.nan) * 1000:8.1f} ms"
    )


def report(stem: Path) -> None:
    changes = json.loads(stem.with_suffix(".changes.json").read_text())
    steps = parse(stem.with_suffix(".log").read_text(errors="replace"))
    parts: dict[str, list[float]] = defaultdict(list)
    for c in changes:
        if c["kind"] not in ("publish", "retract") or c["proxy"] is None:
            continue
        node, t0 = c["node"], c["t0"]
        want = c["item"] if c["kind"] == "publish" else f"-{c['item']}"
        recv = first_after(steps["recv"][node], t0, want)
        if recv is None:
            parts["(no notification traced)"].append(c["proxy"])
            continue
        started = [
            s for s in (first_after(steps[k][node], recv[0]) for k in ("grouped", "alone-start"))
        ]
        start = min((s[0] for s in started if s is not None), default=math.nan)
        applied = first_after(steps["applied"][node], recv[0])
        fresh = t0 + c["proxy"]
        parts["total (bench)"].append(c["proxy"])
        parts["direct (bench)"] += [c["direct"]] if c["direct"] is not None else []
        parts["upstream: send -> received"].append(recv[0] - t0)
        if not math.isnan(start):
            parts["queue: received -> write starts"].append(start - recv[0])
        if applied is not None:
            if not math.isnan(start):
                parts["write: starts -> applied"].append(applied[0] - start)
            parts["answer: applied -> fresh answer"].append(fresh - applied[0])
            parts[f"applied {applied[1]}"].append(applied[0] - recv[0])
        # The fresh answer's own read: the last one Herald answered before the bench
        # had it (one read in flight per change), and when it reached Herald.
        answered = last_before(steps["answered"][node], fresh)
        read = last_before(steps["read"][node], answered[0]) if answered else None
        if answered is not None and read is not None:
            parts["fresh read: received -> it arrives"].append(read[0] - recv[0])
            parts["fresh read: arrives -> answered"].append(answered[0] - read[0])
            parts["fresh read: answered -> bench has it"].append(fresh - answered[0])
    print(f"\n== {stem.name}: notified publish/retract, ms from the owner's send ==")
    for name, values in parts.items():
        print(line(name, values))

    # The throughput phase's cached nodes (blog-*-tpNN): Herald's own part of the lag.
    own, queued = [], []
    for node, received in steps["recv"].items():
        if "-tp" not in node:
            continue
        for at, _ in received:
            start = first_after(steps["grouped"][node], at) or first_after(
                steps["alone-start"][node], at
            )
            applied = first_after(steps["applied"][node], at)
            if applied is not None:
                own.append(applied[0] - at)
            if start is not None:
                queued.append(start[0] - at)
    if own:
        print("throughput phase (nodes *-tp*), per notification:")
        print(line("queue: received -> write starts", queued))
        print(line("received -> applied (committed)", own))

    paced = stem.with_suffix(".paced.json")
    if paced.exists():
        report_paced(json.loads(paced.read_text()), steps)

    print("group writes (all nodes, both phases):")
    starts = [t for t, _ in steps["write-start"]["*"]]
    commits = [t for t, _ in steps["write-commit"]["*"]]
    ends = [t for t, _ in steps["write-end"]["*"]]
    if starts and len(starts) == len(commits) == len(ends):
        # The session connects at its first statement: the pool's checkout is in it.
        print(line("checkout + statements", [b - a for a, b in zip(starts, commits, strict=True)]))
        print(line("commit", [b - a for a, b in zip(commits, ends, strict=True)]))
        sizes = [int(d) for _, d in steps["write-start"]["*"]]
        print(f"  nodes per group: mean {sum(sizes) / len(sizes):.1f}, max {max(sizes)}")

    # The reads of the staleness phase only: the set-up's first reads of every node
    # at once (each checked before its first sync) would otherwise pass for the
    # phase's (p50 ~50 ms on ejabberd, all in one second).
    began = min((c["t0"] for c in changes), default=math.inf)
    ended = max((c["t0"] + (c["proxy"] or 0.0) for c in changes), default=-math.inf)
    steps = within(steps, began, ended)
    print(f"reads during the staleness phase ({ended - began:.1f} s; set-up excluded):")
    decided: dict[str, int] = defaultdict(int)
    for seq in steps["decided"].values():
        for _, detail in seq:
            decided[detail] += 1
    print(f"  read decisions: {dict(decided)}")
    for wait, done in (("CHECK_FIRST", "checked"), ("COMPARE_FIRST", "compared")):
        waits = spans(steps, "decided", done, wait)
        if waits:
            print(line(f"read waits for {done[:-2]}", waits))
    compares = spans(steps, "compare-start", "compare-end")
    if compares:
        print(line("comparisons (start -> end)", compares))
    graces = sum(len(s) for s in steps["compare-grace"].values())
    print(f"  comparisons that waited for notifications in flight: {graces}")
    db = spans(steps, "items-db", "items-db-end")
    if db:
        print(line("reads of items from the database", db))


def report_paced(times: list[dict[str, object]], steps: dict[str, dict[str, list[Step]]]) -> None:
    """The paced phase's lag (the goal's figure), split where it goes."""
    parts: dict[str, list[float]] = defaultdict(list)
    for t in times:
        node, item, sent, seen = t["node"], t["item"], t["sent"], t["seen"]
        assert isinstance(node, str)
        assert isinstance(item, str)
        assert isinstance(sent, float)
        if not isinstance(seen, float):
            parts["(never seen)"].append(math.nan)
            continue
        parts["lag (bench: send -> row seen)"].append(seen - sent)
        recv = first_after(steps["recv"][node], sent, item)
        applied = first_after(steps["applied"][node], recv[0]) if recv else None
        if recv is None or applied is None:
            parts["(not traced)"].append(seen - sent)
            continue
        parts["upstream: send -> received"].append(recv[0] - sent)
        parts["herald: received -> applied"].append(applied[0] - recv[0])
        parts["watcher: applied -> row seen"].append(seen - applied[0])
    print(f"paced phase (herald, {len(times)} publications), ms from the owner's send:")
    for name, values in parts.items():
        print(line(name, values))


def within(
    steps: dict[str, dict[str, list[Step]]], began: float, ended: float
) -> dict[str, dict[str, list[Step]]]:
    """The steps between two times."""
    out: dict[str, dict[str, list[Step]]] = defaultdict(lambda: defaultdict(list))
    for name, nodes in steps.items():
        for node, seq in nodes.items():
            out[name][node] = [step for step in seq if began <= step[0] <= ended]
    return out


def spans(
    steps: dict[str, dict[str, list[Step]]], start: str, end: str, detail: str | None = None
) -> list[float]:
    """Per node, from each `start` step (whose detail is `detail`, if given) to the
    node's next `end` step."""
    out = []
    for node, seq in steps[start].items():
        for at, said in seq:
            if detail is None or said == detail:
                found = first_after(steps[end][node], at)
                if found is not None:
                    out.append(found[0] - at)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dir", type=Path)
    args = parser.parse_args()
    for path in sorted(args.dir.glob("*.changes.json")):
        report(path.with_name(path.name.removesuffix(".changes.json")))


if __name__ == "__main__":
    main()
