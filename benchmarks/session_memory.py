"""P5: memory per active workflow session, and eviction of completed workflows.

Folds fleet telemetry (``tether.demo.fleet``) into a ``WorkflowEngine`` under tracemalloc and
prints the bytes each session costs (the session plus its share of the engine's wake-up index),
the bytes it costs once loaded back from its changelog record (a worker's recovery), and the size
of that record (``dump_session``), for two kinds of session:

* started: only the ``workflow.started`` event has been folded;
* active: the first ``--events`` events of each workflow as delivered (start, delegations, tool
  calls, duplicates; no completion), after the grace period has settled them.

Then ``--whole`` whole workflows (completion included): the bytes a completed session costs
while it is retained (compacted a grace period after completion), and that completed workflows
do not accumulate: the session count falls back once event time passes completion plus
``dedup_window_s`` (to zero after ``idle_timeout_s``, for workflows never completed).

    .venv/bin/python benchmarks/session_memory.py                 # 100,000 sessions (~6 min)
    .venv/bin/python benchmarks/session_memory.py --sessions 20000 --top 15

The fleet's first ``--templates`` workflows are generated once and replicated with fresh
workflow, event, token and delegation ids up to ``--sessions`` distinct workflows (workload ids,
scopes, tools and grants repeat across a fleet, as they do in one).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from tether.core import Context, DetectionConfig, Outbox
from tether.core.credentials import CredentialUse
from tether.core.engine import WorkflowEngine
from tether.core.fold import fire_due, fold
from tether.demo.fleet import FleetConfig, generate
from tether.models.codec import Rejected, decode_event
from tether.models.session import Session
from tether.models.state_codec import dump_session, load_session
from tether.policy.bind import CedarCallPolicy

TARGET_BYTES_PER_STARTED = 3 * 1024
TARGET_BYTES_PER_ACTIVE = 4 * 1024  # P5
_NOW = datetime(2026, 11, 30, tzinfo=UTC)

Event = dict[str, Any]


def templates(count: int, seed: int) -> list[list[Event]]:
    """The first ``count`` workflows of the fleet, each as its events in delivery order."""
    by_workflow: dict[str, list[Event]] = {}
    for delivery in generate(FleetConfig(seed=seed, workflows=count)):
        ev = delivery.event
        by_workflow.setdefault(ev["workflow_id"], []).append(ev)
    return list(by_workflow.values())


def relabel(ev: Event, tag: str) -> Event:
    """A copy of ``ev`` in another workflow: fresh workflow, event, token and delegation ids."""
    out = dict(ev)
    out["workflow_id"] = f"{ev['workflow_id']}{tag}"
    out["event_id"] = f"{ev['event_id']}{tag}"
    cred = ev.get("credential")
    if cred is not None:
        out["credential"] = {**cred, "token_id": f"{cred['token_id']}{tag}"}
    if "delegation" in ev:
        d = ev["delegation"]
        out["delegation"] = {**d, "delegation_id": f"{d['delegation_id']}{tag}"}
    if ev.get("delegation_id"):
        out["delegation_id"] = f"{ev['delegation_id']}{tag}"
    return out


_TAG = "~#"


def replicated(flows: list[list[Event]], sessions: int) -> Callable[[], Iterator[bytes]]:
    """Events of ``sessions`` distinct workflows, as JSON lines, template by template.

    Replicas of one template share its event times, so event time only moves forward as the
    templates do. Lines are made by substituting the replica number into pre-encoded lines, so
    that generating them leaves nothing behind for tracemalloc to count.
    """
    copies = -(-sessions // len(flows))
    encoded = [[orjson.dumps(relabel(ev, _TAG)) for ev in flow] for flow in flows]
    tag = _TAG.encode()

    def lines() -> Iterator[bytes]:
        emitted = 0
        for flow in encoded:
            n = min(copies, sessions - emitted)
            for line in flow:
                for r in range(n):
                    yield line.replace(tag, b"~%d" % r)
            emitted += n
            if emitted >= sessions:
                return

    return lines


def fold_all(engine: WorkflowEngine, lines: Iterator[bytes], *, advance: bool) -> tuple[int, int]:
    """Decode and fold every line; return the events folded and the most sessions held."""
    out = Outbox()
    uses: list[CredentialUse] = []
    n = peak = 0
    for line in lines:
        ev = decode_event(line)
        if isinstance(ev, Rejected):
            continue  # the fleet's benign and attack traffic has none; kept for safety
        engine.process(ev, _NOW, out, uses, advance=advance)
        n += 1
        if n % 1024 == 0:
            peak = max(peak, len(engine.sessions))
            out = Outbox()
            uses.clear()
    return n, max(peak, len(engine.sessions))


def measure(
    name: str,
    make_lines: Callable[[], Iterator[bytes]],
    ctx: Context,
    *,
    settle: bool,
    top: int,
) -> dict[str, Any]:
    """Fold the lines into a fresh engine under tracemalloc; bytes per session retained."""
    engine = WorkflowEngine(ctx)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    began = time.perf_counter()
    events, _ = fold_all(engine, make_lines(), advance=True)
    if settle:  # let the grace period pass: pending checks decided, credential uses settled
        engine.advance(engine.watermark + ctx.cfg.grace_s + 1.0, _NOW, Outbox(), [])
    elapsed = time.perf_counter() - began
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    snap = tracemalloc.take_snapshot() if top else None
    tracemalloc.stop()
    sessions = engine.sessions
    n = len(sessions)
    records = [dump_session(s) for s in sessions.values()]
    del engine, sessions
    sizes = [len(r) for r in records]
    result = {
        "kind": name,
        "sessions": n,
        "events_per_session": round(events / n, 2),
        "bytes_per_session": round((after - before) / n),
        "recovered_bytes_per_session": recovered(records),
        "serialized_mean_bytes": round(statistics.fmean(sizes)),
        "serialized_median_bytes": round(statistics.median(sizes)),
        "fold_s": round(elapsed, 1),
    }
    if snap is not None:
        print(f"\n{name}: top allocations still live", file=sys.stderr)
        for stat in snap.statistics("lineno")[:top]:
            print(f"  {stat.size / n:8.1f} B/session  {stat}", file=sys.stderr)
    return result


def recovered(records: list[bytes]) -> int:
    """Bytes per session once the records are loaded back (a worker restoring its table)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    table = {i: load_session(r) for i, r in enumerate(records)}
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return round((after - before) / len(table))


