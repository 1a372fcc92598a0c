"""Write a synthetic fleet's telemetry as JSON Lines, for throughput benchmarks and replays.

Run: `python benchmarks/make_corpus.py --events 1000000 --out benchmarks/out/fleet.jsonl`.
`--malformed K` mixes K hostile lines (dead-letter material) in at seeded positions.
`--workflows W --truth PATH` writes whole workflows instead of a fixed event count, plus
the ground truth (`{workflow_id: [finding codes]}`) a replay's findings must match.
"""

from __future__ import annotations

import argparse
import itertools
import random
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

import orjson

from tether.demo.fleet import FleetConfig, ground_truth, iter_json_lines, malformed_lines

_CHUNK = 8192
#: Rough mean of a workflow slot's events, to spread malformed lines over a --workflows run.
_EVENTS_PER_WORKFLOW = 25


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000, help="valid event lines to write")
    p.add_argument("--workflows", type=int, help="write this many whole workflows instead")
    p.add_argument("--out", type=Path, required=True, help="JSON Lines file to write")
    p.add_argument("--truth", type=Path, help="with --workflows: write the ground truth here")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--malformed", type=int, default=0, help="hostile lines to mix in")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--attack-rate", type=float, default=0.05)
    p.add_argument("--disorder", type=float, default=2.0, help="seconds, below the 5 s grace")
    p.add_argument("--duplicate-rate", type=float, default=0.01)
    p.add_argument("--start", type=datetime.fromisoformat, help="RFC 3339 start (with offset)")
    args = p.parse_args(argv)
    if args.truth and args.workflows is None:
        p.error("--truth needs --workflows (a cut-off stream has no exact ground truth)")
    return args


def _config(args: argparse.Namespace) -> FleetConfig:
    extra = {"start": args.start} if args.start else {}
    return FleetConfig(
        seed=args.seed,
        workflows=args.workflows if args.workflows is not None else 10**12,
        concurrency=args.concurrency,
        attack_rate=args.attack_rate,
        disorder=args.disorder,
        duplicate_rate=args.duplicate_rate,
        **extra,
    )


def _mixed(valid: Iterable[bytes], bad: list[bytes], expected: int, seed: int) -> Iterator[bytes]:
    """`valid` with `bad` spliced in at seeded positions spread over about `expected` lines."""
    rng = random.Random(f"make-corpus:{seed}")
    positions = sorted(rng.randint(0, expected) for _ in bad)
    stream = iter(valid)
    done = 0
    for position, line in zip(positions, bad, strict=True):
        yield from itertools.islice(stream, position - done)
        done = position
        yield line
    yield from stream


def write_corpus(lines: Iterable[bytes], out: Path) -> int:
    """Write newline-terminated `lines` to `out`; return how many were written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with out.open("wb") as fh:
        it = iter(lines)
        while chunk := list(itertools.islice(it, _CHUNK)):
            fh.write(b"\n".join(chunk) + b"\n")
            written += len(chunk)
    return written


def main(argv: list[str] | None = None) -> int:
    """Generate, write and time the corpus."""
    args = _parse(argv)
    config = _config(args)
    valid: Iterable[bytes] = iter_json_lines(config)
    expected = _EVENTS_PER_WORKFLOW * args.workflows if args.workflows else args.events
    if args.workflows is None:
        valid = itertools.islice(valid, args.events)
    bad = malformed_lines(args.seed, args.malformed)
    began = time.perf_counter()
    written = write_corpus(_mixed(valid, bad, expected, args.seed), args.out)
    elapsed = time.perf_counter() - began
    events = written - len(bad)
    print(
        f"wrote {written:,} lines ({events:,} events, {len(bad):,} malformed) to {args.out}"
        f" in {elapsed:.2f}s: {events / elapsed:,.0f} events/s"
    )
    if args.truth:
        truth = {wf: sorted(codes) for wf, codes in ground_truth(config).items()}
        args.truth.write_bytes(orjson.dumps(truth, option=orjson.OPT_SORT_KEYS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
