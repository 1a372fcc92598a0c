"""Issue 18, the streaming worker's side: attacks reproduced against a real `tether worker` and
the real broker (fresh topics per test), each asserting what must hold instead.

* a forward-dated event cannot move event time past the wall clock (item 4);
* an output the broker refuses for good is dead-lettered, and the pipeline goes on (item 1);
* a heartbeat on every partition of the revocations topic, with the worker's input lag (item 9);
* a shorter revocation of a target is corrected on the compacted topic, with compaction
  running, and a watcher (or a Redis rebuild) reading it afterwards sees the longest (item 6);
* a revocation past its ``not_after`` is tombstoned (item 10).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from pipeline import PARTITIONS, Pipeline

from tether.sdk.watcher import Watcher
from tether.security import peek
from tether.settings import Settings

ORG = "spiffe://acme.example/agent/"


@pytest.fixture
def pipe(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    yield p
    p.stop_all()


class Clocked:
    """Events dated relative to a fixed instant (``base``, near the wall clock)."""

    def __init__(self, base: datetime) -> None:
        self.base = base
        self.n = 0

    def at(self, s: float) -> str:
        return (self.base + timedelta(seconds=s)).isoformat()

    def cred(self, holder: str, token: str, *, expires: float = 3600) -> dict[str, Any]:
        return {
            "token_id": token,
            "issuer": "https://sts.acme.example",
            "subject": ORG + holder,
            "scopes": ["crm:read"],
            "issued_at": self.at(min(-60, expires - 60)),
            "expires_at": self.at(expires),
        }

    def event(
        self,
        kind: str,
        wf: str,
        agent: str,
        t: float,
        *,
        token: str | None = None,
        holder: str | None = None,
        expires: float = 3600,
        **extra: Any,
    ) -> bytes:
        self.n += 1
        return orjson.dumps(
            {
                "schema_version": 1,
                "event_type": kind,
                "event_id": f"ev-{self.n}",
                "occurred_at": self.at(t),
                "workflow_id": wf,
                "agent": {"workload_id": ORG + agent},
                "credential": self.cred(holder or agent, token or f"tok-{agent}", expires=expires),
                **extra,
            }
        )

    def grant(self) -> dict[str, Any]:
        return {
            "task_type": "triage",
            "purpose": "p",
            "scopes": ["crm:read"],
            "tools": [],
            "max_sensitivity": "internal",
            "destinations": [],
            "not_after": self.at(3600),
            "autonomy": "low",
        }

    def started(self, wf: str, agent: str, t: float, **kw: Any) -> bytes:
        return self.event("workflow.started", wf, agent, t, grant=self.grant(), **kw)

    def call(self, wf: str, agent: str, t: float, *, tool: str = "crm.search", **kw: Any) -> bytes:
        action = {
            "tool": tool,
            "operation": "read",
            "resource": "crm://a/1",
            "destination": "crm.internal",
            "data_sensitivity": "internal",
        }
        return self.event("tool_call.intent", wf, agent, t, action=action, **kw)

    def delegate(self, wf: str, frm: str, to: str, t: float, did: str) -> bytes:
        delegation = {
            "delegation_id": did,
            "to_workload_id": ORG + to,
            "scopes": ["crm:read"],
            "expires_at": self.at(900),
        }
        return self.event("delegation.granted", wf, frm, t, delegation=delegation)


def send(pipe: Pipeline, lines: list[tuple[bytes, bytes]], partition: int = 0) -> None:
    producer = Producer({"bootstrap.servers": pipe.bootstrap})
    for key, line in lines:
        producer.produce(pipe.topic("intents"), value=line, key=key, partition=partition)
    assert producer.flush(10) == 0


# -- item 4: a forward-dated event does not move event time ---------------------------------


def test_event_dated_ahead_cannot_fire_other_workflows_checks_early(pipe: Pipeline) -> None:
    """One event dated +290 s (inside the 300 s skew bound) used to carry the watermark 290 s
    ahead, so every waiting check fired at once: a delegatee whose delegation arrived one
    second after its first call was revoked as ``undelegated_actor``. Event time now stops at
    the wall clock (plus ``TETHER_MAX_AHEAD_S``), and the forward-dated event is still applied.
    (The default grace period: the hand-off's own reordering must be tolerated under load.)"""
    pipe.start_worker("w1", env={"TETHER_GRACE_S": "5"})
    pipe.wait_heartbeat("w1")
    ev = Clocked(datetime.now(UTC))
    send(pipe, [(b"wf-honest", ev.started("wf-honest", "planner", -20))])
    time.sleep(1.0)
    ahead = ev.call("wf-ahead", "rogue", 290, tool="crm.search")
    send(
        pipe,
        [
            (b"wf-ahead", ev.started("wf-ahead", "rogue", 289)),
            (b"wf-ahead", ahead),
        ],
    )
    time.sleep(0.5)
    now = (datetime.now(UTC) - ev.base).total_seconds()
    # the hand-off, delivered one second out of order: the delegatee's call first
    send(pipe, [(b"wf-honest", ev.call("wf-honest", "coder", now - 0.5))])
    time.sleep(1.0)
    send(pipe, [(b"wf-honest", ev.delegate("wf-honest", "planner", "coder", now - 1.0, "d-1"))])
    got = pipe.collect(quiet_s=6.0)
    honest = [f for f in got["findings"] if f["workflow_id"] == "wf-honest"]
    assert honest == [], [(f["code"], f["summary"]) for f in honest]
    assert not [r for r in got["revocations"] if r["workflow_id"] == "wf-honest"]
    # the forward-dated events were applied, not dropped
    assert {d["event_id"] for d in got["decisions"]} >= {orjson.loads(ahead)["event_id"]}
    assert got["deadletter"] == []


# -- item 9: heartbeats on every partition, with the input lag -------------------------------


def test_heartbeats_on_every_partition_carry_the_input_lag(pipe: Pipeline) -> None:
    """A watcher that cannot read one partition must be able to notice: every partition of the
    revocations topic carries the worker's heartbeats, each naming its partition and the
    worker's input lag (records and seconds)."""
    pipe.start_worker("w1")
    pipe.wait_heartbeat("w1")
    seen: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 20
    with pipe.consumer([pipe.topic("revocations")], from_end=True) as c:
        while time.monotonic() < deadline and len(seen) < PARTITIONS:
            msg = c.poll(0.2)
            if msg is None or msg.error() or msg.key() != b"heartbeat:w1":
                continue
            seen[msg.partition()] = peek(msg.value()).model_dump(mode="json")
    assert sorted(seen) == list(range(PARTITIONS))
    for partition, hb in seen.items():
        assert hb["partition"] == partition
        assert hb["input_lag_s"] == 0.0
        assert hb["input_lag_records"] == 0


# -- item 1: an output the broker refuses for good --------------------------------------------


def _set_topic_config(bootstrap: str, topic: str, name: str, value: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)],
    )
    for fut in admin.incremental_alter_configs([resource]).values():
        fut.result(timeout=10)


