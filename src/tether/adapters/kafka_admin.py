"""Kafka administration: wait for the broker, create tether's topics explicitly and idempotently."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from tether.adapters.kafka_config import KafkaConfig, admin_config
from tether.settings import Settings
from tether.topics import TopicSpec, topic_specs

_log = logging.getLogger(__name__)

# Existing topics must agree with the spec on these configs: a revocations topic that deletes
# instead of compacting silently forgets live revocations, so a gateway bootstrapping from it
# would allow what was revoked.
CHECKED_CONFIGS = ("cleanup.policy",)
# ... and be at least as durable as the settings ask (a stricter existing topic is kept).
AT_LEAST_CONFIGS = ("min.insync.replicas",)


class BrokerUnavailableError(TimeoutError):
    """The broker did not answer a metadata request in time."""

    def __init__(self, message: str, *, reason: str = "no answer") -> None:
        super().__init__(message)
        self.reason = reason


class TopicError(RuntimeError):
    """A topic could not be created, or an existing one does not match its spec."""


def wait_for_broker(settings: Settings, timeout: float = 30.0) -> int:
    """Block until the broker answers metadata and lists at least one live broker.

    The probing client logs nothing itself: librdkafka would print a line for every failed
    connection attempt (about 20 a second), which buried the one thing a user needs to know.
    What it last reported instead ends up in the error's message.

    Args:
        settings: supplies ``kafka_bootstrap``.
        timeout: seconds to keep trying.

    Returns:
        The number of live brokers.

    Raises:
        BrokerUnavailableError: nothing answered within ``timeout``; its ``reason`` is the
            client's last error (e.g. "Connection refused").
    """
    reported: list[str] = []
    config: KafkaConfig = admin_config(settings, client_id="tether-probe")
    config["log_level"] = 0  # silent: failures are read through error_cb and reported once
    config["error_cb"] = lambda error: reported.append(error.str())
    admin = AdminClient(config)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            reason = _connect_reason(reported[-1]) if reported else last
            raise BrokerUnavailableError(
                f"Kafka at {settings.kafka_bootstrap} did not answer within {timeout:g} s: {reason}",
                reason=reason,
            )
        try:
            metadata = admin.list_topics(timeout=max(0.1, min(remaining, 2.0)))
        except KafkaException as exc:
            last = _reason(exc)
            admin.poll(0)  # delivers the connection errors to error_cb
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            continue
        if metadata.brokers:
            return len(metadata.brokers)
        last = "metadata lists no live broker"


def _connect_reason(error: str) -> str:
    """librdkafka's connection error without the client's prefix and timing suffix.

    "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms
    in state CONNECT)" becomes "Connection refused"; "h:9092/bootstrap: Failed to resolve
    'h:9092': Name or service not known (...)" becomes "Failed to resolve 'h:9092': Name or
    service not known".
    """
    head, sep, rest = error.partition(": ")
    reason = rest if sep and "/" in head else error
    if "failed: " in reason:
        reason = reason.split("failed: ", 1)[1]
    return reason.split(" (after ", 1)[0].strip() or error


def create_topics(
    settings: Settings, specs: Sequence[TopicSpec] | None = None, *, timeout: float = 30.0
) -> list[str]:
    """Create every topic in ``specs`` that does not exist yet; verify the ones that do.

    Topics are created with their explicit partition counts and configs, and the replication
    factor and ``min.insync.replicas`` of ``settings.kafka``. Running it again is harmless.

    Args:
        settings: supplies ``kafka_bootstrap``; and, when ``specs`` is None, ``topic_prefix`` and
            ``partitions`` for :func:`tether.topics.topic_specs`.
        specs: the topics to ensure.
        timeout: seconds for the whole operation, including waiting for new topics' leaders.

    Returns:
        The names of the topics this call created (the others already existed and match).

    Raises:
        TopicError: a topic could not be created, or an existing topic has a different partition
            count or ``cleanup.policy`` than its spec, or fewer replicas or a lower
            ``min.insync.replicas`` than the settings ask (the message names every such topic).
    """
    if specs is None:
        specs = topic_specs(
            settings.topic_prefix,
            settings.partitions,
            min_insync_replicas=settings.kafka.min_insync_replicas,
            decisions_retention_ms=settings.decisions_retention_ms,
        )
    replicas = settings.kafka.replication_factor
    admin = AdminClient(admin_config(settings))
    deadline = time.monotonic() + timeout
    try:
        existing = admin.list_topics(timeout=timeout).topics
        missing = [spec for spec in specs if spec.name not in existing]
        created = _create(admin, missing, replicas, timeout) if missing else []
        partitions, replication = _await_leaders(admin, [spec.name for spec in specs], deadline)
        _enforce(admin, [s for s in specs if s.name in existing and s.enforced], deadline)
        problems = _partition_mismatches(specs, partitions)
        problems += _replication_shortfalls(specs, replication, replicas)
        problems += _config_mismatches(admin, specs, deadline)
    except KafkaException as exc:
        raise TopicError(f"Kafka at {settings.kafka_bootstrap}: {_reason(exc)}") from exc
    if problems:
        raise TopicError("; ".join(problems))
    return created


def _create(
    admin: AdminClient, specs: Sequence[TopicSpec], replicas: int, timeout: float
) -> list[str]:
    """Create ``specs``; return the names this call created.

    A topic that someone else created concurrently is left out and verified like existing ones.
    """
    futures = admin.create_topics(
        [
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=replicas,
                config=dict(spec.config),
            )
            for spec in specs
        ],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    created: list[str] = []
    errors: list[str] = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout + 5)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            errors.append(f"cannot create topic {name}: {error or exc}")
        else:
            created.append(name)
    if errors:
        raise TopicError("; ".join(errors))
    return created


def _await_leaders(
    admin: AdminClient, names: Sequence[str], deadline: float
) -> tuple[dict[str, int], dict[str, int]]:
    """Wait until every topic is in the metadata with a leader per partition.

    A topic that was just created is not usable at once (fetching its offsets or configs answers
    "not leader" or "unknown topic" for a moment); waiting here spares every caller that race.

    Returns:
        Each topic's partition count, and its fewest replicas of any partition.
    """
    while True:
        topics = admin.list_topics(timeout=max(0.5, deadline - time.monotonic())).topics
        counts: dict[str, int] = {}
        replication: dict[str, int] = {}
        for name in names:
            meta = topics.get(name)
            if (
                meta is not None
                and meta.error is None
                and meta.partitions
                and all(p.leader >= 0 for p in meta.partitions.values())
            ):
                counts[name] = len(meta.partitions)
                replication[name] = min(len(p.replicas) for p in meta.partitions.values())
        if len(counts) == len(names):
            return counts, replication
        if time.monotonic() >= deadline:
            waiting = ", ".join(sorted(set(names) - set(counts)))
            raise TopicError(f"topics have no partition leaders yet: {waiting}")
        time.sleep(0.1)


def _partition_mismatches(specs: Sequence[TopicSpec], counts: dict[str, int]) -> list[str]:
    return [
        f"topic {spec.name} exists with {counts[spec.name]} partitions, but tether expects "
        f"{spec.partitions} (set TETHER_PARTITIONS={counts[spec.name]} or "
        f"--partitions {counts[spec.name]}, or recreate the topic)"
        for spec in specs
        if counts[spec.name] != spec.partitions
    ]


def _replication_shortfalls(
    specs: Sequence[TopicSpec], replication: dict[str, int], replicas: int
) -> list[str]:
    return [
        f"topic {spec.name} has {replication[spec.name]} replica(s), but "
        f"TETHER_KAFKA__REPLICATION_FACTOR asks for {replicas} (add replicas with "
        "kafka-reassign-partitions, or recreate the topic)"
        for spec in specs
        if replication[spec.name] < replicas
    ]


def _enforce(admin: AdminClient, specs: Sequence[TopicSpec], deadline: float) -> None:
    """Set each spec's ``enforced`` configs on its existing topic where they differ (a changed
    ``TETHER_DECISIONS_RETENTION_MS`` takes effect on the next ``tether topics create``)."""
    for spec in specs:
        configs = _describe(admin, spec.name, deadline)
        changes = [
            ConfigEntry(
                key,
                spec.config[key],
                incremental_operation=AlterConfigOpType.SET,
            )
            for key in spec.enforced
            if key in spec.config
            and (configs[key].value if key in configs else None) != spec.config[key]
        ]
        if not changes:
            continue
        resource = ConfigResource(ConfigResource.Type.TOPIC, spec.name, incremental_configs=changes)
        wanted = ", ".join(f"{c.name}={c.value}" for c in changes)
        try:
            future = admin.incremental_alter_configs([resource])[resource]
            future.result(timeout=max(1.0, deadline - time.monotonic()))
        except (KafkaException, TimeoutError) as exc:  # a worker without AlterConfigs: not fatal
            _log.warning(
                "could not set %s on %s (%s): run `tether topics create` as an administrator",
                wanted,
                spec.name,
                _reason(exc) if isinstance(exc, KafkaException) else repr(exc),
            )
            continue
        _log.info("set %s on %s", wanted, spec.name)


def _config_mismatches(
    admin: AdminClient, specs: Sequence[TopicSpec], deadline: float
) -> list[str]:
    keys = CHECKED_CONFIGS + AT_LEAST_CONFIGS
    checked = [spec for spec in specs if any(key in spec.config for key in keys)]
    problems = []
    for spec in checked:
        configs = _describe(admin, spec.name, deadline)
        for key in keys:
            want = spec.config.get(key)
            have = configs[key].value if key in configs else None
            if want is None or have == want:
                continue
            if key in AT_LEAST_CONFIGS and have is not None and int(have) >= int(want):
                continue
            problems.append(f"topic {spec.name} has {key}={have}, but tether expects {want}")
    return problems


def _describe(admin: AdminClient, name: str, deadline: float) -> dict[str, ConfigEntry]:
    """A topic's configs, retrying while the broker does not know the topic yet."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    while True:
        remaining = max(0.5, deadline - time.monotonic())
        future = admin.describe_configs([resource], request_timeout=remaining)[resource]
        try:
            configs: dict[str, ConfigEntry] = future.result(timeout=remaining + 5)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retriable = (
                isinstance(error, KafkaError) and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            )
            if not retriable or time.monotonic() >= deadline:
                raise
            time.sleep(0.1)
        else:
            return configs


def _reason(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)
