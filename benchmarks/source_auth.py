"""P1 with and without source authentication, in the same run: the cost of ``enforce`` mode.

Replays the P1 corpus (benchmarks/core_replay.py's fleet, default Cedar pack on) twice per
round: unsigned without a registry, and signed by a registered gateway source with the gate in
``enforce`` mode (every record's HMAC proof checked, every assertion authorized). The two take
turns every 5,000 events, so that both see the same machine; the ratio printed is the median
round's, the events/s those of the fastest round. Then prints
what one verification per event would cost with each signature scheme tether could have used,
beside the fold's own cost per event (docs/SECURITY.md, "Why HMAC").

    .venv/bin/python benchmarks/source_auth.py                     # 300,000 events, 3 rounds
    .venv/bin/python benchmarks/source_auth.py --events 1000000 --rounds 2

Target (issue 17): P1 with verification >= 70 % of P1 without.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from core_replay import DEFAULT_CORPUS, Sink, ensure_corpus

from tether.bootstrap import monitor
from tether.demo.sources import fleet_sources
from tether.models.codec import Rejected
from tether.replay import Replayer
from tether.security.gate import SourceGate
from tether.settings import Settings

TARGET_RATIO = 0.70


CHUNK = 5000  # events per turn: the two replays take turns, so both see the same machine


def paired(plain: list[bytes], signed: list[bytes], gate: SourceGate) -> dict[str, float]:
    """Replay ``plain`` without a gate and ``signed`` through ``gate`` in alternating chunks
    (the machine is shared: load that comes and goes hits both alike); events/s of each."""
    reps = []
    for with_gate in (False, True):
        mon = monitor(Settings(), decisions=False)  # default Cedar pack on
        reps.append(Replayer(mon, Sink().write, gate=gate if with_gate else None))
    spent = [0.0, 0.0]
    cpu = [0.0, 0.0]
    gc.collect()
    for at in range(0, len(plain), CHUNK):
        for i, lines in ((0, plain), (1, signed)):
            began, cpu_began = time.perf_counter(), time.process_time()
            reps[i]._run_fast(lines[at : at + CHUNK])  # the loop `tether replay` runs
            spent[i] += time.perf_counter() - began
            cpu[i] += time.process_time() - cpu_began
    out = {}
    for i, name in ((0, "without"), (1, "with")):
        began, cpu_began = time.perf_counter(), time.process_time()
        stats = reps[i].finish()
        spent[i] += time.perf_counter() - began
        cpu[i] += time.process_time() - cpu_began
        out[name] = stats.events / spent[i]
        out[f"{name}_cpu"] = stats.events / cpu[i]
        out[f"{name}_events"] = stats.events
        out[f"{name}_dead_letters"] = stats.deadletters
    return out


def per_call_us(fn: Callable[[], object], n: int) -> float:
    began = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - began) / n * 1e6


def scheme_costs(record: bytes) -> dict[str, float]:
    """Microseconds to verify one record's proof with each scheme (one record, many times)."""
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa  # noqa: PLC0415

    from tether.core import Outbox  # noqa: PLC0415
    from tether.models.codec import decode_event  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        key, gate = fleet_sources(Path(tmp), Settings().detection())
        signed = key.sign(record)
        event = decode_event(signed)
        assert not isinstance(event, Rejected)  # noqa: S101
        out = Outbox()
        gate.admit(signed, event, lambda _wf: None, 0.0, out)  # learns the header

        def hs256() -> object:
            return gate.admit(signed, event, lambda _wf: None, 0.0, out)

        gate_us = per_call_us(hs256, 20000)

    ed = ed25519.Ed25519PrivateKey.generate()
    ed_sig = ed.sign(record)
    ed_pub = ed.public_key()
    p256 = ec.generate_private_key(ec.SECP256R1())
    es_sig = p256.sign(record, ec.ECDSA(hashes.SHA256()))
    es_pub = p256.public_key()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rs_sig = rsa_key.sign(record, padding.PKCS1v15(), hashes.SHA256())
    rs_pub = rsa_key.public_key()
    return {
        "HS256 (tether's gate: proof + rules + label)": gate_us,
        "EdDSA (Ed25519) verify": per_call_us(lambda: ed_pub.verify(ed_sig, record), 3000),
        "ES256 (P-256) verify": per_call_us(
            lambda: es_pub.verify(es_sig, record, ec.ECDSA(hashes.SHA256())), 2000
        ),
        "RS256 (RSA-2048) verify": per_call_us(
            lambda: rs_pub.verify(rs_sig, record, padding.PKCS1v15(), hashes.SHA256()), 2000
        ),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--json", action="store_true", help="print only the JSON result")
    args = ap.parse_args()

    ensure_corpus(args.corpus, args.events, args.seed)
    with args.corpus.open("rb") as f:
        plain = [line for _, line in zip(range(args.events), f, strict=False)]
    with tempfile.TemporaryDirectory() as tmp:
        key, gate = fleet_sources(Path(tmp), Settings().detection())
        signed = [key.sign(line.rstrip(b"\n")) + b"\n" for line in plain]
        without: list[float] = []
        with_auth: list[float] = []
        cpu_without: list[float] = []
        cpu_with: list[float] = []
        counts: dict[str, tuple[float, float]] = {}
        for _ in range(args.rounds):
            fresh = SourceGate(gate.registry, None, gate.cfg)  # fresh caches each round
            r = paired(plain, signed, fresh)
            without.append(r["without"])
            with_auth.append(r["with"])
            cpu_without.append(r["without_cpu"])
            cpu_with.append(r["with_cpu"])
            counts["without"] = (r["without_events"], r["without_dead_letters"])
            counts["with"] = (r["with_events"], r["with_dead_letters"])
    sample = plain[len(plain) // 2].rstrip(b"\n")
    costs = scheme_costs(sample)
    ratios = [w / o for w, o in zip(with_auth, without, strict=True)]
    best = max(range(len(ratios)), key=lambda i: without[i])  # the least disturbed round
    best_without, best_with = without[best], with_auth[best]
    ratio = sorted(ratios)[len(ratios) // 2]  # the median round's ratio
    cpu_ratios = [w / o for w, o in zip(cpu_with, cpu_without, strict=True)]
    cpu_ratio = sorted(cpu_ratios)[len(cpu_ratios) // 2]
    result = {
        "benchmark": "P1 with and without source authentication (enforce)",
        "events": args.events,
        "rounds": args.rounds,
        "p1_without_events_per_s": round(best_without),
        "p1_with_events_per_s": round(best_with),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "verdict": "PASS" if ratio >= TARGET_RATIO else "FAIL",
        "rounds_without": [round(x) for x in without],
        "rounds_with": [round(x) for x in with_auth],
        "rounds_ratio": [round(x, 3) for x in ratios],
        "cpu_ratio": round(cpu_ratio, 3),
        "rounds_cpu_ratio": [round(x, 3) for x in cpu_ratios],
        "cpu_verdict": "PASS" if cpu_ratio >= TARGET_RATIO else "FAIL",
        "applied_and_dead_letters": counts,
        "fold_us_per_event": round(1e6 / best_without, 1),
        "verify_us_per_event": {k: round(v, 1) for k, v in costs.items()},
        "record_bytes": len(sample),
        "python": sys.version.split()[0],
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    print()
    print(f"rounds' ratios           {', '.join(f'{r:.1%}' for r in ratios)}")
    print(f"P1 without verification  {best_without:>10,.0f} events/s")
    print(f"P1 with verification     {best_with:>10,.0f} events/s")
    print(
        f"ratio (median round)     {ratio:>10.1%}  (target >= {TARGET_RATIO:.0%}: {result['verdict']})"
    )
    print(
        f"ratio in CPU time        {cpu_ratio:>10.1%}  (rounds {', '.join(f'{r:.1%}' for r in cpu_ratios)};"
        f" {result['cpu_verdict']}: on a shared machine wall time also counts waits for a core)"
    )
    print(f"fold, per event          {1e6 / best_without:>10.1f} µs")
    for name, us in costs.items():
        print(f"{name:<36} {us:>7.1f} µs/event  ({us * best_without / 1e6:.0%} of the fold)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
