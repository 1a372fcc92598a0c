"""When the feed is in doubt (bootstrapping, stale): fail closed per tier, count fail-open, fallback."""

# token_id is a credential's jti (an identifier), not a secret

from __future__ import annotations

import math
import threading
from datetime import timedelta

import pytest

from sdk_helpers import T0, FakeClock, heartbeat, revocation
from tether.adapters.memory_registry import MemoryRegistry
from tether.sdk.revocation_set import RevocationSet
from tether.security import SetVerifier, StaticKeys


@pytest.fixture
def clock():
    return FakeClock()


def make(clock, **kwargs) -> RevocationSet:
    kwargs.setdefault("staleness_s", 5.0)
    kwargs.setdefault("fail_closed_tiers", {"high", "default"})
    # These tests drive freshness directly (records verified elsewhere); no record is applied.
    kwargs.setdefault("verifier", SetVerifier(StaticKeys([]), issuer="urn:tether:monitor"))
    return RevocationSet(clock=clock, **kwargs)


def beat(rset: RevocationSet, clock: FakeClock) -> None:
    rset.heartbeat(heartbeat(T0 + timedelta(seconds=clock.now - T0.timestamp())))


def test_before_bootstrap_fail_closed_tiers_deny_and_others_allow_counted(clock):
    rset = make(clock)
    beat(rset, clock)  # a heartbeat read mid-bootstrap does not make the set complete
    assert rset.is_revoked(token_id="t") is True
    assert rset.is_revoked(token_id="t", tier="high") is True
    assert rset.is_revoked(token_id="t", tier="low") is False
    assert rset.is_revoked(token_id="t", tier="low") is False
    assert (rset.stats.fail_closed, rset.stats.fail_open) == (2, 2)


def test_bootstrapped_with_a_fresh_heartbeat_trusts_not_revoked(clock):
    rset = make(clock)
    rset.mark_ready()
    beat(rset, clock)
    assert rset.is_fresh()
    assert rset.is_revoked(token_id="t") is False
    assert rset.is_revoked(token_id="t", tier="low") is False
    assert (rset.stats.fail_closed, rset.stats.fail_open) == (0, 0)


def test_bootstrapped_without_any_heartbeat_is_stale(clock):
    rset = make(clock)
    rset.mark_ready()
    assert not rset.is_fresh()
    assert rset.is_revoked(token_id="t") is True
    assert rset.is_revoked(token_id="t", tier="low") is False
    assert rset.stats.fail_open == 1


def test_staleness_flips_to_fail_closed_just_after_the_bound(clock):
    rset = make(clock)
    rset.mark_ready()
    beat(rset, clock)
    clock.advance(5.0)
    assert rset.is_revoked(token_id="t") is False  # exactly at the bound: still fresh
    clock.advance(0.001)
    assert rset.is_revoked(token_id="t") is True
    assert rset.is_revoked(token_id="t", tier="low") is False
    assert (rset.stats.fail_closed, rset.stats.fail_open) == (1, 1)
    beat(rset, clock)  # the feed comes back
    assert rset.is_revoked(token_id="t") is False


def test_an_old_heartbeat_does_not_make_the_feed_fresh(clock):
    rset = make(clock)
    rset.mark_ready()
    rset.heartbeat(heartbeat(T0 - timedelta(seconds=60)))  # e.g. the last one of a dead worker
    assert not rset.is_fresh()
    assert rset.is_revoked(token_id="t") is True


def test_a_heartbeat_from_a_clock_running_ahead_counts_from_its_arrival(clock):
    rset = make(clock)
    rset.mark_ready()
    rset.heartbeat(heartbeat(T0 + timedelta(seconds=3600)))
    assert rset.last_heartbeat == clock.now
    clock.advance(6)
    assert not rset.is_fresh()


def test_a_known_revocation_is_denied_even_for_fail_open_tiers_while_stale(clock):
    rset = make(clock)
    rset.add(revocation())
    assert rset.is_revoked(token_id="jti-1", tier="low") is True
    assert rset.stats.fail_open == 0


def test_tiers_are_configurable(clock):
    rset = make(clock, fail_closed_tiers={"high"})
    assert rset.is_revoked(token_id="t") is False  # "default" now fails open
    assert rset.is_revoked(token_id="t", tier="high") is True
    assert rset.stats.fail_open == 1


def test_infinite_staleness_trusts_the_set_once_bootstrapped(clock):
    rset = make(clock, staleness_s=math.inf)
    assert rset.is_revoked(token_id="t") is True  # still bootstrapping
    rset.mark_ready()
    clock.advance(1e6)
    assert rset.is_revoked(token_id="t") is False


class TestRegistryFallback:
    @pytest.fixture
    def registry(self, clock):
        reg = MemoryRegistry(clock=clock)
        reg.put_sync(revocation("workflow", "wf-bad"))
        return reg

    @pytest.fixture
    def stale(self, clock, registry):
        rset = make(clock, registry=registry)
        rset.mark_ready()  # no heartbeat: stale
        return rset

    def test_is_not_consulted_while_the_feed_is_fresh(self, clock, registry):
        rset = make(clock, registry=registry)
        rset.mark_ready()
        beat(rset, clock)
        assert rset.is_revoked(workflow_id="wf-bad") is False  # the feed is authoritative
        assert rset.stats.registry_lookups == 0

    def test_a_registry_revocation_denies(self, stale):
        assert stale.is_revoked(token_id="t", workflow_id="wf-bad", tier="low") is True
        assert stale.stats.registry_lookups == 2
        assert stale.stats.fail_open == 0

    def test_a_registry_not_revoked_for_every_target_allows(self, stale):
        assert stale.is_revoked(token_id="t", workflow_id="wf-ok") is False
        assert (stale.stats.fail_closed, stale.stats.fail_open) == (0, 0)

    def test_unknown_never_becomes_not_revoked_for_fail_closed_tiers(self, stale, registry):
        registry.available = False
        assert stale.is_revoked(token_id="t") is True
        assert stale.is_revoked(token_id="t", tier="low") is False
        assert (stale.stats.fail_closed, stale.stats.fail_open) == (1, 1)

    def test_one_unknown_target_leaves_the_call_in_doubt(self, stale):
        class HalfDown:
            def lookup_sync(self, kind, ident):
                return None if kind == "workload" else False

        rset = make(FakeClock(), registry=HalfDown())
        rset.mark_ready()
        assert rset.is_revoked(token_id="t", workload_id="w") is True
        assert rset.is_revoked(token_id="t") is False


def test_fail_open_counting_is_exact_across_threads(clock):
    rset = make(clock, fail_closed_tiers=set())
    threads = [
        threading.Thread(target=lambda: [rset.is_revoked(token_id="t") for _ in range(2000)])
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert rset.stats.fail_open == 16000


def test_a_watcher_that_never_started_fails_closed_without_any_io(tmp_path):
    from tether.sdk.watcher import Watcher
    from tether.settings import Settings

    settings = Settings(kafka_bootstrap="127.0.0.1:1", home=tmp_path / "home")
    watcher = Watcher(settings, fail_closed_tiers={"high"})
    assert not (tmp_path / "home").exists()  # the JWKS is read on the first record, not here
    assert watcher.is_revoked(token_id="t", tier="high") is True
    assert watcher.is_revoked(token_id="t", tier="low") is False
    assert watcher.stats.fail_open == 1
    assert not watcher.ready.is_set()
    assert watcher.topic == "tether.revocations"
