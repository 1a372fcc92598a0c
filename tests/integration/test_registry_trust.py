"""Gateways trust Redis only while the registry sync vouches for it (issue 18 item 7), and the
sync never skips a record whose key is unknown (item 8). Real Kafka and Redis.

With the Kafka feed stale and Redis up but empty (restarted while no worker ran, a failover to a
lagging replica, a flush with the sync marks set again), every tier answered "not revoked",
uncounted. The gateway here is a revocation set whose own feed is stale (never bootstrapped),
so every answer comes from Redis or the tier.
"""

from __future__ import annotations

# token_id values are credential ids (jti), not secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from test_registry_rebuild import Registry
from test_sdk_watcher import ISSUER, Feed, eventually
from test_sdk_watcher_hold import PARTITIONS, beat_every_partition

from sdk_helpers import revocation
from streams.registry_sync import SYNCED, RegistrySync
from tether.adapters.kafka_admin import create_topics
from tether.adapters.redis_registry import FRESH_PREFIX, PARTITIONS_PREFIX, RedisRegistry
from tether.sdk.revocation_set import RevocationSet
from tether.security import KeySource, SetSigner, SetVerifier, StaticKeys, generate_key
from tether.security.keys import write_jwks
from tether.settings import Settings

STALENESS_S = 3.0


@pytest.fixture(scope="module")
def signer() -> SetSigner:
    return SetSigner(generate_key("ES256"), issuer=ISSUER)


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


@pytest.fixture
def view(settings, redis_client, fresh_topic_prefix) -> Iterator[Registry]:
    registry = Registry(settings, redis_client, fresh_topic_prefix)
    registry.fresh = [f"{FRESH_PREFIX}{registry.topic}:{p}" for p in range(PARTITIONS)]
    yield registry
    registry.close()
    redis_client.delete(*registry.fresh, f"{PARTITIONS_PREFIX}{registry.topic}")
    keys = registry.keys()
    if keys:
        redis_client.delete(*keys)


@contextmanager
def syncing(settings, view, verifier) -> Iterator[RegistrySync]:
    store = RedisRegistry(
        settings.redis_url.get_secret_value(), key_prefix=view.prefix, sync_topic=view.topic
    )
    sync = RegistrySync(settings, store, verifier, check_s=0.2, retry_s=0.2)
    sync.start()
    try:
        yield sync
    finally:
        sync.stop()