def test_state_record_refused_as_too_large_is_dead_lettered_and_the_pipeline_goes_on(
    pipe: Pipeline,
) -> None:
    """The sessions changelog refuses one workflow's state record (``MSG_SIZE_TOO_LARGE``:
    here a changelog whose ``max.message.bytes`` is below the record; in the issue, a state
    past the broker's 1 MB). The worker used to retry it forever: intake and heartbeats
    stopped and every gateway failed closed. Now the record is dead-lettered with its reason
    (summarised, so the dead letter itself is small) and the pipeline goes on."""
    pipe.start_worker("w1")
    pipe.wait_heartbeat("w1")
    changelog = f"{pipe.prefix}monitor-sessions-changelog"
    _set_topic_config(pipe.bootstrap, changelog, "max.message.bytes", "6000")
    time.sleep(1.0)  # the broker applies the override
    ev = Clocked(datetime.now(UTC) - timedelta(minutes=2))
    big = [(b"wf-big", ev.started("wf-big", "planner", 0))]
    for i in range(60):  # many distinct long token ids (incompressible): one large session
        token = f"tok-{i:03d}-" + os.urandom(120).hex()
        big.append((b"wf-big", ev.call("wf-big", "planner", 1 + i * 0.01, token=token)))
    send(pipe, big)
    time.sleep(2.0)
    # the pipeline still works: a violation elsewhere is revoked, heartbeats continue
    send(
        pipe,
        [
            (b"wf-after", ev.started("wf-after", "billing", 10)),
            (b"wf-after", ev.call("wf-after", "billing", 11, tool="crm.search")),
            (b"wf-after", ev.call("wf-after", "intruder", 12, tool="crm.search")),
        ],
    )
    got = pipe.collect(quiet_s=8.0, timeout=60)
    rejected = [d for d in got["deadletter"] if d["reason"] == "output_rejected"]
    assert rejected, got["deadletter"]
    assert all("MSG_SIZE_TOO_LARGE" in d["error"] for d in rejected)
    assert all(len(orjson.dumps(d)) < 8192 for d in rejected)
    assert any(f["workflow_id"] == "wf-after" for f in got["findings"])
    pipe.wait_heartbeat("w1", timeout=10)  # still alive, still beating


