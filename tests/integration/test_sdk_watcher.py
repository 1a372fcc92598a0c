"""The gateway watcher against the real broker: bootstrap from the compacted topic, tail, staleness.

Records are signed SETs, as the worker publishes them; a test signer stands in for the worker
and the watcher reads its public key from a JWKS file (``TETHER_JWKS``).
"""

from __future__ import annotations

# token_id values are credential ids (jti), not secrets
import time
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer

from sdk_helpers import heartbeat, revocation
from tether.adapters.kafka_admin import create_topics
from tether.adapters.kafka_config import producer_config
from tether.models.codec import encode
from tether.models.outputs import Heartbeat, Revocation
from tether.sdk.watcher import Watcher
from tether.security import SetSigner, generate_key
from tether.security.keys import write_jwks
from tether.settings import Settings

ISSUER = "urn:tether:monitor"


@pytest.fixture(scope="module")
def signer() -> SetSigner:
    """The worker's key."""
    return SetSigner(generate_key("RS256"), issuer=ISSUER)


@pytest.fixture(scope="module")
def forger() -> SetSigner:
    """Someone who can write to the topic, with a key no gateway trusts."""
    return SetSigner(generate_key("RS256"), issuer=ISSUER)


@pytest.fixture
def jwks(tmp_path, signer) -> str:
    path = tmp_path / "jwks.json"
    write_jwks(path, [signer.public_jwk()])
    return str(path)


def make_settings(kafka_bootstrap: str, prefix: str, jwks: str, partitions: int) -> Settings:
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"{prefix}.",
        partitions=partitions,
        jwks=jwks,
        issuer=ISSUER,
    )


@pytest.fixture
def settings(kafka_bootstrap, fresh_topic_prefix, kafka_admin, jwks):
    settings = make_settings(kafka_bootstrap, fresh_topic_prefix, jwks, partitions=3)
    created = create_topics(settings)
    yield settings
    for future in kafka_admin.delete_topics(created, operation_timeout=30).values():
        future.result(30)


class Feed:
    """Writes signed revocations and heartbeats to the revocations topic, as the worker does."""

    def __init__(self, settings: Settings, signer: SetSigner) -> None:
        self.topic = settings.topic("revocations")
        self.signer = signer
        self.producer = Producer(producer_config(settings, client_id="test-feed"))
        self.sequence = 0

    def revoke(self, rev: Revocation, signer: SetSigner | None = None) -> None:
        value = (signer or self.signer).revocation(rev)
        self.producer.produce(self.topic, key=rev.target.key.encode(), value=value)

    def beat(self, source: str = "w1", signer: SetSigner | None = None) -> None:
        self.sequence += 1
        hb = heartbeat(datetime.now(UTC), source).model_copy(update={"sequence": self.sequence})
        value = (signer or self.signer).heartbeat(hb)
        self.producer.produce(self.topic, key=f"heartbeat:{source}".encode(), value=value)

    def raw(self, key: bytes | None, value: bytes | None) -> None:
        self.producer.produce(self.topic, key=key, value=value)

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


def eventually(condition, timeout: float = 5.0, step: float = 0.005) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(step)
    return time.monotonic() - started


def now() -> datetime:
    return datetime.now(UTC)


def test_bootstraps_every_live_revocation_then_sees_a_new_one_within_a_second(settings, signer):
    feed = Feed(settings, signer)
    n = 300
    for i in range(n):
        feed.revoke(revocation("token", f"jti-{i}", rid=f"rv-{i}", start=now()))
    feed.revoke(revocation("token", "jti-expired", lasts=-5, rid="rv-expired", start=now()))
    feed.raw(b"token:junk", b"this is not a revocation")
    feed.beat()
    feed.flush()

    seen = []
    with Watcher(settings, on_record=seen.append) as watcher:
        assert watcher.wait_ready(30), watcher.last_error
        assert all(watcher.is_revoked(token_id=f"jti-{i}") for i in range(n))
        assert not watcher.is_revoked(token_id="jti-expired")
        assert not watcher.is_revoked(token_id="jti-never")  # fresh feed: trusted "no"
        assert watcher.stats.revocations == n + 1
        assert watcher.stats.bad_records == 1
        assert watcher.stats.rejected == {"malformed": 1}
        assert watcher.stats.heartbeats == 1

        feed.revoke(revocation("workflow", "wf-new", rid="rv-new", start=now()))
        feed.flush()
        assert eventually(lambda: watcher.is_revoked(workflow_id="wf-new"), timeout=1.0) < 1.0
    assert sum(isinstance(r, Revocation) for r in seen) == n + 2
    assert sum(isinstance(r, Heartbeat) for r in seen) == 1


def test_a_compacted_history_keeps_the_later_not_after(settings, signer):
    feed = Feed(settings, signer)
    start = now()
    feed.revoke(revocation("token", "jti-1", lasts=3600, rid="long", start=start))
    feed.revoke(revocation("token", "jti-1", lasts=1, rid="short", start=start))
    feed.beat()
    feed.flush()
    with Watcher(settings) as watcher:
        assert watcher.wait_ready(30)
        until = watcher.revocations.revoked_until("token", "jti-1")
        assert until == pytest.approx(start.timestamp() + 3600)


