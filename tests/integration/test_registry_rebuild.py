"""A Redis that comes back empty is rebuilt: the registry sync reads the revocations topic again.

Real Kafka and Redis. "Redis lost its data" is simulated by deleting this test's keys and the
sync's marks (a restart without persistence loses the same things; the test must not flush a
Redis other tests share).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from test_sdk_watcher import ISSUER, Feed, eventually

from sdk_helpers import revocation
from streams.registry_sync import REBUILDING, SYNCED, RegistrySync
from tether.adapters.kafka_admin import create_topics
from tether.adapters.redis_registry import SYNC_MARK_PREFIX, RedisRegistry
from tether.security import SetSigner, SetVerifier, StaticKeys, generate_key
from tether.settings import Settings

PARTITIONS = 3
REVOCATIONS = 60


@pytest.fixture
def signer() -> SetSigner:
    return SetSigner(generate_key("RS256"), issuer=ISSUER)


@pytest.fixture
def settings(kafka_bootstrap, redis_url, fresh_topic_prefix, kafka_admin):
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        topic_prefix=f"{fresh_topic_prefix}.",
        partitions=PARTITIONS,
        issuer=ISSUER,
    )
    created = create_topics(settings)
    yield settings
    for future in kafka_admin.delete_topics(created, operation_timeout=30).values():
        future.result(30)


class Registry:
    """The test's view of the registry: its keys and the sync's marks."""

    def __init__(self, settings: Settings, redis_client, prefix: str) -> None:
        self.client = redis_client
        self.prefix = f"{prefix}:revoked:"
        self.topic = settings.topic("revocations")
        self.marks = [f"{SYNC_MARK_PREFIX}{self.topic}:{p}" for p in range(PARTITIONS)]

    def keys(self) -> set[str]:
        return {k.decode() for k in self.client.scan_iter(match=f"{self.prefix}*", count=1000)}

    def mark_values(self) -> list[str | None]:
        return [None if v is None else v.decode() for v in self.client.mget(self.marks)]

    def wait_synced(self, wanted: set[str]) -> None:
        """Until the registry holds exactly ``wanted`` and every partition is marked synced."""
        eventually(lambda: self.keys() == wanted, timeout=30)
        eventually(lambda: self.mark_values() == [SYNCED] * PARTITIONS, timeout=30)

    def lose_everything(self) -> None:
        """What a Redis restarted without persistence has lost of this pipeline."""
        doomed = [*self.keys(), *self.marks]
        self.client.delete(*doomed)

    def close(self) -> None:
        self.client.delete(*self.marks)


@pytest.fixture
def registry(settings, redis_client, fresh_topic_prefix) -> Iterator[Registry]:
    view = Registry(settings, redis_client, fresh_topic_prefix)
    yield view
    view.close()


@contextmanager
def _syncing(settings: Settings, signer: SetSigner, view: Registry) -> Iterator[RegistrySync]:
    """A registry sync writing into ``view``'s keys, running for the ``with`` block."""
    store = RedisRegistry(settings.redis_url.get_secret_value(), key_prefix=view.prefix)
    verifier = SetVerifier(StaticKeys([signer.public_jwk()]), issuer=ISSUER)
    sync = RegistrySync(settings, store, verifier, check_s=0.2)
    sync.start()
    try:
        yield sync
    finally:
        sync.stop()


def _publish(settings: Settings, signer: SetSigner, first: int, count: int) -> set[str]:
    """``count`` live token revocations; their registry keys (without the prefix)."""
    feed = Feed(settings, signer)
    start = datetime.now(UTC)
    for i in range(first, first + count):
        feed.revoke(revocation("token", f"jti-{i}", rid=f"rv-{i}", start=start, lasts=3600))
    feed.beat()
    feed.flush()
    return {f"token:jti-{i}" for i in range(first, first + count)}


def test_a_registry_that_lost_its_data_is_rebuilt_from_the_topic(settings, signer, registry):
    wanted = {registry.prefix + k for k in _publish(settings, signer, 0, REVOCATIONS)}
    with _syncing(settings, signer, registry) as sync:
        registry.wait_synced(wanted)

        registry.lose_everything()  # committed offsets now point past everything Redis lost
        registry.wait_synced(wanted)
        assert sync.rebuilds >= 1

        # after the rebuild the sync goes on with new revocations as before
        more = {registry.prefix + k for k in _publish(settings, signer, REVOCATIONS, 10)}
        eventually(lambda: registry.keys() == wanted | more, timeout=30)


def test_a_rebuild_interrupted_by_a_crash_is_started_over_by_the_next_owner(
    settings, signer, registry
):
    wanted = {registry.prefix + k for k in _publish(settings, signer, 0, REVOCATIONS)}
    with _syncing(settings, signer, registry):
        registry.wait_synced(wanted)
    # the owner died part way through a rebuild: marks say so, most keys are missing
    registry.lose_everything()
    registry.client.mset(dict.fromkeys(registry.marks, REBUILDING))
    with _syncing(settings, signer, registry):
        registry.wait_synced(wanted)
