"""What the decisions' hash chain costs: µs per decision to link (on the worker's event loop),
the bytes it adds, verification throughput, and one signed checkpoint.

Run: `python benchmarks/audit_chain.py [--decisions 200000]`. Pure CPU (no broker): the same
code the worker runs per decision (`ChainHeads.seal` after `encode`) and `tether audit verify`
runs per record (`verify_log`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime

from tether.audit.chain import ChainHeads
from tether.audit.checkpoint import CheckpointSigner, keys_of
from tether.audit.verify import Entry, verify_log
from tether.models.codec import encode
from tether.models.outputs import Decision
from tether.security import SetSigner, generate_key


def decisions(n: int) -> list[Decision]:
    t = datetime.now(UTC)
    return [
        Decision(
            event_id=f"01JDX3Q9V7K2{i:08d}",
            workflow_id=f"wf-{i % 5000:05d}",
            workload_id="spiffe://acme.example/ns/agents/sa/crm-agent",
            tool="crm.search",
            decision="allow" if i % 10 else "deny",
            findings=[] if i % 10 else ["scope_escalation"],
            policy_ids=["default.crm-read"],
            policy_revision="sha256:1f2e3d",
            evaluated_at=t,
        )
        for i in range(n)
    ]


def best_of(runs: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    n, parts = args.decisions, args.partitions
    ds = decisions(n)

    def encode_only() -> list[bytes]:
        return [encode(d) for d in ds]

    def encode_and_seal() -> list[bytes]:
        heads = ChainHeads()
        for p in range(parts):
            heads.set_head(p, None)
        seal = heads.seal
        return [seal(i % parts, encode(d))[0] for i, d in enumerate(ds)]

    plain = encode_only()
    sealed = encode_and_seal()
    t_plain = best_of(3, encode_only)
    t_sealed = best_of(3, encode_and_seal)
    added = (sum(map(len, sealed)) - sum(map(len, plain))) / n
    print(f"decisions                         {n:,} on {parts} partitions")
    print(f"encode                            {t_plain / n * 1e6:7.2f} µs/decision")
    print(f"encode + link (worker's path)     {t_sealed / n * 1e6:7.2f} µs/decision")
    print(f"the link alone                    {(t_sealed - t_plain) / n * 1e6:7.2f} µs/decision")
    print(
        f"bytes per decision                {sum(map(len, plain)) / n:7.0f} -> "
        f"{sum(map(len, sealed)) / n:.0f} (+{added:.0f})"
    )

    entries = [Entry(v, f"offset {i // parts}", i % parts) for i, v in enumerate(sealed)]
    t_verify = best_of(2, lambda: verify_log(entries))
    print(
        f"verify (links, order)             {t_verify / n * 1e6:7.2f} µs/record "
        f"({n / t_verify:,.0f} records/s)"
    )

    for alg in ("RS256", "ES256"):
        checkpoint_cost(alg, plain[0])


def checkpoint_cost(alg: str, body: bytes, reps: int = 200) -> None:
    """Print what signing and verifying one checkpoint costs with an ``alg`` key."""
    signer = SetSigner(generate_key(alg), issuer="urn:tether:bench")
    cps = CheckpointSigner(signer)
    heads = ChainHeads()
    heads.set_head(0, None)
    _, link = heads.seal(0, body)
    t_sign = best_of(3, lambda: [cps.sign(link, log="t", worker="w", now=0) for _ in range(reps)])
    tokens = [(cps.sign(link, log="t", worker="w", now=0), "cp")] * reps
    keys = keys_of({"keys": [signer.public_jwk()]})
    t_check = best_of(3, lambda: verify_log([], tokens, keys))
    print(
        f"checkpoint {alg}: sign {t_sign / reps * 1e3:6.3f} ms, verify "
        f"{t_check / reps * 1e3:6.3f} ms (one per partition per TETHER_AUDIT_CHECKPOINT_S)"
    )


if __name__ == "__main__":
    main()
