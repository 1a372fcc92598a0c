"""P1: the in-process core (`tether replay`) over >= 1M events of a realistic fleet mix, with the
default Cedar pack on. Prints events/s and a memory profile (RSS and live sessions as the replay
advances), as JSON and as a table.

    .venv/bin/python benchmarks/core_replay.py                    # 1,000,000 events
    .venv/bin/python benchmarks/core_replay.py --events 200000 --corpus /tmp/c.jsonl

The corpus (benchmarks/make_corpus.py's fleet: interleaved workflows, delegation chains, token
refreshes, long batch jobs, ~5% attacks, 1% duplicate deliveries, bounded disorder) is written
to a file first, so generation is not timed. Replay output goes to a counting sink.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from pathlib import Path

from tether.bootstrap import monitor
from tether.demo.fleet import FleetConfig, iter_json_lines
from tether.replay import Replayer
from tether.settings import Settings

TARGET_EVENTS_PER_S = 50_000
DEFAULT_CORPUS = Path(__file__).resolve().parent / "out" / "fleet-1m.jsonl"


def rss_mb() -> float:
    """Current resident set size in MiB (from /proc; ru_maxrss is the peak)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def write_corpus(path: Path, events: int, seed: int) -> None:
    cfg = FleetConfig(seed=seed, workflows=10**9, attack_rate=0.05)
    with path.open("wb") as f:
        for i, line in enumerate(iter_json_lines(cfg)):
            if i >= events:
                break
            f.write(line + b"\n")


class Sink:
    """Counts output bytes and records (a stand-in for stdout that costs nothing)."""

    def __init__(self) -> None:
        self.records = 0
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.records += 1
        self.bytes += len(data)


def ensure_corpus(corpus: Path, events: int, seed: int) -> None:
    """Write the corpus unless ``corpus`` already holds at least ``events`` lines."""
    corpus.parent.mkdir(parents=True, exist_ok=True)
    if corpus.exists():
        with corpus.open("rb") as f:
            if sum(1 for _ in f) >= events:
                return
    t = time.perf_counter()
    write_corpus(corpus, events, seed)
    print(
        f"wrote {events:,} events to {corpus} in {time.perf_counter() - t:.1f}s",
        file=sys.stderr,
    )


def run(
    events: int = 1_000_000, seed: int = 7, corpus: Path = DEFAULT_CORPUS, samples: int = 10
) -> dict:
    """Replay ``events`` lines of the corpus (written first if needed); return the figures."""
    ensure_corpus(corpus, events, seed)
    mon = monitor(Settings(), decisions=False)  # default Cedar pack on
    sink = Sink()
    rep = Replayer(mon, sink.write, source=str(corpus))
    step = max(1, events // samples)
    profile: list[dict[str, float]] = []
    gc.collect()
    began = time.perf_counter()
    cpu_began = time.process_time()
    fed = 0
    with corpus.open("rb") as f:
        batch: list[bytes] = []
        for line in f:
            batch.append(line)
            if len(batch) == step:
                rep._run_fast(batch)  # the same loop `tether replay` runs
                fed += len(batch)
                batch.clear()
                profile.append(
                    {
                        "events": fed,
                        "rss_mb": round(rss_mb(), 1),
                        "sessions": len(mon.sessions),
                        "tokens": len(mon.tokens),
                        "elapsed_s": round(time.perf_counter() - began, 2),
                    }
                )
            if fed + len(batch) >= events:
                break
        if batch:
            rep._run_fast(batch)
            fed += len(batch)
    stats = rep.finish()
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu_began
    return {
        "benchmark": "P1 core replay",
        "events": stats.events,
        "dead_letters": stats.deadletters,
        "elapsed_s": round(elapsed, 2),
        "events_per_s": round(stats.events / elapsed),
        "cpu_s": round(cpu, 2),
        "events_per_cpu_s": round(stats.events / cpu) if cpu > 0 else None,
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "findings": sum(stats.findings.values()),
        "revocations": stats.revocations,
        "output_records": sink.records,
        "policy": "default Cedar pack",
        "python": sys.version.split()[0],
        "memory_profile": profile,
    }


def print_profile(result: dict) -> None:
    """The human summary, on stderr."""
    print(
        f"\nP1 core replay: {result['events']:,} events in {result['elapsed_s']:.1f}s = "
        f"{result['events_per_s']:,} events/s (target >= {TARGET_EVENTS_PER_S:,})",
        file=sys.stderr,
    )
    print(
        f"{'events':>10} {'rss MiB':>8} {'sessions':>9} {'tokens':>8} {'elapsed s':>9}",
        file=sys.stderr,
    )
    for row in result["memory_profile"]:
        print(
            f"{row['events']:>10,} {row['rss_mb']:>8} {row['sessions']:>9,} "
            f"{row['tokens']:>8,} {row['elapsed_s']:>9}",
            file=sys.stderr,
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--samples", type=int, default=10, help="memory samples along the run")
    args = ap.parse_args()
    result = run(args.events, args.seed, args.corpus, args.samples)
    print(json.dumps(result))
    print_profile(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
