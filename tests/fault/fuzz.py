"""A seeded fuzzer of hostile intents records, each with the dead-letter reason it must get.

Families: the named cases of ``tether.demo.malformed`` (truncated, wrong types, missing fields,
naive timestamps, bad enums, over-long ids...), plus oversized records, deeply nested JSON, random
type swaps and field drops anywhere in an event, invalid UTF-8 anywhere, binary and text
garbage, empty and null records, huge and non-finite numbers, over-long lists, control
characters, and valid events dated far in the worker's future (clock skew). Keys are hostile too
(none, empty, binary, long).

Every candidate is classified with the worker's own codec (``decode_event``, then the worker's
clock-skew rule); a candidate that turns out to be a valid event is drawn again, so every record
returned must become a dead letter, and the reason it must carry is known in advance.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from tether.demo.fleet import FleetConfig, iter_json_lines
from tether.demo.malformed import malformed_cases
from tether.models.codec import MAX_RECORD_BYTES, Rejected, decode_event

MAX_SKEW_S = 300.0  # the worker's default TETHER_MAX_SKEW_S
_INVALID_UTF8 = (
    b"\xff",
    b"\xfe\xff",
    b"\xc3\x28",
    b"\xa0\xa1",
    b"\xe2\x28\xa1",
    b"\xed\xa0\x80",  # an encoded UTF-16 surrogate
    b"\xf0\x28\x8c\x28",
    b"\xf8\xa1\xa1\xa1\xa1",
    b"\xc0\xaf",  # an overlong "/"
    b"\x80",
)


@dataclass(frozen=True, slots=True)
class Hostile:
    """One record to produce raw, and the dead-letter reason the worker must give it."""

    case: str
    key: bytes | None
    value: bytes | None
    reason: str


def templates(seed: int) -> dict[str, dict[str, Any]]:
    """One valid event of each type (the first of its type in a small benign fleet)."""
    found: dict[str, dict[str, Any]] = {}
    for line in iter_json_lines(FleetConfig(seed=seed, workflows=6, attack_rate=0.0)):
        doc = orjson.loads(line)
        kind = doc["event_type"]
        if kind not in found and (kind != "workflow.completed" or "credential" in doc):
            found[kind] = doc
    return found


def expected_reason(value: bytes | None, now: float) -> str | None:
    """The dead-letter reason the worker gives ``value`` (None: a valid event, not hostile).

    The worker turns an exception inside the codec into ``schema_violation`` ("internal
    error"); the codec promises never to raise, so that is reported as a finding, not hidden."""
    try:
        decoded = decode_event(value or b"")
    except Exception:  # the worker's own fallback for a codec that raised
        return "schema_violation:internal"
    if isinstance(decoded, Rejected):
        return decoded.reason
    if decoded.t > now + MAX_SKEW_S + 3600:  # far ahead of the clock: unambiguous
        return "clock_skew"
    return None


# -- mutations of a valid event ----------------------------------------------------------------


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document."""
    out: list[tuple[Any, ...]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append((*prefix, k))
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append((*prefix, i))
            out.extend(_paths(v, (*prefix, i)))
    return out


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    node = doc
    for step in path[:-1]:
        node = node[step]
    return node


_SCALARS: tuple[Callable[[random.Random], Any], ...] = (
    lambda _r: None,
    lambda r: r.choice([True, False]),
    lambda r: r.choice([0, -1, 1, 2**31, 2**63 - 1, -(2**63), 10**18]),
    lambda r: r.choice([0.5, -1e-300, 1e308, 3.14]),
    lambda _r: "",
    lambda r: "x" * r.randrange(1, 5000),
    lambda _r: "\u0000\u202e\ufeff",
    lambda _r: "1970-01-01T00:00:00Z",
    lambda r: "\U0001f600" * r.randrange(1, 300),
    lambda _r: [],
)


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON value: a scalar, or (not too deep) a small list or object of them."""
    pick = rng.randrange(len(_SCALARS) + (2 if depth < 2 else 0))
    if pick == len(_SCALARS):
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if pick == len(_SCALARS) + 1:
        return {"k": _random_value(rng, depth + 1)}
    return _SCALARS[pick](rng)


def _swap_type(rng: random.Random, doc: dict[str, Any]) -> bytes:
    path = rng.choice(_paths(doc))
    _parent(doc, path)[path[-1]] = _random_value(rng)
    return orjson.dumps(doc)


def _drop_field(rng: random.Random, doc: dict[str, Any]) -> bytes:
    path = rng.choice([p for p in _paths(doc) if isinstance(p[-1], str)])
    del _parent(doc, path)[path[-1]]
    return orjson.dumps(doc)


def _oversized(rng: random.Random, doc: dict[str, Any]) -> bytes:
    size = rng.choice([MAX_RECORD_BYTES + 1, rng.randrange(MAX_RECORD_BYTES, 300_000)])
    doc["padding"] = ""
    base = len(orjson.dumps(doc))
    doc["padding"] = "p" * max(0, size - base)
    return orjson.dumps(doc)


def _deep(rng: random.Random, doc: dict[str, Any]) -> bytes:
    depth = rng.choice([rng.randrange(129, 1500), rng.randrange(1500, 20_000)])
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    nested = opener * depth + b"1" + closer * depth
    if rng.random() < 0.5:
        return nested  # the whole record
    body = orjson.dumps(doc)  # inside an otherwise valid event, under an unknown field
    return body[:-1] + b',"nested":' + nested + b"}"


def _invalid_utf8(rng: random.Random, doc: dict[str, Any]) -> bytes:
    body = orjson.dumps(doc)
    at = rng.randrange(1, len(body) - 1)
    if rng.random() < 0.7:  # inside a string value
        quote = body.find(b'"', at)
        at = quote + 1 if 0 <= quote < len(body) - 1 else at
    return body[:at] + rng.choice(_INVALID_UTF8) + body[at:]


def _huge_number(rng: random.Random, doc: dict[str, Any]) -> bytes:
    field = rng.choice(["schema_version", "occurred_at", "event_id", "workflow_id"])
    number = rng.choice([b"1e400", b"-1e400", b"9" * 400, b"1" + b"0" * 30, b"NaN", b"Infinity"])
    doc[field] = "@@N@@"
    return orjson.dumps(doc).replace(b'"@@N@@"', number, 1)


def _long_list(rng: random.Random, doc: dict[str, Any]) -> bytes:
    doc["credential"]["scopes"] = [f"s{i}" for i in range(rng.randrange(257, 2000))]
    return orjson.dumps(doc)


def _control_chars(rng: random.Random, doc: dict[str, Any]) -> bytes:
    body = orjson.dumps(doc)
    at = body.find(b'"workflow_id":"') + len(b'"workflow_id":"')
    return body[:at] + bytes([rng.randrange(0, 32)]) + body[at:]


def _future(rng: random.Random, doc: dict[str, Any]) -> bytes:
    now = datetime.now(UTC)
    when = rng.choice(
        [
            now + timedelta(hours=rng.uniform(2, 48)),
            now + timedelta(days=rng.uniform(2, 3650)),
            datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
        ]
    )
    doc["occurred_at"] = when.isoformat()
    doc["event_id"] = f"skew-{rng.randrange(10**12)}"
    return orjson.dumps(doc)


_GARBAGE: tuple[Callable[[random.Random], bytes], ...] = (
    lambda r: r.randbytes(r.randrange(1, 4096)),
    lambda r: bytes(r.choice(b"{}[]:,\"'\\ abc123") for _ in range(r.randrange(1, 400))),
    lambda _r: b"<event><type>tool_call.intent</type></event>",
    lambda _r: b"schema_version: 1\nevent_type: tool_call.intent\n",
    lambda _r: b'{"schema_version":1,}',
    lambda _r: b'{"schema_version":1}{"schema_version":1}',
    lambda r: b"\xef\xbb\xbf" + b"\x00" * r.randrange(1, 64),
)


def _garbage(rng: random.Random, _doc: dict[str, Any]) -> bytes:
    return rng.choice(_GARBAGE)(rng)


def _as_string(_rng: random.Random, doc: dict[str, Any]) -> bytes:
    return orjson.dumps(orjson.dumps(doc).decode())  # the event, quoted as one JSON string


Mutation = Callable[[random.Random, dict[str, Any]], bytes]
MUTATIONS: tuple[tuple[str, Mutation, int], ...] = (  # name, mutation, weight
    ("swap_type", _swap_type, 20),
    ("drop_field", _drop_field, 10),
    ("oversized", _oversized, 2),
    ("deeply_nested", _deep, 6),
    ("invalid_utf8", _invalid_utf8, 8),
    ("huge_number", _huge_number, 5),
    ("long_list", _long_list, 2),
    ("control_char", _control_chars, 3),
    ("clock_skew", _future, 8),
    ("garbage", _garbage, 8),
    ("event_as_string", _as_string, 2),
)


def _key(rng: random.Random, value: bytes | None) -> bytes | None:
    pick = rng.randrange(6)
    if pick == 0:
        return None
    if pick == 1:
        return b""
    if pick == 2:
        return rng.randbytes(rng.randrange(1, 64))
    if pick == 3:
        return b"k" * 4096
    try:
        wf = orjson.loads(value or b"").get("workflow_id")
    except (orjson.JSONDecodeError, AttributeError):
        wf = None
    return wf.encode() if isinstance(wf, str) else b"wf-hostile"


def hostile_records(n: int, seed: int, *, now: float | None = None) -> list[Hostile]:
    """``n`` hostile records (seeded), about a third from ``tether.demo.malformed``'s named
    cases, the rest from the mutations above, a few empty and null records."""
    rng = random.Random(f"tether-fault-fuzz:{seed}")
    clock = now if now is not None else datetime.now(UTC).timestamp()
    base = templates(seed)
    kinds = sorted(base)
    named = iter(malformed_cases(seed, n))
    weighted = [m for m in MUTATIONS for _ in range(m[2])]
    out: list[Hostile] = []
    while len(out) < n:
        roll = rng.random()
        value: bytes | None
        if roll < 0.33:
            case, value = next(named)
            case = f"malformed:{case}"
        elif roll < 0.35:
            case, value = rng.choice([("empty", b""), ("null", None)])
        else:
            name, mutate, _ = rng.choice(weighted)
            doc = orjson.loads(orjson.dumps(base[rng.choice(kinds)]))
            doc["event_id"] = f"fz-{seed}-{len(out)}"
            case, value = name, mutate(rng, doc)
        reason = expected_reason(value, clock)
        if reason is None:
            continue  # the mutation left a valid event: draw again
        out.append(Hostile(case, _key(rng, value), value, reason))
    return out
