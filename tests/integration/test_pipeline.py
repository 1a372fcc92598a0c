"""The streaming pipeline against the real broker: `tether worker` processes, fresh topics and
consumer group per test, compared with `tether replay` on the same input."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from pipeline import PARTITIONS, Pipeline, collect_expected, identity, replay_records, tp_lag

from tether.adapters.kafka_admin import create_topics
from tether.demo.fleet import FleetConfig, iter_json_lines
from tether.demo.malformed import malformed_lines
from tether.settings import Settings


@pytest.fixture
def pipe(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    yield p
    p.stop_all()


def corpus(workflows: int, seed: int, malformed: int = 0) -> list[bytes]:
    start = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    cfg = FleetConfig(
        seed=seed,
        workflows=workflows,
        attack_rate=0.3,
        disorder=1.0,
        duplicate_rate=0.02,
        start=start,
    )
    lines = list(iter_json_lines(cfg))
    bad = malformed_lines(seed, malformed)
    for i, line in enumerate(bad):  # spread the hostile lines through the stream
        lines.insert((i + 1) * len(lines) // (len(bad) + 1), line)
    return lines


def test_pipeline_equals_replay(pipe: Pipeline) -> None:
    lines = corpus(120, seed=21, malformed=25)
    expected = replay_records(lines)
    pipe.start_worker("w1")
    pipe.wait_heartbeat("w1")
    pipe.produce(lines)
    got = collect_expected(pipe, expected)
    assert identity(got) == identity(expected)
    assert len(got["deadletter"]) == len(expected["deadletter"]) == 25
    assert all(d["reason"] and d["source"]["offset"] is not None for d in got["deadletter"])
    assert sum(1 for f in expected["findings"]) > 30


def test_records_deleted_past_the_committed_offset_do_not_stall_the_commit(
    pipe: Pipeline,
) -> None:
    """Retention removed records the group had not consumed yet: the worker reads from the
    first record left, and its offset commit moves over the missing offsets (a gap), instead
    of waiting forever for the record at the committed offset."""
    settings = Settings(
        kafka_bootstrap=pipe.bootstrap, topic_prefix=pipe.prefix, partitions=PARTITIONS
    )
    create_topics(settings)
    lines = corpus(40, seed=8)
    pipe.produce(lines)
    intents = pipe.topic("intents")
    admin = AdminClient({"bootstrap.servers": pipe.bootstrap})
    cut = [TopicPartition(intents, p, 5) for p in range(PARTITIONS)]
    for done in admin.delete_records(cut).values():
        done.result()
    group = f"{pipe.prefix}monitor"
    committer = Consumer({"bootstrap.servers": pipe.bootstrap, "group.id": group})
    try:  # the group had consumed up to offset 2 of every partition
        committer.commit(
            offsets=[TopicPartition(intents, p, 2) for p in range(PARTITIONS)], asynchronous=False
        )
    finally:
        committer.close()
    assert tp_lag(pipe.bootstrap, group, intents, PARTITIONS) == len(lines) - 2 * PARTITIONS
    pipe.start_worker("w1")
    pipe.wait_heartbeat("w1")
    deadline = time.monotonic() + 60
    while tp_lag(pipe.bootstrap, group, intents, PARTITIONS) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert tp_lag(pipe.bootstrap, group, intents, PARTITIONS) == 0
    assert "hold no records" in pipe.log("w1")


def test_worker_killed_mid_stream_resumes_with_sessions(pipe: Pipeline) -> None:
    lines = corpus(150, seed=5)
    half = len(lines) // 2
    pipe.start_worker("w1")
    pipe.wait_heartbeat("w1")
    pipe.produce(lines[:half])
    pipe.collect(quiet_s=2.0)  # let it work on the first half
    pipe.kill("w1")  # SIGKILL: no clean shutdown, no final commit
    pipe.produce(lines[half:])
    pipe.start_worker("w1b")
    pipe.wait_heartbeat("w1b")
    expected = replay_records(lines)
    got = collect_expected(pipe, expected)
    # duplicates are allowed (ids make them recognisable); nothing may be missed or invented
    assert identity(got)["findings"] == identity(expected)["findings"]
    assert identity(got)["revocations"] == identity(expected)["revocations"]


def test_two_workers_split_partitions_and_catch_cross_worker_reuse(pipe: Pipeline) -> None:
    pipe.start_worker("w1")
    pipe.start_worker("w2")
    pipe.wait_heartbeat("w1")
    pipe.wait_heartbeat("w2")
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)

    def at(s: float) -> str:
        return (now + timedelta(seconds=s)).isoformat()

    def cred(holder: str, token: str) -> dict[str, object]:
        return {
            "token_id": token,
            "issuer": "https://sts.acme.example",
            "subject": f"spiffe://acme.example/agent/{holder}",
            "scopes": ["crm:read"],
            "issued_at": at(-30),
            "expires_at": at(600),
        }

    def event(
        eid: str, kind: str, wf: str, agent: str, token: str, holder: str, t: float, **extra: object
    ) -> bytes:
        return orjson.dumps(
            {
                "schema_version": 1,
                "event_type": kind,
                "event_id": eid,
                "occurred_at": at(t),
                "workflow_id": wf,
                "agent": {"workload_id": f"spiffe://acme.example/agent/{agent}"},
                "credential": cred(holder, token),
                **extra,
            }
        )

    grant = {
        "task_type": "triage",
        "purpose": "p",
        "scopes": ["crm:read"],
        "tools": [],
        "max_sensitivity": "internal",
        "destinations": [],
        "not_after": at(3600),
        "autonomy": "low",
    }
    action = {
        "tool": "crm.search",
        "operation": "read",
        "resource": "crm://a/1",
        "destination": "crm.internal",
        "data_sensitivity": "internal",
    }
    victim = [
        event("v1", "workflow.started", "wf-victim", "planner", "tok-v", "planner", 0, grant=grant),
        event(
            "v2", "tool_call.intent", "wf-victim", "planner", "tok-v", "planner", 1, action=action
        ),
    ]
    thief = [
        event(
            "x1",
            "workflow.started",
            "wf-thief",
            "billing-bot",
            "tok-x",
            "billing-bot",
            2,
            grant=grant,
        ),
        event(
            "x2",
            "tool_call.intent",
            "wf-thief",
            "billing-bot",
            "tok-v",
            "planner",
            3,
            action=action,
        ),
    ]
    producer = Producer({"bootstrap.servers": pipe.bootstrap})
    for line in victim:  # partition 0 and partition PARTITIONS-1 belong to different workers
        producer.produce(pipe.topic("intents"), value=line, key=b"wf-victim", partition=0)
    for line in thief:
        producer.produce(
            pipe.topic("intents"), value=line, key=b"wf-thief", partition=PARTITIONS - 1
        )
    assert producer.flush(10) == 0

    got = pipe.collect(quiet_s=GRACE_WAIT)
    codes = {(f["code"], f["workflow_id"]) for f in got["findings"]}
    assert ("credential_reuse", "wf-thief") in codes
    assert not any(wf == "wf-victim" for _, wf in codes)
    owners = _partition_owners(pipe)
    assert len(set(owners.values())) == 2, f"both workers own intents partitions: {owners}"
    assert owners[0] != owners[PARTITIONS - 1]


GRACE_WAIT = 6.0


def _partition_owners(pipe: Pipeline) -> dict[int, str]:
    admin = AdminClient({"bootstrap.servers": pipe.bootstrap})
    group = f"{pipe.prefix}monitor"
    desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
    owners: dict[int, str] = {}
    for member in desc.members:
        for tp in member.assignment.topic_partitions:
            if tp.topic == pipe.topic("intents"):
                owners[tp.partition] = member.member_id
    return owners


def test_malformed_records_reach_the_dead_letter_topic(pipe: Pipeline) -> None:
    bad = malformed_lines(3, 40)
    pipe.start_worker("w1")
    pipe.wait_heartbeat("w1")
    producer = Producer({"bootstrap.servers": pipe.bootstrap})
    for line in bad:
        producer.produce(pipe.topic("intents"), value=line)
    producer.produce(pipe.topic("intents"), value=b"", key=b"wf-empty")
    assert producer.flush(10) == 0
    got = pipe.collect(until=len(bad) + 1)
    dead = got["deadletter"]
    assert len(dead) == len(bad) + 1
    assert all(d["reason"] and d["error"] for d in dead)
    assert {d["source"]["topic"] for d in dead} == {pipe.topic("intents")}
    assert len({(d["source"]["partition"], d["source"]["offset"]) for d in dead}) == len(dead)
    assert any(d["reason"] == "empty_record" for d in dead)
