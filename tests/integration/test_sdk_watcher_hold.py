"""The watcher against the real broker when keys are unknown, and per-partition freshness.

Issue 18 item 8: a gateway starting while its JWKS is unreachable held at most 10,000 records
with an unknown key id, dropped the rest for good, then reported ready and fresh (2,000 of
12,000 live revocations answered "not revoked" at tier high). Item 9: a watcher that cannot
read one partition still looked fresh.
"""

from __future__ import annotations

# token_id values are credential ids (jti), not secrets
import time
from datetime import UTC, datetime

import pytest
from test_sdk_watcher import ISSUER, Feed, eventually

from sdk_helpers import revocation
from tether.adapters.kafka_admin import create_topics
from tether.models.outputs import Heartbeat
from tether.sdk.watcher import Watcher
from tether.security import SetSigner, generate_key
from tether.security.keys import write_jwks
from tether.settings import Settings

PARTITIONS = 3


@pytest.fixture(scope="module")
def signer() -> SetSigner:
    return SetSigner(generate_key("ES256"), issuer=ISSUER)


@pytest.fixture(scope="module")
def bogus() -> SetSigner:
    return SetSigner(generate_key("ES256"), issuer=ISSUER)


@pytest.fixture
def topics(kafka_bootstrap, fresh_topic_prefix, kafka_admin):
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.", partitions=3
    )
    created = create_topics(settings)
    yield settings
    for future in kafka_admin.delete_topics(created, operation_timeout=30).values():
        future.result(30)


def gateway(topics: Settings, jwks: str, **overrides) -> Settings:
    values = {
        "kafka_bootstrap": topics.kafka_bootstrap,
        "topic_prefix": topics.topic_prefix,
        "partitions": PARTITIONS,
        "jwks": jwks,
        "issuer": ISSUER,
        "jwks_refetch_s": 0.2,
        "staleness_s": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


def beat_every_partition(feed: Feed, source: str = "w1", lag: float = 0.0) -> None:
    """What a worker writes every heartbeat interval: one signed heartbeat per partition."""
    feed.sequence += 1
    for p in range(PARTITIONS):
        hb = Heartbeat(
            emitted_at=datetime.now(UTC),
            source=source,
            sequence=feed.sequence,
            partition=p,
            input_lag_s=lag,
        )
        feed.producer.produce(
            feed.topic,
            key=f"heartbeat:{source}:{p}".encode(),
            value=feed.signer.heartbeat(hb),
            partition=p,
        )


def test_a_gateway_starting_while_its_jwks_is_unreachable_loses_no_revocation(
    topics, signer, tmp_path
):
    n = 12_000
    feed = Feed(topics, signer)
    start = datetime.now(UTC)
    for i in range(n):
        feed.revoke(revocation("token", f"jti-{i}", rid=f"rv-{i}", lasts=3600, start=start))
    beat_every_partition(feed)
    feed.flush()
    jwks = tmp_path / "jwks.json"  # unreachable: not there yet
    settings = gateway(topics, str(jwks), watcher_hold_max=2000)
    with Watcher(settings) as watcher:
        time.sleep(4.0)
        assert not watcher.ready.is_set()
        assert not watcher.revocations.is_fresh()
        assert watcher.is_revoked(token_id="jti-unknown", tier="high") is True
        assert watcher.stats.held <= 2000
        assert watcher.stats.rejected.get("unknown_kid", 0) == 0

        write_jwks(jwks, [signer.public_jwk()])  # the JWKS comes back
        assert watcher.wait_ready(60), watcher.last_error
        missing = [i for i in range(n) if not watcher.is_revoked(token_id=f"jti-{i}", tier="low")]
        assert missing == []
        assert watcher.stats.rejected.get("unknown_kid", 0) == 0
        beat_every_partition(feed)
        feed.flush()
        eventually(watcher.revocations.is_fresh, timeout=10)


def test_a_flood_of_bogus_kids_delays_but_never_loses_a_real_revocation(
    topics, signer, bogus, tmp_path
):
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, [signer.public_jwk()])
    feed = Feed(topics, signer)
    start = datetime.now(UTC)
    for i in range(3000):  # six times what the watcher may hold
        feed.revoke(revocation("token", f"x-{i}", rid=f"bogus-{i}", start=start), signer=bogus)
    real = 300
    for i in range(real):
        feed.revoke(revocation("token", f"jti-{i}", rid=f"rv-{i}", lasts=3600, start=start))
    beat_every_partition(feed)
    feed.flush()
    settings = gateway(topics, str(jwks), watcher_hold_max=500, watcher_hold_s=1.0)
    with Watcher(settings) as watcher:
        time.sleep(1.0)
        assert watcher.is_revoked(token_id="someone", tier="high") is True  # in doubt meanwhile
        assert watcher.wait_ready(90), watcher.last_error
        assert all(watcher.is_revoked(token_id=f"jti-{i}", tier="low") for i in range(real))
        assert watcher.stats.rejected["unknown_kid"] == 3000
        assert watcher.stats.hold_full > 0  # the partitions were paused and read again


def test_a_partition_without_heartbeats_makes_the_watcher_stale(topics, signer, tmp_path):
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, [signer.public_jwk()])
    feed = Feed(topics, signer)
    settings = gateway(topics, str(jwks), staleness_s=2.0)
    with Watcher(settings) as watcher:
        beat_every_partition(feed)
        feed.flush()
        assert watcher.wait_ready(30)
        eventually(watcher.revocations.is_fresh, timeout=10)
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:  # partition 2 goes silent (or unreadable)
            feed.sequence += 1
            for p in (0, 1):
                hb = Heartbeat(
                    emitted_at=datetime.now(UTC), source="w1", sequence=feed.sequence, partition=p
                )
                key = f"heartbeat:w1:{p}".encode()  # a compacted topic refuses keyless records
                feed.producer.produce(feed.topic, key=key, value=signer.heartbeat(hb), partition=p)
            feed.flush()
            time.sleep(0.3)
        assert not watcher.revocations.is_fresh()
        assert watcher.is_revoked(token_id="t", tier="high") is True


def test_a_worker_reporting_minutes_of_input_lag_makes_the_watcher_stale(topics, signer, tmp_path):
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, [signer.public_jwk()])
    feed = Feed(topics, signer)
    settings = gateway(topics, str(jwks), max_input_lag_s=30.0)
    with Watcher(settings) as watcher:
        beat_every_partition(feed, lag=0.1)
        feed.flush()
        assert watcher.wait_ready(30)
        eventually(watcher.revocations.is_fresh, timeout=10)
        for _ in range(10):  # both workers alive; w2 applies its input three minutes late
            beat_every_partition(feed, lag=0.1)
            beat_every_partition(feed, source="w2", lag=180.0)
            feed.flush()
            time.sleep(0.3)
            assert watcher.stats.heartbeats >= 2 * PARTITIONS
        assert not watcher.revocations.is_fresh()
        assert watcher.is_revoked(token_id="t", tier="high") is True
        beat_every_partition(feed, source="w2", lag=0.5)  # w2 has caught up
        feed.flush()
        eventually(watcher.revocations.is_fresh, timeout=10)
