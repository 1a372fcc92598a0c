"""The gateway watcher against the real broker: bootstrap from the compacted topic, tail, staleness."""

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
from tether.settings import Settings


@pytest.fixture
def settings(kafka_bootstrap, fresh_topic_prefix, kafka_admin):
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.", partitions=3
    )
    created = create_topics(settings)
    yield settings
    for future in kafka_admin.delete_topics(created, operation_timeout=30).values():
        future.result(30)


class Feed:
    """Writes revocations and heartbeats to the revocations topic, as the worker does."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic("revocations")
        self.producer = Producer(producer_config(settings, client_id="test-feed"))

    def revoke(self, rev: Revocation) -> None:
        self.producer.produce(self.topic, key=rev.target.key.encode(), value=encode(rev))

    def beat(self, source: str = "w1") -> None:
        hb = heartbeat(datetime.now(UTC), source)
        self.producer.produce(self.topic, key=f"heartbeat:{source}".encode(), value=encode(hb))

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


def test_bootstraps_every_live_revocation_then_sees_a_new_one_within_a_second(settings):
    feed = Feed(settings)
    n = 300
    for i in range(n):
        feed.revoke(revocation("token", f"jti-{i}", rid=f"rv-{i}", start=now()))
    feed.revoke(revocation("token", "jti-expired", lasts=-5, start=now()))
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
        assert watcher.stats.heartbeats == 1

        feed.revoke(revocation("workflow", "wf-new", start=now()))
        feed.flush()
        assert eventually(lambda: watcher.is_revoked(workflow_id="wf-new"), timeout=1.0) < 1.0
    assert sum(isinstance(r, Revocation) for r in seen) == n + 2
    assert sum(isinstance(r, Heartbeat) for r in seen) == 1


def test_a_compacted_history_keeps_the_later_not_after(settings):
    feed = Feed(settings)
    start = now()
    feed.revoke(revocation("token", "jti-1", lasts=3600, rid="long", start=start))
    feed.revoke(revocation("token", "jti-1", lasts=1, rid="short", start=start))
    feed.beat()
    feed.flush()
    with Watcher(settings) as watcher:
        assert watcher.wait_ready(30)
        until = watcher.revocations.revoked_until("token", "jti-1")
        assert until == pytest.approx(start.timestamp() + 3600)


def test_heartbeat_staleness_flips_to_fail_closed_and_back(settings):
    feed = Feed(settings)
    feed.beat()
    feed.flush()
    with Watcher(settings, staleness_s=1.0, fail_closed_tiers={"high", "default"}) as watcher:
        assert watcher.wait_ready(30)
        assert watcher.is_revoked(token_id="t") is False
        eventually(lambda: watcher.is_revoked(token_id="t"), timeout=3.0, step=0.05)
        assert watcher.is_revoked(token_id="t", tier="high") is True
        assert watcher.is_revoked(token_id="t", tier="low") is False
        assert watcher.stats.fail_open == 1
        assert watcher.stats.fail_closed >= 2

        feed.beat()
        feed.flush()
        eventually(lambda: not watcher.is_revoked(token_id="t"), timeout=2.0)


def test_fails_closed_until_the_topic_exists_then_bootstraps(
    kafka_bootstrap, fresh_topic_prefix, kafka_admin
):
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.", partitions=2
    )
    with Watcher(settings) as watcher:
        time.sleep(1.0)
        assert not watcher.ready.is_set()
        assert watcher.last_error is not None
        assert watcher.is_revoked(token_id="t") is True
        assert watcher.is_revoked(token_id="t", tier="low") is False
        created = create_topics(settings)
        try:
            feed = Feed(settings)
            feed.beat()
            feed.flush()
            assert watcher.wait_ready(30)
            eventually(lambda: not watcher.is_revoked(token_id="t"), timeout=5.0)
        finally:
            for future in kafka_admin.delete_topics(created, operation_timeout=30).values():
                future.result(30)


def test_tail_mode_sees_only_new_records(settings):
    feed = Feed(settings)
    feed.revoke(revocation("token", "old", start=now()))
    feed.flush()
    seen = []
    with Watcher(settings, from_beginning=False, on_record=seen.append) as watcher:
        assert watcher.wait_ready(10)
        time.sleep(0.5)  # let the assignment settle at the end of each partition
        feed.revoke(revocation("token", "new", start=now()))
        feed.beat()
        feed.flush()
        eventually(lambda: watcher.revocations.revoked_until("token", "new") is not None)
        assert watcher.revocations.revoked_until("token", "old") is None
    assert [r.target.id for r in seen if isinstance(r, Revocation)] == ["new"]


def test_reports_lag_and_survives_a_failing_callback(settings):
    feed = Feed(settings)
    for i in range(20):
        feed.revoke(revocation("token", f"jti-{i}", start=now()))
    feed.flush()

    def explode(record):
        raise RuntimeError("callback bug")

    with Watcher(settings, on_record=explode) as watcher:
        assert watcher.wait_ready(30)
        eventually(lambda: watcher.stats.lag == 0, timeout=3.0, step=0.05)
        assert len(watcher.revocations) == 20
