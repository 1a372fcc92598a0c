"""Fixtures for tests against the real Apache Kafka and Redis (started by `make services`).

Every test under tests/integration is marked `integration` automatically. The services are
required, not optional: when one is unreachable the tests fail and say how to start it.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_START_HINT = (
    "Start the services with `make services` (scripts/services.sh up), "
    "or run `make test`, which starts them first."
)
_HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m deselection sees the items
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


def _tcp_reachable(host: str, port: int, timeout: float = 3.0) -> str | None:
    """Return None if something accepts connections at host:port, else the error."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return str(exc)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap servers of the test broker (TETHER_KAFKA_BOOTSTRAP), checked to answer metadata."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    bootstrap = os.environ.get("TETHER_KAFKA_BOOTSTRAP", DEFAULT_KAFKA_BOOTSTRAP)
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if (error := _tcp_reachable(host or "127.0.0.1", int(port))) is not None:
        pytest.fail(
            f"Kafka is not reachable at {bootstrap} (TETHER_KAFKA_BOOTSTRAP): {error}. {_START_HINT}",
            pytrace=False,
        )
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        metadata = admin.list_topics(timeout=15)
    except KafkaException as exc:
        pytest.fail(
            f"Kafka at {bootstrap} accepts connections but does not answer metadata: {exc}. "
            f"{_START_HINT}",
            pytrace=False,
        )
    if not metadata.brokers:
        pytest.fail(f"Kafka at {bootstrap} lists no live broker. {_START_HINT}", pytrace=False)
    return bootstrap


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the test Redis (TETHER_REDIS_URL), checked to answer PING."""
    import redis

    url = os.environ.get("TETHER_REDIS_URL", DEFAULT_REDIS_URL)
    parts = urlsplit(url)
    if (error := _tcp_reachable(parts.hostname or "127.0.0.1", parts.port or 6379)) is not None:
        pytest.fail(
            f"Redis is not reachable at {url} (TETHER_REDIS_URL): {error}. {_START_HINT}",
            pytrace=False,
        )
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {url} does not answer PING: {exc}. {_START_HINT}", pytrace=False)
    finally:
        client.close()
    return url


@pytest.fixture
def fresh_topic_prefix() -> str:
    """A prefix unique to this test, e.g. "it-3f2a9c1b7d4e", for topics, groups and Redis keys.

    Compose names as `f"{prefix}.intents"`, `f"{prefix}.group"`, `f"{prefix}:revoked:..."`, so
    that tests never see each other's data on the shared broker and Redis.
    """
    return f"it-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def kafka_admin(kafka_bootstrap: str) -> object:
    """A confluent_kafka AdminClient connected to the test broker."""
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def redis_client(redis_url: str, fresh_topic_prefix: str) -> Iterator[object]:
    """A redis.Redis client; keys under `fresh_topic_prefix` are deleted afterwards."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=5)
    try:
        yield client
    finally:
        keys = list(client.scan_iter(match=f"{fresh_topic_prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
