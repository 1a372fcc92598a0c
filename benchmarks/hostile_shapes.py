"""Hostile shapes: per-event cost of the core on the workflow shapes an attacker can choose.

Each shape is a stream of valid events that once made the cost of an event grow with the size
of its workflow (issue 18, item 3): one workflow presenting thousands of distinct tokens, a
flood of calls all pending within one grace period, thousands of delegations to one delegatee,
and one token presented in hundreds of workflows followed by back-dated uses. Each is replayed
through the in-process core (``tether replay``'s Monitor, default Cedar pack on) at N and 4N
events, beside a benign fleet of the same sizes (the demo fleet generator), and the figures are
printed as µs per event (best of ``--repeat`` runs, CPU time, parsing excluded). The events
are parsed first and frozen out of the cyclic collector's view (``gc.freeze``: a replay or a
worker never holds its whole input), so the collector walks only what the monitor keeps, at
the interpreter's defaults as in ``tether replay``; ``--worker-gc`` runs it as the streaming
worker does (``streams.gc_freeze``: survivors of each full collection frozen too).

Targets: for every shape, µs/event at 4N <= 1.5 x at N, and <= 10 x the benign fleet's at the
same size. Figures, never asserts: each line ends PASS or FAIL.

    .venv/bin/python benchmarks/hostile_shapes.py                 # N = 10,000
    .venv/bin/python benchmarks/hostile_shapes.py --events 5000 --repeat 5
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

import orjson

from streams.gc_freeze import GcFreezer
from tether.bootstrap import monitor
from tether.demo.fleet import FleetConfig, iter_json_lines
from tether.models import InputEvent, input_event_adapter
from tether.settings import Settings

T0 = datetime(2026, 11, 28, 14, 0, 0, tzinfo=UTC)
ORG = "spiffe://acme.example/agent/"
SCALE_TARGET = 1.5
BENIGN_TARGET = 10.0

Raw = dict[str, Any]


def _at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def _cred(holder: str, token: str, scopes: list[str], expires: float = 7200) -> Raw:
    return {
        "token_id": token,
        "issuer": "https://sts.acme.example",
        "subject": ORG + holder,
        "scopes": scopes,
        "issued_at": _at(-60),
        "expires_at": _at(expires),
    }


def _started(wf: str, agent: str, token: str, eid: str, t: float = 0.0) -> Raw:
    scopes = ["crm:read", "crm:write", "docs:read"]
    return {
        "schema_version": 1,
        "event_type": "workflow.started",
        "event_id": eid,
        "occurred_at": _at(t),
        "workflow_id": wf,
        "agent": {"workload_id": ORG + agent},
        "credential": _cred(agent, token, scopes),
        "grant": {
            "task_type": "support_triage",
            "purpose": "answer a customer ticket",
            "scopes": scopes,
            "tools": ["crm.search", "crm.update", "docs.read"],
            "max_sensitivity": "confidential",
            "destinations": ["crm.internal", "docs.internal"],
            "not_after": _at(7200),
            "autonomy": "medium",
        },
    }


def _call(wf: str, agent: str, token: str, eid: str, t: float, holder: str | None = None) -> Raw:
    return {
        "schema_version": 1,
        "event_type": "tool_call.intent",
        "event_id": eid,
        "occurred_at": _at(t),
        "workflow_id": wf,
        "agent": {"workload_id": ORG + agent},
        "credential": _cred(holder or agent, token, ["crm:read"]),
        "action": {
            "tool": "crm.search",
            "operation": "read",
            "resource": "crm://accounts/123",
            "destination": "crm.internal",
            "data_sensitivity": "internal",
        },
    }


def _delegate(wf: str, frm: str, to: str, token: str, did: str, eid: str, t: float) -> Raw:
    return {
        "schema_version": 1,
        "event_type": "delegation.granted",
        "event_id": eid,
        "occurred_at": _at(t),
        "workflow_id": wf,
        "agent": {"workload_id": ORG + frm},
        "credential": _cred(frm, token, ["crm:read"]),
        "delegation": {
            "delegation_id": did,
            "to_workload_id": ORG + to,
            "scopes": ["crm:read"],
            "expires_at": _at(7000),
        },
    }


def many_tokens(n: int) -> Iterator[Raw]:
    """One workflow presenting a new token on every call (a token id per event)."""
    yield _started("wf-tokens", "planner", "tok-start", "s-0")
    for i in range(n - 1):
        yield _call("wf-tokens", "planner", f"tok-{i:08d}", f"c-{i}", 1 + i * 0.01)


def pending_burst(n: int) -> Iterator[Raw]:
    """A flood of calls all dated within one grace period into a workflow whose start has not
    arrived: every one waits; the start comes last."""
    for i in range(n - 1):
        yield _call("wf-pending", "planner", "tok-p", f"c-{i}", 1 + 4.0 * i / n)
    yield _started("wf-pending", "planner", "tok-p", "s-0", t=0.5)


def delegation_fan_in(n: int) -> Iterator[Raw]:
    """Thousands of delegations to one delegatee, each followed by a call of the delegatee."""
    yield _started("wf-deleg", "planner", "tok-planner", "s-0")
    for i in range((n - 1) // 2):
        t = 1 + i * 0.01
        yield _delegate("wf-deleg", "planner", "worker", "tok-planner", f"d-{i}", f"d-{i}", t)
        yield _call("wf-deleg", "worker", "tok-worker", f"c-{i}", t + 0.001)


def token_spray(n: int) -> Iterator[Raw]:
    """One token presented in 256 workflows, then back-dated uses of it in them (each earlier
    than any before, so each changes what the token index knows)."""
    k = 256
    for j in range(k):
        yield _started(f"wf-spray-{j}", "planner", "tok-shared", f"s-{j}", t=j * 0.01)
        yield _call(f"wf-spray-{j}", "planner", "tok-shared", f"c-{j}", 10 + j * 0.01)
    for i in range(n - 2 * k):
        wf = f"wf-spray-{i % k}"
        yield _call(wf, "planner", "tok-shared", f"b-{i}", 9.9 - i * 1e-5)


def pending_uncovered(n: int) -> Iterator[Raw]:
    """A variant: after the start, a flood of calls within one grace period by an actor no
    delegation covers (each waits for a delegation that may still arrive)."""
    yield _started("wf-unc", "planner", "tok-planner", "s-0")
    for i in range(n - 1):
        yield _call("wf-unc", "stranger", f"tok-s{i % 64}", f"c-{i}", 1 + 4.0 * i / n)


def delegation_fan_in_mid(n: int) -> Iterator[Raw]:
    """A variant: the delegations to one delegatee come from a delegatee of the initiator, so
    every act searches the chain above each covering delegation."""
    yield _started("wf-mid", "planner", "tok-planner", "s-0")
    yield _delegate("wf-mid", "planner", "mid", "tok-planner", "d-top", "d-top", 0.5)
    for i in range((n - 2) // 2):
        t = 1 + i * 0.01
        yield _delegate("wf-mid", "mid", "worker", "tok-mid", f"d-{i}", f"d-{i}", t)
        yield _call("wf-mid", "worker", "tok-worker", f"c-{i}", t + 0.001)


def delegation_chain(n: int) -> Iterator[Raw]:
    """A variant: one long chain of delegations, each new delegatee delegating on and acting."""
    yield _started("wf-chain", "a0", "tok-a0", "s-0")
    for i in range((n - 1) // 2):
        t = 1 + i * 0.01
        frm, to = f"a{i}", f"a{i + 1}"
        yield _delegate("wf-chain", frm, to, f"tok-{frm}", f"d-{i}", f"d-{i}", t)
        yield _call("wf-chain", to, f"tok-{to}", f"c-{i}", t + 0.001)


def token_spray_workloads(n: int) -> Iterator[Raw]:
    """A variant: one token presented by 256 workloads in 256 workflows, then back-dated."""
    k = 256
    for j in range(k):
        yield _started(f"wf-sw-{j}", f"agent-{j}", "tok-sw", f"s-{j}", t=j * 0.01)
        yield _call(f"wf-sw-{j}", f"agent-{j}", "tok-sw", f"c-{j}", 10 + j * 0.01, "agent-0")
    for i in range(n - 2 * k):
        j = i % k
        yield _call(f"wf-sw-{j}", f"agent-{j}", "tok-sw", f"b-{i}", 9.9 - i * 1e-5, "agent-0")


SHAPES: dict[str, Callable[[int], Iterator[Raw]]] = {
    "many_tokens": many_tokens,
    "pending_burst": pending_burst,
    "delegation_fan_in": delegation_fan_in,
    "token_spray_backdated": token_spray,
    "pending_uncovered": pending_uncovered,
    "delegation_fan_in_mid": delegation_fan_in_mid,
    "delegation_chain": delegation_chain,
    "token_spray_workloads": token_spray_workloads,
}


def _parse(raws: Iterator[Raw]) -> list[InputEvent]:
    return [input_event_adapter.validate_json(orjson.dumps(r)) for r in raws]


def benign(n: int, seed: int) -> list[InputEvent]:
    """``n`` events of the demo fleet (interleaved workflows, ~5% attacks)."""
    cfg = FleetConfig(seed=seed, workflows=10**9, attack_rate=0.05)
    return [input_event_adapter.validate_json(line) for line in islice(iter_json_lines(cfg), n)]


def us_per_event(events: list[InputEvent], repeat: int) -> float:
    """Best CPU time per event over ``repeat`` fresh monitors (process + final flush)."""
    best = float("inf")
    for _ in range(repeat):
        mon = monitor(Settings(), decisions=True)
        gc.collect()
        gc.freeze()  # the parsed input is the benchmark's, not the monitor's: never walked
        began = time.process_time()
        for ev in events:
            mon.process(ev)
        mon.flush()
        best = min(best, time.process_time() - began)
        gc.unfreeze()
    return best / len(events) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10_000, help="N (each shape runs N and 4N)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    ap.add_argument("--worker-gc", action="store_true", help="the worker's gc freezer (above)")
    args = ap.parse_args()
    n = args.events
    if args.worker_gc:
        GcFreezer(0.0).install()
    base = {size: us_per_event(benign(size, args.seed), args.repeat) for size in (n, 4 * n)}
    gc_mode = "gc as in the worker" if args.worker_gc else "gc as in tether replay"
    print(f"hostile shapes: N = {n:,} events, best of {args.repeat}, CPU µs/event, {gc_mode}")
    print(f"{'shape':24} {'N':>9} {'4N':>9} {'4N/N':>6} {'vs benign':>9}  verdict")
    print(f"{'benign fleet':24} {base[n]:9.2f} {base[4 * n]:9.2f} {base[4 * n] / base[n]:6.2f}")
    rows = []
    for name, gen in SHAPES.items():
        at = {size: us_per_event(_parse(gen(size)), args.repeat) for size in (n, 4 * n)}
        scale = at[4 * n] / at[n]
        vs = max(at[n] / base[n], at[4 * n] / base[4 * n])
        ok = scale <= SCALE_TARGET and vs <= BENIGN_TARGET
        rows.append(
            {"shape": name, "n": at[n], "4n": at[4 * n], "scale": scale, "vs_benign": vs, "ok": ok}
        )
        verdict = "PASS" if ok else "FAIL"
        print(f"{name:24} {at[n]:9.2f} {at[4 * n]:9.2f} {scale:6.2f} {vs:8.2f}x  {verdict}")
    print(f"targets: 4N/N <= {SCALE_TARGET}, vs benign <= {BENIGN_TARGET}x (at N and at 4N)")
    if args.json:
        print(json.dumps({"events": n, "benign": base, "shapes": rows}))


if __name__ == "__main__":
    main()
