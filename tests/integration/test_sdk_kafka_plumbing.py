"""Kafka adapters the SDK and worker stand on: topic creation, broker wait, async publisher."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import ConfigResource, NewTopic

from tether.adapters.kafka_admin import (
    BrokerUnavailableError,
    TopicError,
    create_topics,
    wait_for_broker,
)
from tether.adapters.kafka_publisher import DeliveryError, KafkaPublisher
from tether.settings import Settings
from tether.topics import topic_specs


def _settings(bootstrap: str, prefix: str, partitions: int = 3) -> Settings:
    return Settings(kafka_bootstrap=bootstrap, topic_prefix=f"{prefix}.", partitions=partitions)


def _delete(admin, names) -> None:
    if names:
        for future in admin.delete_topics(list(names), operation_timeout=30).values():
            future.result(30)


@pytest.fixture
def settings(kafka_bootstrap, fresh_topic_prefix, kafka_admin):
    settings = _settings(kafka_bootstrap, fresh_topic_prefix)
    yield settings
    existing = kafka_admin.list_topics(timeout=10).topics
    _delete(kafka_admin, [n for n in existing if n.startswith(settings.topic_prefix)])


def test_creates_every_topic_with_its_partitions_and_configs(settings, kafka_admin):
    specs = topic_specs(settings.topic_prefix, settings.partitions)
    created = create_topics(settings)
    assert sorted(created) == sorted(spec.name for spec in specs)
    topics = kafka_admin.list_topics(timeout=10).topics
    for spec in specs:
        assert len(topics[spec.name].partitions) == spec.partitions
    revocations = settings.topic("revocations")
    resource = ConfigResource(ConfigResource.Type.TOPIC, revocations)
    configs = kafka_admin.describe_configs([resource])[resource].result(timeout=30)
    assert configs["cleanup.policy"].value == "compact"
    assert configs["min.cleanable.dirty.ratio"].value == "0.1"


def test_is_idempotent(settings):
    first = create_topics(settings)
    assert len(first) == len(topic_specs())
    assert create_topics(settings) == []


def test_a_partition_count_mismatch_names_the_topic(settings, kafka_admin):
    intents = settings.topic("intents")
    kafka_admin.create_topics([NewTopic(intents, num_partitions=2)])[intents].result(30)
    with pytest.raises(TopicError, match=rf"topic {intents} exists with 2 partitions.*expects 3"):
        create_topics(settings)


def test_a_revocations_topic_that_is_not_compacted_is_refused(settings, kafka_admin):
    revocations = settings.topic("revocations")
    kafka_admin.create_topics(
        [NewTopic(revocations, num_partitions=3, config={"cleanup.policy": "delete"})]
    )[revocations].result(30)
    with pytest.raises(TopicError, match=rf"{revocations} has cleanup.policy=delete"):
        create_topics(settings)


def test_wait_for_broker(settings):
    assert wait_for_broker(settings, timeout=10) >= 1


def test_wait_for_broker_gives_up_with_a_clear_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match=f"127.0.0.1:{port}"):
        wait_for_broker(Settings(kafka_bootstrap=f"127.0.0.1:{port}"), timeout=1.5)
    assert time.monotonic() - started < 5


def test_publish_resolves_with_the_position_once_acknowledged(settings):
    create_topics(settings)
    topic = settings.topic("findings")

    async def scenario():
        with KafkaPublisher(settings, client_id="test-publisher") as publisher:
            futures = [publisher.publish(topic, b"wf-1", f"v{i}".encode()) for i in range(10)]
            return await asyncio.gather(*futures)

    positions = asyncio.run(scenario())
    assert len({partition for partition, _ in positions}) == 1  # one key, one partition
    offsets = [offset for _, offset in positions]
    assert offsets == list(range(offsets[0], offsets[0] + 10))


def test_send_works_from_plain_threads(settings):
    create_topics(settings)
    with KafkaPublisher(settings) as publisher:
        future = publisher.send(settings.topic("decisions"), None, b"{}")
        partition, offset = future.result(timeout=30)
    assert partition >= 0
    assert offset >= 0


def test_a_delivery_failure_rejects_the_future(settings, fresh_topic_prefix):
    missing = f"{fresh_topic_prefix}.nowhere"

    async def scenario():
        publisher = KafkaPublisher(settings, overrides={"message.timeout.ms": 1500})
        publisher.start()
        try:
            return await asyncio.wait_for(publisher.publish(missing, b"k", b"v"), 15)
        finally:
            publisher.stop(1)

    with pytest.raises(DeliveryError, match=missing) as failed:
        asyncio.run(scenario())
    assert failed.value.topic == missing
    assert failed.value.code is not None


def test_publishing_before_start_is_a_clear_error(settings):
    with pytest.raises(RuntimeError, match="start"):
        KafkaPublisher(settings).send("t", None, b"v")


def _read_all(bootstrap: str, topic: str, partitions: int) -> dict[int, list[bytes]]:
    """Every record of ``topic`` by partition (values), read from the start to the end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{topic}",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    found: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    at_end: set[int] = set()
    deadline = time.monotonic() + 30
    try:
        while len(at_end) < partitions and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                at_end.add(msg.partition())
                continue
            found[msg.partition()].append(msg.value())
    finally:
        consumer.close()
    return found


def test_publish_many_reports_exactly_the_records_that_failed(settings, fresh_topic_prefix):
    create_topics(settings)
    topic, missing = settings.topic("decisions"), f"{fresh_topic_prefix}.nowhere"
    good = [(topic, f"wf-{i}".encode(), f"keyed-{i}".encode(), None) for i in range(40)]
    pinned = [(topic, f"wf-{i}".encode(), f"pinned-{i}".encode(), 2) for i in range(20)]
    bad = [(missing, b"k1", b"lost-1", None), (missing, None, b"lost-2", 1)]
    records = [*good[:20], bad[0], *pinned, bad[1], *good[20:]]

    async def scenario():
        publisher = KafkaPublisher(settings, overrides={"message.timeout.ms": 1500})
        publisher.start()
        try:
            empty = await asyncio.wait_for(publisher.publish_many([]), 5)
            failures = await asyncio.wait_for(publisher.publish_many(records), 20)
            return empty, failures
        finally:
            publisher.stop(1)

    empty, failures = asyncio.run(scenario())
    assert empty == []
    assert sorted((entry for entry, _ in failures), key=repr) == sorted(bad, key=repr)  # to retry
    assert all(error.topic == missing for _, error in failures)
    stored = _read_all(settings.kafka_bootstrap, topic, settings.partitions)
    assert sorted(v for values in stored.values() for v in values) == sorted(
        v for _, _, v, _ in [*good, *pinned]
    )
    assert {v for _, _, v, _ in pinned} <= set(stored[2])  # a pinned record kept its partition


def test_publish_many_waits_for_room_when_the_local_queue_is_full(settings):
    create_topics(settings)
    topic = settings.topic("decisions")
    records = [(topic, f"wf-{i}".encode(), f"v{i}".encode(), None) for i in range(200)]

    async def scenario():
        # room for 10 records at a time: most of the batch is queued as deliveries free room
        overrides = {"queue.buffering.max.messages": 10, "linger.ms": 50}
        with KafkaPublisher(settings, overrides=overrides) as publisher:
            return await asyncio.wait_for(publisher.publish_many(records), 30)

    assert asyncio.run(scenario()) == []
    stored = _read_all(settings.kafka_bootstrap, topic, settings.partitions)
    assert sorted(v for values in stored.values() for v in values) == sorted(
        v for _, _, v, _ in records
    )