def eviction(flows: list[list[Event]], sessions: int, ctx: Context) -> dict[str, Any]:
    """Whole workflows, completion included, as delivered: sessions held, then released.

    Event time moves with the events, so the sessions held at once are bounded by the workflows
    running or completed within ``dedup_window_s``, not by the workflows folded. At the
    end, event time is moved past completion + retention (only never-completed workflows stay),
    then past ``idle_timeout_s`` (none stay).
    """
    cfg = ctx.cfg
    engine = WorkflowEngine(ctx)
    _, peak = fold_all(engine, replicated(flows, sessions)(), advance=True)
    last = engine.watermark
    steps = {"at_end": len(engine.sessions)}
    for name, horizon in (
        # a completed workflow is kept while its event ids are within the dedup window (and its
        # credentials valid, bounded by completed_memory_max_s): past both here
        ("after_retention", max(cfg.completed_retention_s, cfg.dedup_window_s)),
        ("after_idle_timeout", cfg.idle_timeout_s),
    ):
        engine.advance(last + horizon + cfg.grace_s + 1.0, _NOW, Outbox(), [])
        steps[name] = len(engine.sessions)
    return {"kind": "whole workflows", "workflows": sessions, "peak": peak, **steps}


def completed(flows: list[list[Event]], sessions: int, ctx: Context, *, top: int) -> dict[str, Any]:
    """Bytes per completed session during its retention (compacted a grace period after it
    completed): at a high completion rate these outnumber the active ones."""
    cfg = ctx.cfg
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    table: dict[str, Session] = {}
    uses: list[CredentialUse] = []
    for line in replicated(flows, sessions)():
        ev = decode_event(line)
        if isinstance(ev, Rejected):
            continue
        table[ev.workflow_id] = fold(table.get(ev.workflow_id), ev, ctx, _NOW, Outbox(), uses)
        uses.clear()
    for wf, s in list(table.items()):
        if s.completed_at is None:  # never completed (an attack's victim, say): not counted
            del table[wf]
            continue
        due = max(s.completed_at, s.last_time) + cfg.grace_s + 1.0
        fire_due(s, due, ctx, _NOW, Outbox(), uses)
        uses.clear()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    snap = tracemalloc.take_snapshot() if top else None
    tracemalloc.stop()
    n = len(table)
    if snap is not None:
        print("\ncompleted: top allocations still live", file=sys.stderr)
        for stat in snap.statistics("lineno")[:top]:
            print(f"  {stat.size / n:8.1f} B/session  {stat}", file=sys.stderr)
    return {
        "kind": "completed",
        "sessions": n,
        "compacted": sum(1 for s in table.values() if s.compacted),
        "bytes_per_session": round((after - before) / n),
        "serialized_mean_bytes": round(
            statistics.fmean(len(dump_session(s)) for s in table.values())
        ),
    }


