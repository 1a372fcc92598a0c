"""What a tether worker costs while nothing happens: CPU of the worker and the broker, idle.

Run: `python benchmarks/idle_cost.py [--seconds 20] [--repeat 3]` (needs `make services`, or
TETHER_KAFKA_BOOTSTRAP and TETHER_REDIS_URL). Each repeat starts the benchmark pipeline of P2
(a `tether worker` on fresh topics, the gateway's `Watcher`, an idle load generator), waits
5 s, then reads the CPU time of the worker (with its child processes) and of the local broker
from `/proc` over `--seconds`, and prints both as % of one core. Settings pass through from the
environment (e.g. `TETHER_FETCH_WAIT_MS=50 python benchmarks/idle_cost.py`). The topics are
deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bench_kafka import delete_run
from bench_procs import broker_pid, child_pids, cpu_seconds
from bench_sweep import open_pipeline, standalone_context

OUT = Path(__file__).resolve().parent / "out"


def measure(seconds: float, partitions: int) -> dict[str, float]:
    """One idle pipeline: % of a core used by the worker and by the broker over ``seconds``."""
    ctx = standalone_context("idle", time.strftime("%Y%m%d-%H%M%S"), partitions, OUT)
    pipe = open_pipeline(ctx, "worker")
    try:
        time.sleep(5)  # past the worker's start-up work
        worker = [pipe.proc.pid, *child_pids(pipe.proc.pid)]
        broker = broker_pid()
        began = time.monotonic()
        w0 = sum(cpu_seconds(p) for p in worker)
        b0 = cpu_seconds(broker) if broker is not None else 0.0
        time.sleep(seconds)
        elapsed = time.monotonic() - began
        w1 = sum(cpu_seconds(p) for p in worker)
        b1 = cpu_seconds(broker) if broker is not None else 0.0
    finally:
        pipe.close(ctx.children)
        delete_run(ctx.bootstrap, ctx.run_prefix)
    return {
        "worker_pct": round(100 * (w1 - w0) / elapsed, 1),
        "broker_pct": round(100 * (b1 - b0) / elapsed, 1) if broker is not None else float("nan"),
    }


def main() -> None:
    """Parse the arguments and print one line per repeat."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per repeat")
    parser.add_argument("--repeat", type=int, default=3, help="pipelines started one after another")
    parser.add_argument("--partitions", type=int, default=6, help="partitions per topic")
    args = parser.parse_args()
    wait = os.environ.get("TETHER_FETCH_WAIT_MS", "default")
    for i in range(args.repeat):
        got = measure(args.seconds, args.partitions)
        print(
            f"repeat {i + 1}: idle for {args.seconds:g} s (TETHER_FETCH_WAIT_MS={wait}): "
            f"worker {got['worker_pct']}% of a core, broker {got['broker_pct']}%",
            flush=True,
        )


if __name__ == "__main__":
    main()
