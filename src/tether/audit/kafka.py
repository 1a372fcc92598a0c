"""Reading whole topics for ``tether audit``: every partition from its first record to the end
it had when the read began (assign(), a fresh group id, nothing committed)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from tether.adapters.kafka_config import consumer_config
from tether.settings import Settings


class TopicUnreadable(RuntimeError):
    """The topic does not exist, or could not be read in time."""


@dataclass(frozen=True, slots=True)
class Stored:
    """One record as the topic stores it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass(slots=True)
class TopicRead:
    """A topic's records in storage order (by partition, then offset), and which partitions are
    complete (low watermark 0: retention or a deletion never removed their first records)."""

    records: list[Stored] = field(default_factory=list)
    complete: set[int] = field(default_factory=set)
    partitions: int = 0


def read_topic(settings: Settings, topic: str, *, timeout_s: float = 60.0) -> TopicRead:  # noqa: PLR0912  # one loop over a consumer's outcomes
    """Every record of ``topic`` up to its current end.

    Raises:
        TopicUnreadable: the topic is missing or the broker did not answer in ``timeout_s``.
    """
    config = consumer_config(
        settings,
        group_id=f"tether-audit-{uuid.uuid4().hex[:12]}",
        client_id="tether-audit",
        overrides={"enable.auto.commit": False, "enable.partition.eof": True},
    )
    consumer = Consumer(config)
    out = TopicRead()
    try:
        try:
            meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        except KafkaException as exc:
            raise TopicUnreadable(f"{topic}: {exc}") from exc
        if meta is None or meta.error is not None or not meta.partitions:
            raise TopicUnreadable(f"topic {topic} does not exist")
        out.partitions = len(meta.partitions)
        ends: dict[int, int] = {}
        starts: list[TopicPartition] = []
        for p in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=timeout_s, cached=False
            )
            if low == 0:
                out.complete.add(p)
            if high > low:
                ends[p] = high
                starts.append(TopicPartition(topic, p, low))
        by_partition: dict[int, list[Stored]] = {p: [] for p in ends}
        if starts:
            consumer.assign(starts)
        deadline = time.monotonic() + timeout_s
        pending = set(ends)
        while pending:
            if time.monotonic() > deadline:
                raise TopicUnreadable(f"reading {topic} took over {timeout_s:.0f}s")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:  # librdkafka's name
                    pending.discard(msg.partition() or 0)
                    continue
                raise TopicUnreadable(f"{topic}: {err.str()}")
            p, offset = msg.partition() or 0, msg.offset() or 0
            if offset < ends[p]:
                by_partition[p].append(Stored(p, offset, msg.key(), msg.value() or b""))
            if offset >= ends[p] - 1:
                pending.discard(p)
        for p in sorted(by_partition):
            out.records.extend(by_partition[p])
    finally:
        consumer.close()
    return out
