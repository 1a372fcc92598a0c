"""librdkafka configuration builders for tether's producers and consumers (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from tether.settings import Settings

KafkaConfig = dict[str, Any]
"""A librdkafka configuration as confluent-kafka takes it (values are str, int, float or bool)."""

PRODUCER_DEFAULTS: Final[Mapping[str, Any]] = {
    "acks": "all",
    "enable.idempotence": True,  # no duplicates or reordering on retry within a partition
    "linger.ms": 1,  # latency first: a revocation should not wait for a fuller batch
    "compression.type": "lz4",
    "log.connection.close": False,  # idle connections closed by the broker are not errors
}

CONSUMER_DEFAULTS: Final[Mapping[str, Any]] = {
    "enable.auto.commit": False,  # offsets are committed only after the outputs are acknowledged
    "auto.offset.reset": "earliest",
    "fetch.wait.max.ms": 5,  # latency first: the broker answers a fetch within 5 ms
    "session.timeout.ms": 10_000,  # a dead member is noticed in seconds, not the 45 s default
    "heartbeat.interval.ms": 2_000,
    "max.poll.interval.ms": 300_000,
    "isolation.level": "read_committed",
    "log.connection.close": False,
}


def producer_config(
    settings: Settings,
    *,
    client_id: str,
    transactional: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> KafkaConfig:
    """Configuration of an idempotent producer (``acks=all``, lz4, ``linger.ms=1``).

    Args:
        settings: supplies ``kafka_bootstrap``.
        client_id: names the client in broker logs and metrics; with ``transactional`` it is also
            the ``transactional.id``, so it must be stable per producer instance.
        transactional: configure a transactional producer (exactly-once read-process-write).
        overrides: librdkafka properties that win over the defaults (e.g. ``message.timeout.ms``).

    Returns:
        A new dict; callers may add callbacks (``error_cb``) before creating the client.
    """
    config: KafkaConfig = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": client_id,
        **PRODUCER_DEFAULTS,
    }
    if transactional:
        config["transactional.id"] = client_id
    if overrides:
        config.update(overrides)
    return config


def consumer_config(
    settings: Settings,
    *,
    group_id: str,
    client_id: str,
    overrides: Mapping[str, Any] | None = None,
) -> KafkaConfig:
    """Configuration of a low-latency consumer that commits explicitly.

    Args:
        settings: supplies ``kafka_bootstrap``.
        group_id: the consumer group. confluent-kafka requires one even for a consumer that
            only ``assign()``s partitions and never commits (the revocation watcher); such a
            consumer never joins the group.
        client_id: names the client in broker logs and metrics.
        overrides: librdkafka properties that win over the defaults.

    Returns:
        A new dict.
    """
    config: KafkaConfig = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group_id,
        "client.id": client_id,
        **CONSUMER_DEFAULTS,
    }
    if overrides:
        config.update(overrides)
    return config


def admin_config(settings: Settings, *, client_id: str = "tether-admin") -> KafkaConfig:
    """Configuration of an AdminClient."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": client_id,
        "log.connection.close": False,
        "log_level": 4,  # warnings and worse: not the chatter of a short-lived admin handle
    }
