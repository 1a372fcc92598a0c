"""Time the Cedar call policy: µs per `PolicyEvaluator.evaluate`, uncached and cached.

Run: `python benchmarks/policy_eval.py [--calls 20000]`. Uses the packaged default pack.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime

import cedarpy

from tether.policy import PolicyEvaluator, PolicyRequest, load_default_pack
from tether.policy.schema import cedar_request

_OPERATIONS = ("read", "write", "delete", "execute", "transfer", "admin")
_SENSITIVITIES = ("public", "internal", "confidential", "restricted")


def requests(count: int) -> list[PolicyRequest]:
    """Return `count` distinct requests of mixed shapes (about one in six is denied)."""
    return [
        PolicyRequest.for_call(
            workload_id=f"spiffe://acme.example/agent/{i}",
            operation=_OPERATIONS[i % 6],
            tool=f"tool-{i % 50}",
            resource=f"crm://accounts/{i}",
            destination="crm.internal" if i % 3 else "paste.example",
            data_sensitivity=_SENSITIVITIES[i % 4],
            occurred_at=datetime(2026, 12, 1, i % 24, tzinfo=UTC),
            is_initiator=i % 4 == 0,
            delegation_depth=0 if i % 4 == 0 else i % 3,
            task_type="summarize",
            purpose="benchmark",
            autonomy=("low", "medium", "high")[i % 3],
            max_sensitivity="restricted",
            granted_destinations=["crm.internal"],
        )
        for i in range(count)
    ]


def per_call(label: str, calls: int, run: Callable[[], object]) -> None:
    """Run `run` (which makes `calls` evaluations) once to warm up, then time it."""
    run()
    start = time.perf_counter()
    run()
    micros = (time.perf_counter() - start) / calls * 1e6
    print(f"{label:44s} {micros:8.2f} µs/call")


def main() -> None:
    """Print µs/call for each way of evaluating."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    calls = parser.parse_args().calls
    pack = load_default_pack()
    distinct = requests(calls)
    same = [distinct[1]] * calls
    denied = sum(not PolicyEvaluator(pack, 0).evaluate(r).allowed for r in distinct)
    print(f"{calls} calls, {len(pack.policy_ids)} policies, {denied} of them denied")

    def uncached() -> None:
        evaluator = PolicyEvaluator(pack, cache_size=0)
        for req in distinct:
            evaluator.evaluate(req)

    def distinct_keys_with_cache() -> None:
        evaluator = PolicyEvaluator(pack)  # every key new: all misses, plus cache upkeep
        for req in distinct:
            evaluator.evaluate(req)

    evaluator = PolicyEvaluator(pack)

    def cached() -> None:
        for req in same:
            evaluator.evaluate(req)

    def raw_cedarpy() -> None:
        for req in distinct:
            cedarpy.is_authorized(cedar_request(req), pack.policy_set, pack.entities)

    def build_requests() -> None:
        requests(calls)

    per_call("evaluate, cache off (cache_size=0)", calls, uncached)
    per_call("evaluate, distinct keys (all misses)", calls, distinct_keys_with_cache)
    per_call("evaluate, cached (one key, all hits)", calls, cached)
    per_call("cedarpy.is_authorized alone (reference)", calls, raw_cedarpy)
    per_call("PolicyRequest.for_call (building requests)", calls, build_requests)


if __name__ == "__main__":
    main()