@contextmanager
def worker_heartbeats(feed: Feed) -> Iterator[None]:
    """A live worker: heartbeats on every partition, twice a second."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            beat_every_partition(feed)
            feed.producer.flush(5)
            stop.wait(0.5)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def gateway(settings: Settings, view: Registry) -> tuple[RevocationSet, RedisRegistry]:
    """A gateway whose own feed is stale: Redis or the tier decides every answer."""
    registry = RedisRegistry(
        settings.redis_url.get_secret_value(),
        key_prefix=view.prefix,
        sync_topic=view.topic,
        sync_staleness_s=STALENESS_S,
    )
    verifier = SetVerifier(StaticKeys([]), issuer=ISSUER)
    return RevocationSet(registry=registry, verifier=verifier), registry


def publish(settings: Settings, signer: SetSigner, count: int) -> set[str]:
    feed = Feed(settings, signer)
    start = datetime.now(UTC)
    for i in range(count):
        feed.revoke(revocation("token", f"jti-{i}", rid=f"rv-{i}", start=start, lasts=3600))
    feed.flush()
    return {f"token:jti-{i}" for i in range(count)}


def test_an_empty_redis_nobody_vouches_for_is_not_trusted(settings, view):
    """Redis restarted while no worker ran: empty, marks set (or not): nothing vouches."""
    rset, registry = gateway(settings, view)
    view.client.mset(dict.fromkeys(view.marks, SYNCED))  # even with every mark saying synced
    view.client.set(f"{PARTITIONS_PREFIX}{view.topic}", PARTITIONS)
    assert rset.is_revoked(token_id="jti-0", tier="high") is True
    assert rset.is_revoked(token_id="jti-0") is True
    assert rset.is_revoked(token_id="jti-0", tier="low") is False
    assert rset.stats.fail_open == 1
    assert registry.unvouched == 3


def test_redis_is_trusted_while_the_sync_vouches_and_not_once_it_lags(settings, view, signer):
    wanted = {view.prefix + k for k in publish(settings, signer, 30)}
    rset, registry = gateway(settings, view)
    verifier = SetVerifier(StaticKeys([signer.public_jwk()]), issuer=ISSUER)
    feed = Feed(settings, signer)
    with worker_heartbeats(feed):
        with syncing(settings, view, verifier):
            eventually(lambda: view.keys() == wanted, timeout=30)
            eventually(registry.vouched, timeout=30)
            assert rset.is_revoked(token_id="jti-0", tier="low") is True
            assert rset.is_revoked(token_id="never-revoked", tier="high") is False  # trusted
            assert (rset.stats.fail_closed, rset.stats.fail_open) == (0, 0)
        # the sync stops (its worker died, or a replica stops receiving): Redis goes stale
        time.sleep(STALENESS_S + 1)
        assert not registry.vouched()
        assert rset.is_revoked(token_id="jti-0", tier="low") is True  # present: still revoked
        assert rset.is_revoked(token_id="never-revoked", tier="high") is True
        assert rset.is_revoked(token_id="never-revoked", tier="low") is False
        assert rset.stats.fail_open == 1


def test_a_flush_with_the_marks_set_again_is_not_trusted_and_is_rebuilt(settings, view, signer):
    wanted = {view.prefix + k for k in publish(settings, signer, 30)}
    rset, registry = gateway(settings, view)
    verifier = SetVerifier(StaticKeys([signer.public_jwk()]), issuer=ISSUER)
    feed = Feed(settings, signer)
    with worker_heartbeats(feed), syncing(settings, view, verifier) as sync:
        eventually(lambda: view.keys() == wanted, timeout=30)
        eventually(registry.vouched, timeout=30)
        # a flush (or a failover to an empty replica) and the marks set again at once
        view.client.delete(*view.keys(), *view.fresh)
        view.client.mset(dict.fromkeys(view.marks, SYNCED))
        assert rset.is_revoked(token_id="jti-0", tier="high") is True  # never "not revoked"
        # the sync notices its freshness heartbeats are gone and rebuilds what Redis lost
        eventually(lambda: view.keys() == wanted, timeout=30)
        eventually(registry.vouched, timeout=30)
        assert sync.rebuilds >= 1
        assert rset.is_revoked(token_id="jti-0", tier="low") is True


def test_a_lagging_replica_is_noticed_by_the_sync_and_not_trusted_meanwhile(settings, view, signer):
    """What a failover to a lagging replica looks like: the freshness heartbeats go back."""
    wanted = {view.prefix + k for k in publish(settings, signer, 30)}
    rset, registry = gateway(settings, view)
    verifier = SetVerifier(StaticKeys([signer.public_jwk()]), issuer=ISSUER)
    feed = Feed(settings, signer)
    with worker_heartbeats(feed), syncing(settings, view, verifier) as sync:
        eventually(lambda: view.keys() == wanted, timeout=30)
        eventually(registry.vouched, timeout=30)
        old = int((time.time() - 60) * 1000)
        view.client.delete(*view.keys())
        view.client.mset(dict.fromkeys(view.fresh, old))
        assert rset.is_revoked(token_id="jti-0", tier="high") is True
        eventually(lambda: view.keys() == wanted, timeout=30)
        assert sync.rebuilds >= 1


def test_the_sync_holds_records_whose_key_the_jwks_lacks_and_never_commits_past_them(
    settings, view, signer, tmp_path
):
    wanted = {view.prefix + k for k in publish(settings, signer, 300)}
    jwks = tmp_path / "jwks.json"  # unreachable at first
    verifier = SetVerifier(KeySource(jwks, min_refetch_s=0.2), issuer=ISSUER)
    with syncing(settings, view, verifier) as sync:
        time.sleep(3.0)
        assert view.keys() == set()
        assert sync.skipped == 0
        assert sync.held >= 1
        write_jwks(jwks, [signer.public_jwk()])
        eventually(lambda: view.keys() == wanted, timeout=30)
        assert sync.skipped == 0
