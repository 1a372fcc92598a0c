"""Issue 18, items 5 and 12, through Kafka: a worker reads hostile unknown fields and malformed
timestamps exactly as ``tether replay`` does (same outputs, same dead letters)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from pipeline import Pipeline, collect_expected, identity, replay_records

from tether.demo.fleet import FleetConfig, iter_json_lines

HOSTILE = [
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 300 + b"1" + b"}" * 300,
    b'"\\ud800"',
    b"9" * 4400,
]
BAD_TIMESTAMPS = [
    "1795860001",
    "2026-11-28T14:00Z",
    "2026-11-28T14:00:00+0000",
    "9999-12-31T23:59:59Z",
]


@pytest.fixture
def pipe(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    yield p
    p.stop_all()


def test_the_worker_ignores_hostile_unknown_fields_and_dead_letters_bad_timestamps(
    pipe: Pipeline,
) -> None:
    start = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    cfg = FleetConfig(seed=11, workflows=40, attack_rate=0.3, start=start)
    lines = list(iter_json_lines(cfg))
    hostile = [
        line[:-1] + b',"x_extra":' + HOSTILE[i % len(HOSTILE)] + b"}"
        for i, line in enumerate(lines)
    ]
    for i, value in enumerate(BAD_TIMESTAMPS):
        doc = orjson.loads(lines[i * 7])
        doc["occurred_at"] = value
        hostile.append(orjson.dumps(doc))
    expected = replay_records(hostile)
    plain = replay_records(lines)
    assert len(expected["deadletter"]) == len(BAD_TIMESTAMPS)
    assert all("occurred_at" in d["error"] for d in expected["deadletter"])
    assert identity({**plain, "deadletter": []}) == identity({**expected, "deadletter": []})
    pipe.start_worker("w1")
    pipe.wait_heartbeat("w1")
    pipe.produce(hostile)
    got = collect_expected(pipe, expected)
    assert identity(got) == identity(expected)