def test_heartbeat_staleness_flips_to_fail_closed_and_back(settings, signer):
    feed = Feed(settings, signer)
    feed.beat()
    feed.flush()
    with Watcher(settings, staleness_s=1.0, fail_closed_tiers={"high", "default"}) as watcher:
        assert watcher.wait_ready(30)
        # A fresh heartbeat once the watcher follows the feed: bootstrapping on a slow machine
        # can take longer than the 1 s bound, so the first one may already be stale.
        feed.beat()
        feed.flush()
        eventually(lambda: watcher.is_revoked(token_id="t") is False, timeout=5.0, step=0.02)
        eventually(lambda: watcher.is_revoked(token_id="t"), timeout=3.0, step=0.05)
        assert watcher.is_revoked(token_id="t", tier="high") is True
        assert watcher.is_revoked(token_id="t", tier="low") is False
        assert watcher.stats.fail_open == 1
        assert watcher.stats.fail_closed >= 2

        feed.beat()
        feed.flush()
        eventually(lambda: not watcher.is_revoked(token_id="t"), timeout=2.0)


def test_fails_closed_until_the_topic_exists_then_bootstraps(
    kafka_bootstrap, fresh_topic_prefix, kafka_admin, jwks, signer
):
    settings = make_settings(kafka_bootstrap, fresh_topic_prefix, jwks, partitions=2)
    with Watcher(settings) as watcher:
        time.sleep(1.0)
        assert not watcher.ready.is_set()
        assert watcher.last_error is not None
        assert watcher.is_revoked(token_id="t") is True
        assert watcher.is_revoked(token_id="t", tier="low") is False
        created = create_topics(settings)
        try:
            feed = Feed(settings, signer)
            feed.beat()
            feed.flush()
            assert watcher.wait_ready(30)
            eventually(lambda: not watcher.is_revoked(token_id="t"), timeout=5.0)
        finally:
            for future in kafka_admin.delete_topics(created, operation_timeout=30).values():
                future.result(30)


def test_tail_mode_sees_only_new_records(settings, signer):
    feed = Feed(settings, signer)
    feed.revoke(revocation("token", "old", rid="rv-old", start=now()))
    feed.flush()
    seen = []
    with Watcher(settings, from_beginning=False, on_record=seen.append) as watcher:
        assert watcher.wait_ready(10)
        time.sleep(0.5)  # let the assignment settle at the end of each partition
        feed.revoke(revocation("token", "new", rid="rv-new", start=now()))
        feed.beat()
        feed.flush()
        eventually(lambda: watcher.revocations.revoked_until("token", "new") is not None)
        assert watcher.revocations.revoked_until("token", "old") is None
    assert [r.target.id for r in seen if isinstance(r, Revocation)] == ["new"]


def test_reports_lag_and_survives_a_failing_callback(settings, signer):
    feed = Feed(settings, signer)
    for i in range(20):
        feed.revoke(revocation("token", f"jti-{i}", rid=f"rv-{i}", start=now()))
    feed.flush()

    def explode(record):
        raise RuntimeError("callback bug")

    with Watcher(settings, on_record=explode) as watcher:
        assert watcher.wait_ready(30)
        eventually(lambda: watcher.stats.lag == 0, timeout=3.0, step=0.05)
        assert len(watcher.revocations) == 20


def test_unsigned_forged_and_tombstone_records_change_nothing(settings, signer, forger):
    """Write access to the topic is not enough to revoke, un-revoke or fake a live feed."""
    feed = Feed(settings, signer)
    real = revocation("token", "jti-real", lasts=3600, rid="rv-real", start=now())
    feed.revoke(real)
    feed.flush()
    settings = settings.model_copy(update={"watcher_hold_s": 2.0, "jwks_refetch_s": 0.2})
    with Watcher(settings, staleness_s=1.0) as watcher:
        assert watcher.wait_ready(30), watcher.last_error
        assert eventually(lambda: watcher.revocations.revoked_until("token", "jti-real"))

        victim = revocation("token", "jti-victim", rid="rv-victim", start=now())
        feed.revoke(victim, signer=forger)  # a forged revocation (unknown key)
        feed.raw(victim.target.key.encode(), encode(victim))  # an unsigned one
        lifted = revocation("token", "jti-real", lasts=0.5, rid="rv-lift", start=now())
        feed.revoke(lifted, signer=forger)  # a forged "shorter" revocation
        feed.raw(real.target.key.encode(), None)  # a tombstone: a forged un-revocation
        feed.flush()
        eventually(lambda: watcher.stats.tombstones == 1 and watcher.stats.held == 2)
        assert watcher.stats.rejected == {"unsigned": 1}

        time.sleep(1.5)  # past the forged not_after; no heartbeat was ever verified
        assert watcher.is_revoked(token_id="jti-real", tier="low") is True
        assert watcher.revocations.revoked_until("token", "jti-real") == pytest.approx(
            real.not_after.timestamp()
        )
        assert watcher.revocations.revoked_until("token", "jti-victim") is None

        feed.beat(signer=forger)  # a forged heartbeat does not make the dead feed look alive
        feed.raw(b"heartbeat:w1", encode(heartbeat(now(), "w1")))
        feed.flush()
        eventually(lambda: watcher.stats.records == 7)
        assert watcher.stats.heartbeats == 0
        assert not watcher.revocations.is_fresh()
        assert watcher.is_revoked(token_id="anything") is True  # fails closed

        # The forged records (unknown key) keep the watcher in doubt until they are given up:
        # after TETHER_WATCHER_HOLD_S and a JWKS read that still lacks their key.
        eventually(lambda: watcher.stats.held == 0, timeout=10)
        assert watcher.stats.rejected["unknown_kid"] == 3
        feed.beat()  # the real worker's heartbeat does
        feed.flush()
        eventually(watcher.revocations.is_fresh)
        assert watcher.is_revoked(token_id="anything") is False
