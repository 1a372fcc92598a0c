"""A credential shared across workflows on different partitions (SPIRE-style cached SVID), in
a real `tether worker` against the real broker: with sharing allowed, completing one workflow
does not revoke the credential the other live workflow still uses; completing the last does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from pipeline import GRACE, PARTITIONS, Pipeline

SVID = "svid-planner-cached"
PLANNER = "spiffe://acme.example/agent/planner"


@pytest.fixture
def pipe(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    yield p
    p.stop_all()


def _event(eid: str, kind: str, wf: str, t: datetime, **extra: object) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "event_type": kind,
            "event_id": eid,
            "occurred_at": t.isoformat(),
            "workflow_id": wf,
            "agent": {"workload_id": PLANNER},
            "credential": {
                "token_id": SVID,
                "issuer": "https://spire.acme.example",
                "subject": PLANNER,
                "scopes": ["crm:read"],
                "issued_at": (t - timedelta(minutes=5)).isoformat(),
                "expires_at": (t + timedelta(minutes=55)).isoformat(),
            },
            **extra,
        }
    )


GRANT = {
    "task_type": "triage",
    "purpose": "p",
    "scopes": ["crm:read"],
    "tools": [],
    "max_sensitivity": "internal",
    "destinations": [],
    "autonomy": "low",
}
ACTION = {
    "tool": "crm.search",
    "operation": "read",
    "resource": "crm://a/1",
    "destination": "crm.internal",
    "data_sensitivity": "internal",
}


def _completions(records: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {
        (r["target"]["id"], r["workflow_id"]) for r in records if r["reason"] == "task_completed"
    }


def test_completion_leaves_a_shared_credential_to_the_live_workflow_on_another_partition(
    pipe: Pipeline,
) -> None:
    pipe.start_worker("w1", env={"TETHER_CREDENTIAL_SHARED_ACROSS_WORKFLOWS": "false"})
    pipe.wait_heartbeat("w1")
    producer = Producer({"bootstrap.servers": pipe.bootstrap, "linger.ms": 0})

    def send(line: bytes, wf: str, partition: int) -> None:
        producer.produce(pipe.topic("intents"), value=line, key=wf.encode(), partition=partition)
        assert producer.flush(10) == 0

    t0 = datetime.now(UTC)
    grant = {**GRANT, "not_after": (t0 + timedelta(hours=1)).isoformat()}
    send(_event("a1", "workflow.started", "wf-a", t0, grant=grant), "wf-a", 0)
    ended = {"outcome": "success"}
    send(_event("a2", "workflow.completed", "wf-a", t0 + timedelta(seconds=1), **ended), "wf-a", 0)
    # wf-b, on another partition, used the SVID before wf-a completed; its event arrives after
    send(
        _event("b1", "workflow.started", "wf-b", t0 + timedelta(seconds=0.5), grant=grant),
        "wf-b",
        PARTITIONS - 1,
    )
    first = pipe.collect(quiet_s=2 * GRACE + 2.5, timeout=20.0)
    assert not first["deadletter"]
    assert _completions(first["revocations"]) == set(), "wf-b still uses the SVID"

    done = datetime.now(UTC)
    send(_event("b2", "tool_call.intent", "wf-b", done, action=ACTION), "wf-b", PARTITIONS - 1)
    send(_event("b3", "workflow.completed", "wf-b", done, **ended), "wf-b", PARTITIONS - 1)
    deadline = time.monotonic() + 20.0
    got: set[tuple[str, str]] = set()
    while time.monotonic() < deadline and not got:
        got = _completions(pipe.collect(quiet_s=1.0, timeout=5.0)["revocations"])
    assert got == {(SVID, "wf-b")}, "the last completion revokes the SVID, in its own name"
