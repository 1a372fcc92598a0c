"""Every path into the core reads a record the same way (issue 18, items 5 and 12): ``tether
replay``'s lines, the worker's Kafka records (both through ``codec.decode_event``) and the
SDK's ``validate_event``. Hostile unknown fields change no output; malformed timestamps are
dead letters naming the field."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest

from builders import call, completed, delegate, started
from tether.core import Context, DetectionConfig, Monitor
from tether.replay import Replayer
from tether.sdk.events import InvalidEventError, validate_event

SCENARIO = [
    started("wf-1", "planner", "tok-p"),
    delegate("wf-1", "planner", "researcher", "tok-p"),
    call("wf-1", "researcher", "tok-r", t=2),
    call("wf-1", "summarizer", "tok-s", t=3),  # undelegated: a finding and revocations
    call("wf-1", "planner", "tok-p", t=4, tool="crm.export", destination="s3://x"),
    completed("wf-1", "planner", "tok-p", t=10),
]

HOSTILE = [
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 300 + b"1" + b"}" * 300,
    b'"\\ud800"',
    b"9" * 4400,
    b"1e400",
]


def replay(lines: list[bytes]) -> list[dict[str, Any]]:
    out = io.BytesIO()
    rep = Replayer(Monitor(Context(DetectionConfig())), out.write, decisions=True)
    rep.run(io.BytesIO(b"".join(line + b"\n" for line in lines)))
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def with_unknown(event: dict[str, Any], raw: bytes) -> bytes:
    data = orjson.dumps(event)
    cred = data.index(b'"credential":{') + len(b'"credential":{') if b'"credential"' in data else 0
    data = data[:-1] + b',"x_top":' + raw + b"}"
    if cred:
        data = data[:cred] + b'"x_cred":' + raw + b"," + data[cred:]
    return data


@pytest.mark.parametrize(
    "raw", HOSTILE, ids=["deep array", "deep object", "surrogate", "4400 digits", "1e400"]
)
def test_replay_outputs_are_unchanged_by_hostile_unknown_fields(raw: bytes) -> None:
    plain = replay([orjson.dumps(e) for e in SCENARIO])
    hostile = replay([with_unknown(e, raw) for e in SCENARIO])
    assert not [r for r in hostile if r["kind"] == "deadletter"]
    assert {r["kind"] for r in plain} >= {"finding", "revocation", "decision"}
    assert hostile == plain


@pytest.mark.parametrize(
    ("path", "value"),
    [("occurred_at", "1795860001"), ("credential.expires_at", "99999999999"),
     ("occurred_at", "2026-11-28T14:00Z"), ("credential.expires_at", "9999-12-31T23:59:59Z"),
     ("occurred_at", "0001-01-01T00:30:00+01:00")],
)  # fmt: skip
def test_replay_dead_letters_a_malformed_timestamp_and_goes_on(path: str, value: str) -> None:
    bad = orjson.loads(orjson.dumps(SCENARIO[3]))
    node = bad
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    records = replay([orjson.dumps(e) for e in SCENARIO[:3]] + [orjson.dumps(bad)])
    (dead,) = [r for r in records if r["kind"] == "deadletter"]
    assert dead["reason"] == "schema_violation"
    assert path in dead["error"]
    assert dead["source"]["line"] == 4
    # the line that was dead-lettered raised nothing: no undelegated_actor for the summarizer
    assert not [r for r in records if r["kind"] == "finding"]


def test_the_sdk_accepts_what_the_pipeline_accepts() -> None:
    doc = orjson.loads(orjson.dumps(SCENARIO[2]))
    doc["x"] = {"big": 2**200, "text": "\ud800", "deep": [[[[[]]]]]}
    event = validate_event(doc)
    assert event == validate_event(SCENARIO[2])


@pytest.mark.parametrize("value", ["1795860001", "2026-11-28T14:00Z", "9999-12-31T23:59:59Z"])
def test_the_sdk_refuses_what_the_pipeline_dead_letters(value: str) -> None:
    doc = orjson.loads(orjson.dumps(SCENARIO[2]))
    doc["occurred_at"] = value
    with pytest.raises(InvalidEventError, match="occurred_at"):
        validate_event(doc)
