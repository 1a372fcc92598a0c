"""Freshness per partition and the worker's input lag (issue 18 item 9); risk tiers (item 11).

A watcher that cannot read one partition of the revocations topic, or a worker whose input lags
by minutes, must not look fresh. Heartbeats name the partition they were written to and carry
the emitting worker's input lag.
"""

# token_id is a credential's jti (an identifier), not a secret

from __future__ import annotations

from datetime import timedelta

import pytest

from sdk_helpers import T0, FakeClock
from tether.models.outputs import Heartbeat
from tether.sdk.revocation_set import RevocationSet
from tether.security import SetVerifier, StaticKeys
from tether.settings import Settings


@pytest.fixture
def clock():
    return FakeClock()


def make(clock, **kwargs) -> RevocationSet:
    kwargs.setdefault("staleness_s", 5.0)
    kwargs.setdefault("verifier", SetVerifier(StaticKeys([]), issuer="urn:tether:monitor"))
    rset = RevocationSet(clock=clock, **kwargs)
    rset.expect_partitions(range(3))
    rset.mark_ready()
    return rset


def hb(clock, partition=None, *, source="w1", lag=None) -> Heartbeat:
    at = T0 + timedelta(seconds=clock.now - T0.timestamp())
    return Heartbeat(emitted_at=at, source=source, partition=partition, input_lag_s=lag)


def test_one_silent_partition_makes_the_feed_stale(clock):
    rset = make(clock)
    rset.heartbeat(hb(clock, 0), partition=0)
    rset.heartbeat(hb(clock, 1), partition=1)
    assert not rset.is_fresh()  # nothing heard on partition 2
    assert rset.is_revoked(token_id="t", tier="high") is True
    rset.heartbeat(hb(clock, 2), partition=2)
    assert rset.is_fresh()
    clock.advance(3)
    rset.heartbeat(hb(clock, 0), partition=0)
    rset.heartbeat(hb(clock, 1), partition=1)
    clock.advance(2.5)  # partition 2 last heard 5.5 s ago, the others 2.5 s ago
    assert not rset.is_fresh()
    assert rset.is_revoked(token_id="t") is True


def test_a_heartbeat_read_on_another_partition_than_it_names_counts_for_none(clock):
    rset = make(clock)
    for p in (0, 1):
        rset.heartbeat(hb(clock, p), partition=p)
    rset.heartbeat(hb(clock, 2), partition=0)  # a copy of partition 2's heartbeat, elsewhere
    assert not rset.is_fresh()


def test_a_worker_whose_input_lags_beyond_the_bound_makes_the_feed_stale(clock):
    rset = make(clock, max_input_lag_s=10.0)
    for p in range(3):
        rset.heartbeat(hb(clock, p, lag=0.2), partition=p)
    assert rset.is_fresh()
    rset.heartbeat(hb(clock, 0, source="w2", lag=120.0), partition=0)
    assert not rset.is_fresh()  # w2 applies its input two minutes late
    assert rset.is_revoked(token_id="t", tier="high") is True
    rset.heartbeat(hb(clock, 1, source="w2", lag=1.0), partition=1)  # caught up
    assert rset.is_fresh()


def test_a_lag_report_from_a_worker_gone_silent_ages_out(clock):
    rset = make(clock, max_input_lag_s=10.0)
    rset.heartbeat(hb(clock, 0, source="w2", lag=120.0), partition=0)
    clock.advance(6)  # w2 is gone; w1 keeps every partition alive
    for p in range(3):
        rset.heartbeat(hb(clock, p, lag=0.0), partition=p)
    assert rset.is_fresh()


def test_older_workers_heartbeats_keep_the_global_rule_until_a_partitioned_one_is_seen(clock):
    rset = make(clock)
    rset.heartbeat(hb(clock), partition=1)  # no partition field: an older worker
    assert rset.is_fresh()
    rset.heartbeat(hb(clock, 0), partition=0)  # a newer worker: every partition counts now
    assert not rset.is_fresh()


def test_a_future_dated_heartbeat_counts_from_its_arrival(clock):
    rset = make(clock)
    for p in range(3):
        rset.heartbeat(
            hb(clock, p).model_copy(update={"emitted_at": T0 + timedelta(hours=1)}), partition=p
        )
    clock.advance(5.5)
    assert not rset.is_fresh()


@pytest.mark.parametrize("tiers", [{"HIGH"}, {"critical"}, {"high", "Default"}])
def test_unknown_tier_names_are_refused_at_start_up(clock, tiers):
    with pytest.raises(ValueError, match="tier"):
        make(clock, fail_closed_tiers=tiers)
    with pytest.raises(ValueError, match="tier"):
        Settings(fail_closed_tiers=tiers)


def test_a_call_with_an_unknown_tier_fails_closed(clock):
    rset = make(clock, fail_closed_tiers={"high"})
    assert rset.is_revoked(token_id="t", tier="low") is False
    assert rset.is_revoked(token_id="t", tier="HIGH") is True
    assert rset.is_revoked(token_id="t", tier="critical") is True
    assert rset.stats.fail_open == 1


def test_the_watcher_takes_its_tiers_from_the_settings_and_refuses_unknown_ones(monkeypatch):
    from tether.sdk.watcher import Watcher

    watcher = Watcher(Settings(kafka_bootstrap="127.0.0.1:1", fail_closed_tiers={"high"}))
    assert watcher.is_revoked(token_id="t", tier="high") is True
    assert watcher.is_revoked(token_id="t", tier="default") is False  # not configured to deny
    with pytest.raises(ValueError, match="critical"):
        Watcher(Settings(kafka_bootstrap="127.0.0.1:1"), fail_closed_tiers={"critical"})
    monkeypatch.setenv("TETHER_FAIL_CLOSED_TIERS", '["HIGH", "default"]')
    with pytest.raises(ValueError, match="HIGH"):
        Settings()
