"""Time `Watcher.is_revoked` with 1,000,000 live revocations: µs per call, hit and miss.

Run: `python benchmarks/watcher_lookup.py [--live 1000000] [--calls 1000000]`. The set is filled
directly (no broker); the lookup is the same code a running watcher answers with.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from datetime import UTC, datetime

from tether.models.outputs import Heartbeat
from tether.sdk.revocation_set import TARGET_KINDS
from tether.sdk.watcher import Watcher
from tether.settings import Settings


def fill(watcher: Watcher, live: int) -> list[str]:
    """Revoke `live` targets (mostly tokens) for an hour; return the revoked token ids."""
    until = time.time() + 3600
    tokens = []
    revocations = watcher.revocations
    for i in range(live):
        kind = TARGET_KINDS[i % 8] if i % 8 < 4 else "token"
        ident = f"jti-{i:08d}-{random.getrandbits(32):08x}"
        revocations.revoke(kind, ident, until)
        if kind == "token":
            tokens.append(ident)
    revocations.mark_ready()
    now = datetime.now(UTC)
    revocations.heartbeat(Heartbeat(emitted_at=now, source="bench"))
    return tokens


def per_call(label: str, calls: int, run, echo=print) -> float:
    """Time `run()` (which makes `calls` lookups) after a warm-up; print and return µs/call."""
    run()
    gc.disable()
    start = time.perf_counter()
    run()
    elapsed = time.perf_counter() - start
    gc.enable()
    micros = elapsed / calls * 1e6
    echo(f"{label:52s} {micros:6.3f} µs/call")
    return micros


def run(live: int = 1_000_000, calls: int = 1_000_000, echo=print) -> dict:
    """Fill a watcher with `live` revocations, time the lookups; return µs/call per case."""
    watcher = Watcher(Settings(), staleness_s=3600)  # never started: no broker needed
    t0 = time.perf_counter()
    tokens = fill(watcher, live)
    echo(
        f"filled {len(watcher.revocations):,} live revocations in {time.perf_counter() - t0:.1f} s"
    )
    # 100,000 distinct ids per case, spread over the whole set (not a cache-warm handful)
    hits = random.sample(tokens, min(100_000, len(tokens)))
    misses = [f"unknown-{i:08d}" for i in range(len(hits))]
    rounds = max(1, calls // len(hits))
    is_revoked = watcher.is_revoked
    if not all(is_revoked(token_id=t) for t in hits) or any(is_revoked(token_id=t) for t in misses):
        raise SystemExit("lookup answered wrongly")

    def token_hit() -> None:
        for _ in range(rounds):
            for t in hits:
                is_revoked(token_id=t)

    def token_miss() -> None:
        for _ in range(rounds):
            for t in misses:
                is_revoked(token_id=t)

    def three_ids_miss() -> None:
        for _ in range(rounds):
            for t in misses:
                is_revoked(token_id=t, workflow_id=t, workload_id=t)

    def baseline() -> None:
        for _ in range(rounds):
            for t in misses:
                _noop(token_id=t)

    made = rounds * len(hits)
    echo(f"{live:,} live revocations, {made:,} calls per case")
    return {
        "benchmark": "P4 Watcher.is_revoked",
        "live_revocations": len(watcher.revocations),
        "calls_per_case": made,
        "python_call_overhead_us": per_call(
            "empty loop + no-op call (Python call overhead)", made, baseline, echo
        ),
        "token_hit_us": per_call("is_revoked(token_id=…) hit", made, token_hit, echo),
        "token_miss_us": per_call("is_revoked(token_id=…) miss", made, token_miss, echo),
        "three_ids_miss_us": per_call(
            "is_revoked(token_id=, workflow_id=, workload_id=) miss", made, three_ids_miss, echo
        ),
    }


def main() -> None:
    """Print µs/call for hits and misses, token-only and with all three identities."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--live", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=1_000_000)
    args = parser.parse_args()
    run(args.live, args.calls)


def _noop(token_id: str | None = None) -> bool:
    return False


if __name__ == "__main__":
    main()
