"""Time `codec.decode_event` on hostile records: µs per record for each shape, beside a plain event.

Run: `python benchmarks/hostile_records.py [--repeat 20]`. Every hostile record is a valid
`tool_call.intent` carrying one unknown field that pydantic's JSON parser cannot hold (nested
past its 200 levels, a lone surrogate, a 4,400-digit integer), filled to the 64 KiB record bound
where the shape allows: such a record takes the codec's second look (`models/known_fields.py`)
and must decode to the plain event. A plain event and one with an invalid known field (the
ordinary dead-letter path) are timed for scale. Process time, best of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import orjson

from tether.models.codec import MAX_RECORD_BYTES, decode_event

T0 = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)


def _iso(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


PLAIN = orjson.dumps(
    {
        "schema_version": 1,
        "event_type": "tool_call.intent",
        "event_id": "e-1",
        "occurred_at": _iso(1),
        "workflow_id": "wf-1",
        "agent": {"workload_id": "spiffe://acme.example/agent/planner"},
        "credential": {
            "token_id": "tok-1",
            "issuer": "https://sts.acme.example",
            "subject": "spiffe://acme.example/agent/planner",
            "scopes": ["crm:read"],
            "issued_at": _iso(-60),
            "expires_at": _iso(600),
        },
        "action": {
            "tool": "crm.search",
            "operation": "read",
            "resource": "crm://accounts/123",
            "destination": "crm.internal",
            "data_sensitivity": "internal",
        },
    }
)
ROOM = MAX_RECORD_BYTES - len(PLAIN) - 16


def _with(raw: bytes) -> bytes:
    return PLAIN[:-1] + b',"x":' + raw + b"}"


def _deep(unit_open: bytes, unit_close: bytes, inner: bytes = b"1", room: int = ROOM) -> bytes:
    n = (room - len(inner)) // (len(unit_open) + len(unit_close))
    return unit_open * n + inner + unit_close * n


def _wide(item: bytes, room: int) -> bytes:
    return b"[" + b",".join([item] * ((room - 2) // (len(item) + 1))) + b"]"


def shapes() -> dict[str, bytes]:
    """Shape name -> record."""
    wrap = 1100  # past the C scanner's recursion limit
    inner_room = ROOM - 2 * wrap
    return {
        "plain event (fast path)": PLAIN,
        "invalid known field (dead letter)": PLAIN.replace(b'"read"', b'"sudo"'),
        "lone surrogate": _with(b'"\\ud800"'),
        "4,400-digit integer": _with(b"7" * 4400),
        "array nested 201 deep": _with(_deep(b"[", b"]", room=402)),
        "array nested to 64 KiB": _with(_deep(b"[", b"]")),
        'object {"":... nested to 64 KiB': _with(_deep(b'{"":', b"}")),
        '[{"k":[ nested to 64 KiB': _with(_deep(b'[{"k":', b"}]")),
        "arrays 201 deep, side by side": _with(_wide(_deep(b"[", b"]", room=402), ROOM)),
        "deep, then 30k numbers": _with(b"[" * wrap + _wide(b"1", inner_room) + b"]" * wrap),
        "deep, then [[1]] x 10k": _with(b"[" * wrap + _wide(b"[[1]]", inner_room) + b"]" * wrap),
        "deep, then [[[1]]] x 8k (worst found)": _with(
            b"[" * wrap + _wide(b"[[[1]]]", inner_room) + b"]" * wrap
        ),
        "deep, whitespace between": _with(_deep(b"[ ", b"] ")),
        "[1,[1,[1,... chain": _with(_deep(b"[1,", b"]")),
        "[[[1],2],3]... chain": _with(b"[" * (ROOM // 4) + b"1" + b"],2" * (ROOM // 4 - 1) + b"]"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    plain = decode_event(PLAIN)
    print(f"{'shape':38s} {'bytes':>6s}  {'result':16s} {'µs/record':>10s}")
    for name, data in shapes().items():
        got = decode_event(data)
        expected_ok = not name.startswith("invalid")
        if len(data) > MAX_RECORD_BYTES or (got == plain) != expected_ok:
            raise SystemExit(f"{name}: wrong shape or result: {getattr(got, 'error', got)}")
        n = max(1, min(2000, 2_000_000 // len(data)))
        best = float("inf")
        for _ in range(args.repeat):
            began = time.process_time()
            for _ in range(n):
                decode_event(data)
            best = min(best, (time.process_time() - began) / n)
        print(f"{name:38s} {len(data):6d}  {type(got).__name__:16s} {best * 1e6:10.1f}")


if __name__ == "__main__":
    main()
