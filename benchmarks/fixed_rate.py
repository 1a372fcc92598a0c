"""P3's probe latency at one fixed offered rate, for comparing two versions or settings.

Run: `python benchmarks/fixed_rate.py --rate 2500 [--seconds 30] [--repeat 1]` (needs
`make services`, or TETHER_KAFKA_BOOTSTRAP and TETHER_REDIS_URL). It starts P2's pipeline (a
`tether worker` on fresh topics, the gateway's `Watcher`, a load generator), warms it up for 5 s
at 500/s, then offers `--rate` for `--seconds`, `--repeat` times, with probes at
`--probe-rate`; for each repeat it prints the probe latency (p50/p99), the p50 of every 5 s
window, and the CPU of the worker, the broker and the machine. The topics are deleted
afterwards. Settings pass through from the environment (`TETHER_OUTPUT_LINGER_MS=50 python
benchmarks/fixed_rate.py --rate 2500`).

The harness measures P3 at half of the rate P2 found, which moves with the machine; this holds
the rate still. On a shared 2-core machine one run says little: alternate the two versions
(e.g. a `git worktree` of each) several times and compare pairs, as in

    for i in 1 2 3 4; do for d in ../base .; do (cd $d && python benchmarks/fixed_rate.py --rate 2500); done; done
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench_kafka import delete_run
from bench_sweep import Corpus, open_pipeline, percentile, run_step, standalone_context

OUT = Path(__file__).resolve().parent / "out"
WINDOW_S = 5.0


def windows(sent: dict[str, float], seen: dict[str, float]) -> list[float]:
    """The p50 latency (ms) of the probes sent in each ``WINDOW_S`` window, in order."""
    times = sorted((t, token) for token, t in sent.items() if token in seen)
    if not times:
        return []
    start = times[0][0]
    buckets: dict[int, list[float]] = {}
    for t, token in times:
        buckets.setdefault(int((t - start) // WINDOW_S), []).append((seen[token] - t) * 1000)
    return [round(percentile(v, 50), 1) for _, v in sorted(buckets.items())]


def main() -> None:
    """Parse the arguments, measure each repeat, print one line each and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, required=True, help="offered intents/s")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each repeat")
    parser.add_argument("--repeat", type=int, default=1, help="repeats on the same pipeline")
    parser.add_argument("--probe-rate", type=float, default=25.0, help="probes/s")
    parser.add_argument("--partitions", type=int, default=6, help="partitions per topic")
    parser.add_argument("--seed", type=int, default=7, help="fleet seed of the load")
    args = parser.parse_args()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    ctx = standalone_context("fixed", stamp, args.partitions, OUT)
    corpus = Corpus(OUT / f"fixed-stream-{stamp}.jsonl", args.seed)
    pipe = open_pipeline(ctx, "worker")
    results: list[dict[str, Any]] = []
    try:
        run_step(pipe, corpus, 500, 5, probe_rate=5, tag="warm", record=False)
        for i in range(args.repeat):
            pipe.clock.sent.clear()
            pipe.clock.seen.clear()
            step = run_step(
                pipe, corpus, args.rate, args.seconds, probe_rate=args.probe_rate, tag=f"f{i}"
            )
            latency = step["latency"]
            result = {
                "offered_per_s": args.rate,
                "sustainable": step["sustainable"],
                "p50_ms": latency["p50_ms"],
                "p99_ms": latency["p99_ms"],
                "probes": latency["n"],
                "lost": latency["lost"],
                "window_p50_ms": windows(pipe.clock.sent, pipe.clock.seen),
                "worker_cpu_pct": step.get("process_cpu_pct"),
                "broker_cpu_pct": step.get("broker_cpu_pct"),
                "machine_busy_pct": step.get("machine_busy_pct"),
            }
            results.append(result)
            print(
                f"repeat {i + 1}: {args.rate:,.0f}/s for {args.seconds:g} s: probe p50 "
                f"{result['p50_ms']} ms p99 {result['p99_ms']} ms (n={result['probes']}, lost "
                f"{result['lost']}); p50 per {WINDOW_S:g} s {result['window_p50_ms']}; cpu "
                f"worker {result['worker_cpu_pct']}% broker {result['broker_cpu_pct']}% machine "
                f"{result['machine_busy_pct']}%"
                + ("" if result["sustainable"] else " (NOT sustainable)"),
                flush=True,
            )
    finally:
        pipe.close(ctx.children)
        corpus.path.unlink(missing_ok=True)
        delete_run(ctx.bootstrap, ctx.run_prefix)
    out = OUT / f"fixed-{stamp}.json"
    out.write_text(json.dumps({"prefix": ctx.run_prefix, "repeats": results}, indent=1))
    print(f"results: {out}", flush=True)


if __name__ == "__main__":
    main()