# -- items 6 and 10: the revocation ledger ----------------------------------------------------


def _compacting(pipe: Pipeline) -> None:
    """Make the revocations topic compact within seconds (the shared broker's cleaner runs every
    15 s): tiny segments, a low dirty ratio, no compaction lag."""
    topic = pipe.topic("revocations")
    for name, value in (
        ("segment.ms", "1000"),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("min.compaction.lag.ms", "0"),
        ("delete.retention.ms", "1000"),
        ("max.compaction.lag.ms", "2000"),
    ):
        _set_topic_config(pipe.bootstrap, topic, name, value)


def _read_all(pipe: Pipeline) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """Every record on the revocations topic now, from the start: (partition, offset, key, value)."""
    topic = pipe.topic("revocations")
    c = Consumer(
        {"bootstrap.servers": pipe.bootstrap, "group.id": "peek", "enable.auto.commit": False}
    )
    out = []
    try:
        highs = {}
        for p in range(PARTITIONS):
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                highs[p] = high
        c.assign([TopicPartition(topic, p, 0) for p in highs])
        done: set[int] = set()
        deadline = time.monotonic() + 30
        while len(done) < len(highs) and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
            if msg.offset() + 1 >= highs[msg.partition()]:
                done.add(msg.partition())
    finally:
        c.close()
    return out


def _latest_revocation(
    records: list[tuple[int, int, bytes | None, bytes | None]], key: bytes
) -> Any:
    last = None
    for _p, _o, k, v in records:
        if k == key:
            last = v
    return None if last is None else peek(last)


def test_a_shorter_revocation_never_survives_compaction(pipe: Pipeline) -> None:
    """Token T is revoked (not_after: its expiry + 5 min, an hour away). The agent then presents
    T again in another workflow claiming it expired in the past: a second revocation of
    ``token:T`` with a not_after minutes away. Compaction keeps the latest record per key, so
    it used to keep only the shorter one, and a watcher bootstrapped afterwards (or a Redis
    rebuilt from the topic) answered "not revoked" once it passed. The ledger republishes the
    longest after a shorter one; with compaction running, the latest record for the key is the
    longest, and a watcher bootstrapped afterwards holds it."""
    pipe.start_worker("w1")
    pipe.wait_heartbeat("w1")
    _compacting(pipe)
    ev = Clocked(datetime.now(UTC) - timedelta(minutes=1))
    # workflow A: token T used by someone it was not issued to -> revoked, not_after ~ +1 h
    send(
        pipe,
        [
            (b"wf-a", ev.started("wf-a", "planner", 0)),
            (b"wf-a", ev.call("wf-a", "planner", 1, token="tok-T", holder="billing")),
        ],
        partition=0,
    )
    got = pipe.collect(quiet_s=4.0)
    first = [r for r in got["revocations"] if r["target"] == {"kind": "token", "id": "tok-T"}]
    assert first, got["findings"]
    longest = max(datetime.fromisoformat(r["not_after"]) for r in first)
    # workflow B, another partition: the same token id, "expired" a year ago, so this
    # revocation's not_after (its expiry + 5 min) is already past
    send(
        pipe,
        [
            (b"wf-b", ev.started("wf-b", "coder", 2)),
            (b"wf-b", ev.call("wf-b", "coder", 3, token="tok-T", expires=-365 * 86400)),
        ],
        partition=1,
    )
    time.sleep(4.0)
    # let compaction run: roll segments with filler, wait for the cleaner
    filler = Producer({"bootstrap.servers": pipe.bootstrap})
    deadline = time.monotonic() + 90
    latest = None
    while time.monotonic() < deadline:
        for p in range(PARTITIONS):
            filler.produce(pipe.topic("revocations"), key=b"filler", value=None, partition=p)
        filler.flush(5)
        records = _read_all(pipe)
        keyed = [r for r in records if r[2] == b"token:tok-T"]
        latest = _latest_revocation(records, b"token:tok-T")
        if len(keyed) <= 1 and latest is not None:
            break  # compacted down to one record for the key
        time.sleep(3.0)
    assert latest is not None
    assert latest.not_after >= longest, (latest.not_after, longest)
    assert len([r for r in _read_all(pipe) if r[2] == b"token:tok-T"]) == 1, "compaction ran"
    # a gateway bootstrapping now still holds the revocation (its local answer: tier "low")
    settings = Settings(
        kafka_bootstrap=pipe.bootstrap, topic_prefix=pipe.prefix, partitions=PARTITIONS
    )
    with Watcher(settings) as watcher:
        assert watcher.wait_ready(30), watcher.last_error
        assert watcher.is_revoked(token_id="tok-T", tier="low") is True


