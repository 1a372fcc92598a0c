"""Hostile delegation shapes: the core's cost per event in one workflow whose delegations a
compromised agent arranges to make the handoff checks expensive.

* chain: a0 delegates to a1, a1 to a2, ... (one delegation and one call per hop);
* lattice: two workloads per level, each delegating to both of the next (2**levels chains),
  then one call by the last level.

Prints the events folded, the seconds they took and the microseconds per event, as a table and
as JSON. A cost that stays flat as the shape grows means no single workflow can stall its
partition; a cost that grows with it (the old search of every chain doubled per lattice level
and grew linearly per chain hop) means it can.

    .venv/bin/python benchmarks/delegation_storm.py
    .venv/bin/python benchmarks/delegation_storm.py --chain 300,3000,10000 --lattice 20,40
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench_events import _DUMPS, _action, _cred, _event, _grant

from tether.core import Context, DetectionConfig, Outbox
from tether.core.fold import fold
from tether.models.codec import Rejected, decode_event
from tether.models.events import InputEvent
from tether.models.session import Session

_BASE = 1_796_000_000.0
_ORG = "spiffe://acme.example/agent/"
_SCOPES = ["crm:read"]


def _delegation(i: int, frm: str, to: str, t: float) -> dict[str, Any]:
    ev = _event("delegation.granted", f"e-d{i}", t, "wf", _ORG + frm, _token(frm, t))
    ev["delegation"] = {
        "delegation_id": f"d-{frm}-{to}",
        "to_workload_id": _ORG + to,
        "scopes": _SCOPES,
        "expires_at": "2030-01-01T00:00:00Z",
    }
    return ev


def _call(i: int, agent: str, t: float) -> dict[str, Any]:
    ev = _event("tool_call.intent", f"e-c{i}", t, "wf", _ORG + agent, _token(agent, t))
    ev["action"] = _action("crm.search")
    return ev


def _token(agent: str, t: float) -> dict[str, Any]:
    return _cred(f"tok-{agent}", _ORG + agent, _SCOPES, t - 30, t + 3600)


def _start(root: str) -> dict[str, Any]:
    ev = _event("workflow.started", "e-start", _BASE, "wf", _ORG + root, _token(root, _BASE))
    ev["grant"] = _grant("storm", _BASE + 86_400, ["crm.search"])
    return ev


def chain(hops: int) -> list[dict[str, Any]]:
    """a0 -> a1 -> ... -> a<hops>, each delegatee calling once after its delegation."""
    events = [_start("a0")]
    for i in range(hops):
        t = _BASE + 1 + i * 0.001
        events.append(_delegation(i, f"a{i}", f"a{i + 1}", t))
        events.append(_call(i, f"a{i + 1}", t + 0.0005))
    return events


def lattice(levels: int) -> list[dict[str, Any]]:
    """Two workloads per level, each delegating to both of the next; one call at the bottom."""
    events = [_start("root")]
    above = ["root"]
    n = 0
    for level in range(levels):
        here = [f"l{level}a", f"l{level}b"]
        for frm in above:
            for to in here:
                events.append(_delegation(n, frm, to, _BASE + 1 + n * 0.001))
                n += 1
        above = here
    events.append(_call(0, above[0], _BASE + 1 + n * 0.001))
    return events


def fold_all(raw: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold one workflow's events (decoded beforehand) and time it."""
    events: list[InputEvent] = []
    for doc in raw:
        decoded = decode_event(_DUMPS(doc))
        if isinstance(decoded, Rejected):
            raise SystemExit(f"benchmark event rejected: {decoded.error}")
        events.append(decoded)
    ctx = Context(DetectionConfig())
    s: Session | None = None
    out = Outbox()
    began = time.perf_counter()
    for ev in events:
        s = fold(s, ev, ctx, 0.0, out, [])
    took = time.perf_counter() - began
    return {
        "events": len(events),
        "seconds": round(took, 3),
        "us_per_event": round(took / len(events) * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chain", default="300,1000,3000", help="chain lengths (hops)")
    parser.add_argument("--lattice", default="16,24,40", help="lattice depths (levels)")
    args = parser.parse_args()
    results = []
    for shape, sizes, build in (("chain", args.chain, chain), ("lattice", args.lattice, lattice)):
        for size in (int(x) for x in sizes.split(",") if x):
            try:
                results.append({"shape": shape, "size": size, **fold_all(build(size))})
            except RecursionError as exc:  # what the search of every chain did on long ones
                results.append({"shape": shape, "size": size, "error": repr(exc)})
    print(f"{'shape':8} {'size':>6} {'events':>7} {'seconds':>8} {'us/event':>9}")
    for r in results:
        if "error" in r:
            print(f"{r['shape']:8} {r['size']:>6}  failed: {r['error']}")
            continue
        print(
            f"{r['shape']:8} {r['size']:>6} {r['events']:>7} {r['seconds']:>8} "
            f"{r['us_per_event']:>9}"
        )
    print(json.dumps({"benchmark": "delegation storm", "results": results}))


if __name__ == "__main__":
    main()
