"""Helpers for the SDK and adapter tests: a fake clock, feed records, reading a topic back."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

from confluent_kafka import Consumer, Message, TopicPartition

from tether.models.outputs import Heartbeat, Revocation, Target, TargetKind

T0 = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)


class FakeClock:
    """Epoch seconds that only move when told to."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def revocation(
    kind: TargetKind = "token",
    ident: str = "jti-1",
    *,
    lasts: float = 600.0,
    rid: str = "rv-1",
    start: datetime = T0,
) -> Revocation:
    """A revocation of ``kind:ident`` issued at ``start``, in force for ``lasts`` seconds."""
    return Revocation(
        revocation_id=rid,
        target=Target(kind=kind, id=ident),
        reason="scope_escalation",
        severity="high",
        workflow_id="wf-42",
        issued_at=start,
        not_after=start + timedelta(seconds=lasts),
        evidence=["e1"],
    )


def heartbeat(at: datetime = T0, source: str = "w1") -> Heartbeat:
    """A heartbeat emitted at ``at``."""
    return Heartbeat(emitted_at=at, source=source)


def read_back(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[Message]:
    """Read ``count`` records of ``topic`` from the beginning (all partitions, no group commits)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-back-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(messages) < count and time.monotonic() < deadline:
            for msg in consumer.consume(100, 0.2):
                if msg.error() is not None:
                    raise RuntimeError(str(msg.error()))
                messages.append(msg)
        return messages
    finally:
        consumer.close()
