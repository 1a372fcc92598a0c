"""`tether demo --write FILE`: the quick start's events.jsonl, replayable to the fleet's ground truth.

A new user has no telemetry; the quick start makes some with this command and then runs
`tether replay` (and `tether emit`) on it, so the file must be a valid, seeded sample whose
replay catches every injected attack, raises nothing on benign workflows and dead-letters only
the malformed lines, and whose events a streaming worker accepts (none dated ahead of now).
"""

from __future__ import annotations

import io
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import orjson
from click.testing import CliRunner

from tether.cli import main
from tether.demo.fleet import FleetConfig, ground_truth
from tether.demo.sample import write_sample

START = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)


def _sample(**options: object) -> bytes:
    out = io.BytesIO()
    write_sample(out, start=START, **options)  # type: ignore[arg-type]
    return out.getvalue()


def test_the_sample_replays_to_its_ground_truth(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(_sample(workflows=80, seed=11, attack_rate=0.3))
    result = CliRunner().invoke(main, ["replay", "-q", str(path)])
    assert result.exit_code == 0, result.output
    records = [orjson.loads(line) for line in result.stdout.splitlines()]
    found: dict[str, set[str]] = defaultdict(set)
    for record in records:
        if record["kind"] == "finding":
            found[record["workflow_id"]].add(record["code"])
    truth = ground_truth(FleetConfig(seed=11, workflows=80, attack_rate=0.3, start=START))
    assert any(truth.values()), "the sample should carry attacks"
    assert {wf: set(codes) for wf, codes in truth.items() if codes} == dict(found)
    assert sum(1 for r in records if r["kind"] == "deadletter") == 3


def test_the_same_seed_and_start_give_the_same_bytes():
    assert _sample(workflows=20, seed=3) == _sample(workflows=20, seed=3)
    assert _sample(workflows=20, seed=3) != _sample(workflows=20, seed=4)


def test_demo_write_makes_a_file_a_worker_accepts(tmp_path):
    path = tmp_path / "events.jsonl"
    result = CliRunner().invoke(main, ["demo", "--write", str(path), "--workflows", "25"])
    assert result.exit_code == 0, result.output
    assert f"to {path}" in result.stderr
    now = datetime.now(UTC)
    lines = path.read_bytes().splitlines()
    dates = []
    for line in lines:
        try:
            doc = orjson.loads(line)
            dates.append(datetime.fromisoformat(doc["occurred_at"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # one of the malformed lines
    assert len(dates) >= len(lines) - 3 > 0
    assert max(dates) < now  # the worker dead-letters events dated ahead of its clock
    assert now - max(dates) < timedelta(minutes=5)  # the newest revocations are still in force


def test_demo_write_to_stdout():
    result = CliRunner().invoke(main, ["demo", "--write", "-", "--workflows", "5"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") > 5
    assert "to stdout" in result.stderr