def summary(results: list[dict[str, Any]]) -> None:
    """The human summary, on stderr."""
    started, active, done, whole = results
    for r, target in ((started, TARGET_BYTES_PER_STARTED), (active, TARGET_BYTES_PER_ACTIVE)):
        verdict = "ok" if r["bytes_per_session"] <= target else "OVER"
        print(
            f"{r['kind']:>9}: {r['bytes_per_session']:,} B/session live "
            f"(target <= {target:,}: {verdict}), {r['recovered_bytes_per_session']:,} B once "
            f"recovered, record {r['serialized_mean_bytes']:,} B "
            f"({r['sessions']:,} sessions, {r['events_per_session']} events each)",
            file=sys.stderr,
        )
    print(
        f"{done['kind']:>9}: {done['bytes_per_session']:,} B/session while retained "
        f"({done['compacted']:,} of {done['sessions']:,} compacted), record "
        f"{done['serialized_mean_bytes']:,} B",
        file=sys.stderr,
    )
    print(
        f"    whole: {whole['workflows']:,} workflows folded as delivered, at most "
        f"{whole['peak']:,} sessions held; {whole['at_end']:,} at the end, "
        f"{whole['after_retention']:,} after completion + retention, "
        f"{whole['after_idle_timeout']:,} after the idle timeout",
        file=sys.stderr,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--templates", type=int, default=2000, help="distinct fleet workflows")
    ap.add_argument("--events", type=int, default=12, help="events per active session")
    ap.add_argument(
        "--whole", type=int, default=20_000, help="whole workflows for the completed/eviction runs"
    )
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--top", type=int, default=0, help="print the top live allocations")
    args = ap.parse_args()

    flows = templates(args.templates, args.seed)
    starts = [[ev for ev in f if ev["event_type"] == "workflow.started"][:1] for f in flows]
    starts = [s for s in starts if s]
    active = [
        [ev for ev in f if ev["event_type"] != "workflow.completed"][: args.events] for f in flows
    ]
    ctx = Context(DetectionConfig(), CedarCallPolicy.from_dir(None))
    fold_all(WorkflowEngine(ctx), replicated(flows, len(flows))(), advance=True)  # warm caches

    results = [
        measure(
            "started",
            replicated(starts, args.sessions),
            ctx,
            settle=False,
            top=args.top,
        ),
        measure(
            "active",
            replicated(active, args.sessions),
            ctx,
            settle=True,
            top=args.top,
        ),
        completed(flows, args.whole, ctx, top=args.top),
        eviction(flows, args.whole, ctx),
    ]
    for r in results:
        print(json.dumps(r))
    summary(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
