"""The watcher's record-apply path: revocations, heartbeats, bad records, expiry."""

# token_id is a credential's jti (an identifier), not a secret

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest

from sdk_helpers import T0, FakeClock, heartbeat, revocation
from tether.models.codec import encode
from tether.models.outputs import Revocation
from tether.sdk.revocation_set import RevocationSet


def key_of(rev: Revocation) -> bytes:
    return rev.target.key.encode()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def rset(clock):
    s = RevocationSet(clock=clock, staleness_s=5.0)
    s.mark_ready()
    s.heartbeat(heartbeat())
    return s


def test_a_revocation_record_revokes_its_target_until_not_after(rset, clock):
    rev = revocation(lasts=60)
    assert rset.apply(key_of(rev), encode(rev)) == rev
    assert rset.is_revoked(token_id="jti-1")
    assert not rset.is_revoked(token_id="jti-2")
    clock.advance(59.999)
    assert rset.is_revoked(token_id="jti-1")
    clock.advance(0.001)
    rset.heartbeat(heartbeat(T0 + timedelta(seconds=60)))
    assert not rset.is_revoked(token_id="jti-1")


@pytest.mark.parametrize("kind", ["token", "workflow", "workload", "delegation"])
def test_each_target_kind_is_answered_by_its_own_argument(rset, kind):
    rev = revocation(kind, "x-1")
    rset.apply(key_of(rev), encode(rev))
    arg = {
        "token": "token_id",
        "workflow": "workflow_id",
        "workload": "workload_id",
        "delegation": "delegation_id",
    }[kind]
    assert rset.is_revoked(**{arg: "x-1"})
    others = {
        a: "x-1" for a in ("token_id", "workflow_id", "workload_id", "delegation_id") if a != arg
    }
    assert not rset.is_revoked(**others)
    unrelated = dict.fromkeys(others, "other")
    assert rset.is_revoked(**unrelated, **{arg: "x-1"})


def test_the_later_not_after_wins_whatever_the_order(rset, clock):
    short, long = revocation(lasts=60, rid="a"), revocation(lasts=600, rid="b")
    rset.apply(key_of(long), encode(long))
    rset.apply(key_of(short), encode(short))
    clock.advance(120)
    rset.heartbeat(heartbeat(T0 + timedelta(seconds=120)))
    assert rset.is_revoked(token_id="jti-1")
    assert rset.revoked_until("token", "jti-1") == long.not_after.timestamp()


def test_duplicates_are_harmless(rset):
    rev = revocation()
    for _ in range(3):
        rset.apply(key_of(rev), encode(rev))
    assert len(rset) == 1
    assert rset.stats.revocations == 3


def test_an_expired_revocation_is_counted_and_not_held(rset):
    rev = revocation(lasts=-1)
    assert rset.apply(key_of(rev), encode(rev)) == rev
    assert rset.stats.expired_on_arrival == 1
    assert len(rset) == 0
    assert not rset.is_revoked(token_id="jti-1")


def test_prune_drops_only_expired_targets(rset, clock):
    for i, lasts in enumerate([10, 20, 30]):
        rev = revocation(ident=f"jti-{i}", lasts=lasts)
        rset.apply(key_of(rev), encode(rev))
    extended = revocation(ident="jti-0", lasts=100)
    rset.apply(key_of(extended), encode(extended))  # leaves a stale heap entry behind
    clock.advance(35)
    assert rset.prune() == 2  # jti-1 and jti-2; jti-0 was extended
    assert len(rset) == 1
    assert rset.revoked_until("token", "jti-0") is not None


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"kind": "revocation"}',
        b'{"kind": "finding", "finding_id": "f"}',
        orjson.dumps({"kind": "heartbeat", "emitted_at": "yesterday", "source": "w"}),
        b"\xff\xfe",
    ],
)
def test_bad_records_are_counted_and_skipped(rset, value):
    assert rset.apply(b"token:x", value) is None
    assert rset.stats.bad_records == 1
    assert len(rset) == 0


def test_a_tombstone_does_not_lift_a_revocation(rset):
    rev = revocation()
    rset.apply(key_of(rev), encode(rev))
    assert rset.apply(key_of(rev), None) is None
    assert rset.stats.tombstones == 1
    assert rset.is_revoked(token_id="jti-1")


def test_a_revocation_without_kind_is_accepted(rset):
    doc = orjson.loads(encode(revocation()))
    del doc["kind"]
    assert isinstance(rset.apply(b"token:jti-1", orjson.dumps(doc)), Revocation)
    assert rset.is_revoked(token_id="jti-1")


def test_a_heartbeat_is_recognised_by_its_kind_whatever_its_key(rset, clock):
    clock.advance(30)
    hb = heartbeat(T0 + timedelta(seconds=30), source="w2")
    assert rset.apply(b"odd-key", encode(hb)) == hb
    assert rset.last_heartbeat == clock.now
    assert rset.last_heartbeat_source == "w2"


def test_the_verifier_sees_every_record_and_can_reject_it(clock):
    seen = []

    def verifier(key, value, headers):
        seen.append((key, headers))
        return headers == [("sig", b"ok")]

    rset = RevocationSet(clock=clock, verifier=verifier)
    rev = revocation()
    assert rset.apply(key_of(rev), encode(rev), [("sig", b"bad")]) is None
    assert rset.stats.unverified == 1
    assert len(rset) == 0
    assert rset.apply(key_of(rev), encode(rev), [("sig", b"ok")]) == rev
    assert len(rset) == 1
    assert seen == [(b"token:jti-1", [("sig", b"bad")]), (b"token:jti-1", [("sig", b"ok")])]
