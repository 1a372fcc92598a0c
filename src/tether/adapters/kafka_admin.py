"""Kafka administration: wait for the broker, create tether's topics explicitly and idempotently."""

from __future__ import annotations

import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
    AdminClient,
    ConfigResource,
    NewTopic,
)

from tether.adapters.kafka_config import admin_config
from tether.settings import Settings
from tether.topics import TopicSpec, topic_specs

# Existing topics must agree with the spec on these configs: a revocations topic that deletes
# instead of compacting silently forgets live revocations, so a gateway bootstrapping from it
# would allow what was revoked.
CHECKED_CONFIGS = ("cleanup.policy",)


class BrokerUnavailableError(TimeoutError):
    """The broker did not answer a metadata request in time."""


class TopicError(RuntimeError):
    """A topic could not be created, or an existing one does not match its spec."""


def wait_for_broker(settings: Settings, timeout: float = 30.0) -> int:
    """Block until the broker answers metadata and lists at least one live broker.

    Args:
        settings: supplies ``kafka_bootstrap``.
        timeout: seconds to keep trying.

    Returns:
        The number of live brokers.

    Raises:
        BrokerUnavailableError: nothing answered within ``timeout``.
    """
    admin = AdminClient(admin_config(settings))
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerUnavailableError(
                f"Kafka at {settings.kafka_bootstrap} did not answer within {timeout:g} s: {last}"
            )
        try:
            metadata = admin.list_topics(timeout=max(0.1, min(remaining, 2.0)))
        except KafkaException as exc:
            last = str(exc.args[0] if exc.args else exc)
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            continue
        if metadata.brokers:
            return len(metadata.brokers)
        last = "metadata lists no live broker"


def create_topics(
    settings: Settings, specs: Sequence[TopicSpec] | None = None, *, timeout: float = 30.0
) -> list[str]:
    """Create every topic in ``specs`` that does not exist yet; verify the ones that do.

    Topics are created with their explicit partition counts and configs and the broker's default
    replication factor. Running it again is harmless.

    Args:
        settings: supplies ``kafka_bootstrap``; and, when ``specs`` is None, ``topic_prefix`` and
            ``partitions`` for :func:`tether.topics.topic_specs`.
        specs: the topics to ensure.
        timeout: seconds for each admin request.

    Returns:
        The names of the topics this call created (the others already existed and match).

    Raises:
        TopicError: a topic could not be created, or an existing topic has a different partition
            count or ``cleanup.policy`` than its spec (the message names every such topic).
    """
    if specs is None:
        specs = topic_specs(settings.topic_prefix, settings.partitions)
    admin = AdminClient(admin_config(settings))
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise TopicError(f"cannot list topics at {settings.kafka_bootstrap}: {exc}") from exc
    missing = [spec for spec in specs if spec.name not in existing]
    created = _create(admin, missing, timeout) if missing else []
    present = [spec for spec in specs if spec.name not in created]
    problems = _mismatches(admin, present, timeout)
    if problems:
        raise TopicError("; ".join(problems))
    return created


def _create(admin: AdminClient, specs: Sequence[TopicSpec], timeout: float) -> list[str]:
    """Create ``specs``; return the names this call created.

    A topic that someone else created concurrently is left out and verified like existing ones.
    """
    futures = admin.create_topics(
        [
            NewTopic(spec.name, num_partitions=spec.partitions, config=dict(spec.config))
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


def _mismatches(admin: AdminClient, specs: Sequence[TopicSpec], timeout: float) -> list[str]:
    if not specs:
        return []
    topics = admin.list_topics(timeout=timeout).topics
    problems = []
    for spec in specs:
        actual = len(topics[spec.name].partitions) if spec.name in topics else 0
        if actual != spec.partitions:
            problems.append(
                f"topic {spec.name} exists with {actual} partitions, but tether expects "
                f"{spec.partitions} (set TETHER_PARTITIONS={actual} or --partitions {actual}, "
                f"or recreate the topic)"
            )
    resources = {
        spec.name: ConfigResource(ConfigResource.Type.TOPIC, spec.name)
        for spec in specs
        if any(key in spec.config for key in CHECKED_CONFIGS)
    }
    if not resources:
        return problems
    described = admin.describe_configs(list(resources.values()), request_timeout=timeout)
    for spec in specs:
        if spec.name not in resources:
            continue
        configs = described[resources[spec.name]].result(timeout=timeout + 5)
        for key in CHECKED_CONFIGS:
            want = spec.config.get(key)
            have = configs[key].value if key in configs else None
            if want is not None and have != want:
                problems.append(f"topic {spec.name} has {key}={have}, but tether expects {want}")
    return problems