def test_a_target_is_never_republished_shorter(pipe: Pipeline) -> None:
    """The worker itself never publishes a target's revocation with a not_after shorter than
    one already published for it (it raises the new one's to the longest it knows): read in
    partition order, the revocations of ``token:tok-T`` never get shorter."""
    pipe.start_worker("w1")
    pipe.wait_heartbeat("w1")
    ev = Clocked(datetime.now(UTC) - timedelta(minutes=1))
    send(
        pipe,
        [
            (b"wf-a", ev.started("wf-a", "planner", 0)),
            (b"wf-a", ev.call("wf-a", "planner", 1, token="tok-T", holder="billing")),
        ],
        partition=0,
    )
    pipe.collect(quiet_s=3.0)
    send(
        pipe,
        [
            (b"wf-b", ev.started("wf-b", "coder", 2)),
            (b"wf-b", ev.call("wf-b", "coder", 3, token="tok-T", expires=-365 * 86400)),
        ],
        partition=1,
    )
    time.sleep(5.0)
    seq = [peek(v).not_after for _p, _o, k, v in _read_all(pipe) if k == b"token:tok-T" and v]
    assert len(seq) >= 2, seq
    assert seq == sorted(seq), seq


def test_expired_revocations_are_tombstoned(pipe: Pipeline) -> None:
    """A revocation past its not_after is removed from the compacted topic (a tombstone), so a
    gateway's bootstrap does not grow without bound; a live one is never tombstoned."""
    pipe.start_worker("w1", env={"TETHER_TOMBSTONE_AFTER_S": "0"})
    pipe.wait_heartbeat("w1")
    ev = Clocked(datetime.now(UTC) - timedelta(minutes=10))
    send(
        pipe,
        [
            # a token that expired long ago: its revocation's not_after (expiry + 5 min) is past
            (b"wf-old", ev.started("wf-old", "planner", 0, expires=1)),
            (b"wf-old", ev.call("wf-old", "planner", 2, expires=1)),
            # and a live one
            (b"wf-live", ev.started("wf-live", "coder", 0)),
            (b"wf-live", ev.call("wf-live", "coder", 1, token="tok-L", holder="billing")),
        ],
    )
    deadline = time.monotonic() + 40

    def read() -> tuple[set[bytes], dict[bytes, Any]]:
        tombstoned: set[bytes] = set()
        revoked: dict[bytes, Any] = {}
        for _p, _o, k, v in _read_all(pipe):
            if k is None or k.startswith(b"heartbeat:"):
                continue
            if v is None:
                tombstoned.add(k)
            else:
                revoked[k] = peek(v)
        return tombstoned, revoked

    while time.monotonic() < deadline:
        tombstoned, revoked = read()
        expired = {k for k, r in revoked.items() if r.not_after < datetime.now(UTC)}
        if expired and expired <= tombstoned and b"token:tok-L" in revoked:
            time.sleep(3.0)  # a live revocation must not be tombstoned later either
            break
        time.sleep(2.0)
    tombstoned, revoked = read()
    expired = {k for k, r in revoked.items() if r.not_after < datetime.now(UTC)}
    live = {k for k, r in revoked.items() if r.not_after >= datetime.now(UTC)}
    assert expired, (revoked, tombstoned)
    assert expired <= tombstoned
    assert live
    assert not (live & tombstoned)
