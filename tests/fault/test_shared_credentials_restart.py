"""A worker killed between a shared SVID's first completion and the settling of the other
workflow's use: restarted, it still leaves the SVID to the live workflow (the completion waits in
the changelog-backed token table, and the recovered index waits for the uses the restart
settles), and revokes it at the last completion. ~40 s: ``make soak`` (``-m soak``)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer
from pipeline import GRACE, PARTITIONS, Pipeline
from test_shared_credentials_worker import ACTION, GRANT, SVID, _completions, _event


@pytest.fixture
def pipe(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    yield p
    p.stop_all()


@pytest.mark.soak
def test_a_restart_keeps_a_shared_credential_for_the_live_workflow(pipe: Pipeline) -> None:
    sharing = {"TETHER_CREDENTIAL_SHARED_ACROSS_WORKFLOWS": "false"}
    pipe.start_worker("w1", env=sharing)
    pipe.wait_heartbeat("w1")
    producer = Producer({"bootstrap.servers": pipe.bootstrap, "linger.ms": 0})

    def send(line: bytes, wf: str, partition: int) -> None:
        producer.produce(pipe.topic("intents"), value=line, key=wf.encode(), partition=partition)
        assert producer.flush(10) == 0

    t0 = datetime.now(UTC)
    grant = {**GRANT, "not_after": (t0 + timedelta(hours=1)).isoformat()}
    ended = {"outcome": "success"}
    send(_event("a1", "workflow.started", "wf-a", t0, grant=grant), "wf-a", 0)
    send(
        _event("b1", "workflow.started", "wf-b", t0 + timedelta(seconds=0.5), grant=grant),
        "wf-b",
        PARTITIONS - 1,
    )
    send(_event("a2", "workflow.completed", "wf-a", t0 + timedelta(seconds=1), **ended), "wf-a", 0)
    time.sleep(1.0)  # applied, and wf-b's use not settled yet (a grace period after it)
    pipe.kill("w1", signal.SIGKILL)
    pipe.start_worker("w2", env=sharing)
    pipe.wait_heartbeat("w2")
    first = pipe.collect(quiet_s=2 * GRACE + 3.0, timeout=30.0)
    assert _completions(first["revocations"]) == set(), "wf-b still uses the SVID"

    done = datetime.now(UTC)
    send(_event("b2", "tool_call.intent", "wf-b", done, action=ACTION), "wf-b", PARTITIONS - 1)
    send(_event("b3", "workflow.completed", "wf-b", done, **ended), "wf-b", PARTITIONS - 1)
    deadline = time.monotonic() + 30.0
    got: set[tuple[str, str]] = set()
    while time.monotonic() < deadline and not got:
        got = _completions(pipe.collect(quiet_s=1.0, timeout=5.0)["revocations"])
    assert got == {(SVID, "wf-b")}
