"""The real backing services behave as tether relies on: Kafka round trip, Redis expiry."""

from __future__ import annotations

import time

import orjson
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic


def _create_topic(admin: AdminClient, name: str, partitions: int, **config: str) -> None:
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)],
        operation_timeout=30,
    )
    futures[name].result(timeout=30)
    # Creation returns before every broker's metadata lists the partitions: wait for them.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        topic = admin.list_topics(topic=name, timeout=10).topics.get(name)
        if topic is not None and len(topic.partitions) == partitions:
            return
        time.sleep(0.1)


def _delete_topic(admin: AdminClient, name: str) -> None:
    for future in admin.delete_topics([name], operation_timeout=30).values():
        future.result(timeout=30)


def test_kafka_round_trip_with_fresh_group(kafka_bootstrap, kafka_admin, fresh_topic_prefix):
    topic = f"{fresh_topic_prefix}.intents"
    _create_topic(kafka_admin, topic, partitions=3)
    try:
        metadata = kafka_admin.list_topics(topic=topic, timeout=10)
        assert len(metadata.topics[topic].partitions) == 3

        producer = Producer(
            {"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "acks": "all"}
        )
        delivered = []
        value = orjson.dumps({"event_id": "e-1", "workflow_id": "wf-42"})
        producer.produce(
            topic,
            key=b"wf-42",
            value=value,
            on_delivery=lambda err, msg: delivered.append((err, msg)),
        )
        assert producer.flush(30) == 0
        [(error, report)] = delivered
        assert error is None, error

        consumer = Consumer(
            {
                "bootstrap.servers": kafka_bootstrap,
                "group.id": f"{fresh_topic_prefix}.group",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        try:
            consumer.subscribe([topic])
            received = None
            deadline = time.monotonic() + 60
            while received is None and time.monotonic() < deadline:
                msg = consumer.poll(1.0)
                if msg is None:
                    continue
                assert msg.error() is None, msg.error()
                received = msg
            assert received is not None, "no message consumed within 60 s"
            assert received.key() == b"wf-42"
            assert orjson.loads(received.value()) == {"event_id": "e-1", "workflow_id": "wf-42"}
            assert (received.partition(), received.offset()) == (
                report.partition(),
                report.offset(),
            )
            consumer.commit(message=received, asynchronous=False)
        finally:
            consumer.close()
    finally:
        _delete_topic(kafka_admin, topic)


def test_broker_never_auto_creates_topics(kafka_bootstrap, kafka_admin, fresh_topic_prefix):
    topic = f"{fresh_topic_prefix}.never-created"
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.timeout.ms": 1500})
    errors = []
    producer.produce(topic, value=b"x", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(10)
    assert errors, "delivery report missing"
    assert errors[0] is not None
    assert errors[0].code() in {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._MSG_TIMED_OUT}
    assert topic not in kafka_admin.list_topics(timeout=10).topics


def test_compacted_topic_keeps_its_config(kafka_admin, fresh_topic_prefix):
    topic = f"{fresh_topic_prefix}.revocations"
    _create_topic(kafka_admin, topic, partitions=1, **{"cleanup.policy": "compact"})
    try:
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        configs = kafka_admin.describe_configs([resource])[resource].result(timeout=30)
        assert configs["cleanup.policy"].value == "compact"
    finally:
        _delete_topic(kafka_admin, topic)


def test_redis_set_get_with_absolute_expiry(redis_client, fresh_topic_prefix):
    key = f"{fresh_topic_prefix}:revoked:token:jti-8c1"
    not_after_ms = int(time.time() * 1000) + 500
    assert redis_client.set(key, b'{"reason":"scope_escalation"}', pxat=not_after_ms)
    assert redis_client.get(key) == b'{"reason":"scope_escalation"}'
    assert 0 < redis_client.pttl(key) <= 500

    deadline = time.monotonic() + 5
    while redis_client.exists(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis_client.get(key) is None


def test_redis_overwrite_keeps_expiry_only_with_keepttl(redis_client, fresh_topic_prefix):
    key = f"{fresh_topic_prefix}:revoked:workflow:wf-42"
    redis_client.set(key, b"v1", ex=60)
    redis_client.set(key, b"v2", keepttl=True)
    assert redis_client.get(key) == b"v2"
    assert 0 < redis_client.ttl(key) <= 60
    redis_client.set(key, b"v3")
    assert redis_client.ttl(key) == -1
