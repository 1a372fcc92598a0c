"""librdkafka configuration builders for tether's producers, consumers and admin clients.

Every confluent-kafka client of tether is configured here, from ``Settings``: the bootstrap
servers, and the security of the ``kafka`` section (protocol, SASL, TLS, passthrough), so that
no client can be the one left connecting in plaintext. Pure apart from reading the SASL password
file (``KafkaSettings.password``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from tether.kafka_settings import KafkaSettings
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


def security_config(kafka: KafkaSettings) -> KafkaConfig:
    """The librdkafka properties of ``kafka``: protocol, SASL, TLS, then the passthrough.

    The passthrough cannot override the others (``KafkaSettings`` refuses the keys they own).
    """
    config: KafkaConfig = {"security.protocol": kafka.security_protocol}
    if kafka.uses_sasl:
        config["sasl.mechanism"] = kafka.sasl_mechanism
        config["sasl.username"] = kafka.sasl_username
        config["sasl.password"] = kafka.password()
    if kafka.uses_tls:
        config["ssl.endpoint.identification.algorithm"] = (
            "https" if kafka.ssl_verify_hostname else "none"
        )
        if kafka.ssl_ca_file is not None:
            config["ssl.ca.location"] = str(kafka.ssl_ca_file)
        if kafka.ssl_cert_file is not None:
            config["ssl.certificate.location"] = str(kafka.ssl_cert_file)
        if kafka.ssl_key_file is not None:
            config["ssl.key.location"] = str(kafka.ssl_key_file)
        if kafka.ssl_key_password is not None:
            config["ssl.key.password"] = kafka.ssl_key_password.get_secret_value()
    config.update(kafka.properties)
    return config


def client_config(settings: Settings, *, client_id: str) -> KafkaConfig:
    """What every client needs: where the brokers are, its name, and how it authenticates.

    With ``TETHER_LOG_FORMAT=json``, librdkafka's own log lines go through Python's logging
    (logger ``tether.kafka``) instead of straight to stderr, so that every line is JSON."""
    config: KafkaConfig = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": client_id,
        **security_config(settings.kafka),
    }
    if settings.log_format == "json":
        config["logger"] = logging.getLogger("tether.kafka")
    return config


def producer_config(
    settings: Settings,
    *,
    client_id: str,
    transactional: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> KafkaConfig:
    """Configuration of an idempotent producer (``acks=all``, lz4, ``linger.ms=1``).

    Args:
        settings: supplies ``kafka_bootstrap`` and the ``kafka`` section.
        client_id: names the client in broker logs and metrics; with ``transactional`` it is also
            the ``transactional.id``, so it must be stable per producer instance.
        transactional: configure a transactional producer (exactly-once read-process-write).
        overrides: librdkafka properties that win over the defaults (e.g. ``message.timeout.ms``).

    Returns:
        A new dict; callers may add callbacks (``error_cb``) before creating the client.
    """
    config: KafkaConfig = {**client_config(settings, client_id=client_id), **PRODUCER_DEFAULTS}
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
        settings: supplies ``kafka_bootstrap`` and the ``kafka`` section.
        group_id: the consumer group. confluent-kafka requires one even for a consumer that
            only ``assign()``s partitions and never commits (the revocation watcher); such a
            consumer never joins the group.
        client_id: names the client in broker logs and metrics.
        overrides: librdkafka properties that win over the defaults.

    Returns:
        A new dict.
    """
    config: KafkaConfig = {
        **client_config(settings, client_id=client_id),
        "group.id": group_id,
        **CONSUMER_DEFAULTS,
    }
    if overrides:
        config.update(overrides)
    return config


def admin_config(settings: Settings, *, client_id: str = "tether-admin") -> KafkaConfig:
    """Configuration of an AdminClient."""
    return {
        **client_config(settings, client_id=client_id),
        "log.connection.close": False,
        "log_level": 4,  # warnings and worse: not the chatter of a short-lived admin handle
    }
