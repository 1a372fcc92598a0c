"""A running `tether worker` re-reads its tuning file: events after an edit are judged by the new
revision, without a restart; an invalid edit keeps the revision in force."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pipeline import Pipeline

from builders import call, started


@pytest.fixture
def pipe(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    yield p
    p.stop_all()


def _attempt(pipe: Pipeline, wf: str) -> None:
    evs = [
        started(wf, "planner", f"tok-{wf}", t=0),
        call(wf, "planner", f"tok-{wf}", tool="shell.exec", t=1),
    ]
    pipe.produce(orjson.dumps(e) for e in evs)


def _finding(pipe: Pipeline, wf: str, timeout: float = 30.0) -> tuple[dict[str, Any], list[Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pipe.collect(quiet_s=0.5, timeout=5.0)
        found = [
            f for f in got["findings"] if f["workflow_id"] == wf and f["code"] == "tool_not_granted"
        ]
        if found:
            time.sleep(0.5)  # a finding's revocations are published with it
            got = pipe.collect(quiet_s=0.5, timeout=5.0)
            revs = [
                r
                for r in got["revocations"]
                if r.get("workflow_id") == wf and r.get("reason") == "tool_not_granted"
            ]
            return found[0], revs
    raise AssertionError(f"no finding for {wf}: {pipe.log('w1')}")


def test_worker_reloads_tuning_without_restart(pipe: Pipeline, tmp_path: Path) -> None:
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text("revision: a\ncodes:\n  tool_not_granted:\n    severity: low\n")
    tuning.chmod(0o644)
    proc = pipe.start_worker(
        "w1", env={"TETHER_TUNING": str(tuning), "TETHER_TUNING_POLL_S": "0.2"}
    )
    pipe.wait_heartbeat("w1")
    _attempt(pipe, "wf-a")
    f, revs = _finding(pipe, "wf-a")
    assert f["severity"] == "low"
    assert f["tuning_revision"].startswith("a@sha256:")
    assert revs

    tuning.write_text(
        "revision: b\ncodes:\n  tool_not_granted:\n    severity: critical\n    response: []\n"
    )
    time.sleep(0.6)  # three polls of the file
    _attempt(pipe, "wf-b")
    f, revs = _finding(pipe, "wf-b")
    assert f["severity"] == "critical"
    assert f["tuning_revision"].startswith("b@sha256:")
    assert revs == [], "alert only from revision b on"

    tuning.write_text("codes:\n  tool_not_grantd: {}\n")
    time.sleep(0.6)  # three polls of the file
    _attempt(pipe, "wf-c")
    f, _ = _finding(pipe, "wf-c")
    assert f["tuning_revision"].startswith("b@sha256:"), "an invalid edit keeps revision b"
    assert proc.poll() is None, "the worker is still running"
    assert "keeping revision" in pipe.log("w1")
