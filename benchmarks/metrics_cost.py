"""What the metrics cost the worker's and the gateway's hot paths: ns per record or request.

Run: `python benchmarks/metrics_cost.py [--n 1000000]`. Times, in isolation, exactly the
operations issue 24 added per input record (a ``Tally`` count of its event type and the
oldest-timestamp comparison of ``Worker.submit_intents``), per finding, per revocation and per
batch (the decision-latency histogram), and per gateway request (the deciding tier, remembered per set
of tiers, and the answers counter under the gateway's lock), beside prometheus_client's own labelled ``Counter.inc`` for comparison. The worker
spends ~55 µs of CPU per event (benchmarks/RUNS.md): divide to get the share.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter

from tether.gateway import GatewayConfig
from tether.gateway.service import Gateway
from tether.metrics import DECISION_LATENCY, Tally

TYPES = ("workflow.started", "tool_call.intent", "tool_call.intent", "workflow.completed")


def per_op(label: str, n: int, run: Callable[[int], None]) -> float:
    """Time ``run(n)`` after a warm-up; print and return ns per operation."""
    run(min(n, 10_000))
    start = time.perf_counter()
    run(n)
    ns = (time.perf_counter() - start) / n * 1e9
    print(f"{label:<58} {ns:8.1f} ns")
    return ns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    n = parser.parse_args().n
    tally = Tally("bench_events", "bench", "type")
    registry = CollectorRegistry()
    prom = PromCounter("bench_events", "bench", ["type"], registry=registry)

    def baseline(k: int) -> None:
        for i in range(k):
            TYPES[i & 3]

    def tally_add(k: int) -> None:
        add = tally.add
        for i in range(k):
            add(TYPES[i & 3])

    def prom_inc(k: int) -> None:
        for i in range(k):
            prom.labels(TYPES[i & 3]).inc()

    class Rec:
        timestamp = 1_765_000_000.0

    rec = Rec()

    def oldest(k: int) -> None:
        horizon = 1_765_000_300.0
        first = horizon
        for _ in range(k):
            stamp = getattr(rec, "timestamp", None)
            if stamp and 0 < stamp < first:
                first = stamp

    def histogram(k: int) -> None:
        observe = DECISION_LATENCY.observe
        for _ in range(k):
            observe(0.012)

    gw = Gateway(GatewayConfig(fail_closed_tiers=frozenset({"high"})), revocations=None)  # type: ignore[arg-type]  # only its counting is timed
    tiers = {"default", "high"}
    answers = gw.stats.answers

    def gateway(k: int) -> None:
        tier_of, lock = gw._tier, gw.lock  # the lines Gateway.check adds
        for _ in range(k):
            tier = tier_of(tiers)
            with lock:
                answers["not_revoked", tier] += 1

    base = per_op("loop baseline (subtracted below)", n, baseline)
    rows = [
        ("per record: Tally.add(event_type)", tally_add),
        ("per record: oldest Kafka timestamp of the batch", oldest),
        ("per batch: decision-latency Histogram.observe", histogram),
        ("per gateway request: deciding tier + answers counter", gateway),
        ("for comparison: prometheus Counter.labels().inc()", prom_inc),
    ]
    for label, run in rows:
        ns = per_op(label, n, run) - base
        print(f"{'':<58} {ns:8.1f} ns net")


if __name__ == "__main__":
    main()
