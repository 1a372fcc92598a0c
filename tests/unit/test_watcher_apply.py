"""The watcher's record-apply path: only verified SETs are applied; tombstones lift nothing."""

# token_id is a credential's jti (an identifier), not a secret

from __future__ import annotations

import base64
import logging
import time
from datetime import timedelta

import orjson
import pytest

from sdk_helpers import T0, FakeClock, heartbeat, revocation
from tether.models.codec import encode
from tether.models.outputs import Heartbeat, Revocation
from tether.sdk.revocation_set import HOLD_S, HoldFull, RevocationSet
from tether.security import SetSigner, SetVerifier, StaticKeys, generate_key
from tether.security.keys import write_jwks
from tether.security.sets import unverified_parts

ISSUER = "urn:tether:monitor"


@pytest.fixture(scope="module")
def signer():
    return SetSigner(generate_key("RS256"), issuer=ISSUER)


@pytest.fixture(scope="module")
def forger():
    """Someone who can write to the topic but holds no key the gateways trust."""
    return SetSigner(generate_key("RS256"), issuer=ISSUER)


class Keys:
    """A key lookup whose keys the test can change (a JWKS that rotates)."""

    def __init__(self, *signers: SetSigner) -> None:
        self.keys = {s.kid: StaticKeys([s.public_jwk()]).find(s.kid) for s in signers}

    def find(self, kid):
        return self.keys.get(kid)

    def add(self, signer: SetSigner) -> None:
        self.keys[signer.kid] = StaticKeys([signer.public_jwk()]).find(signer.kid)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def keys(signer):
    return Keys(signer)


@pytest.fixture
def rset(clock, keys, signer):
    s = RevocationSet(
        clock=clock, staleness_s=5.0, verifier=SetVerifier(keys, issuer=ISSUER, clock=clock)
    )
    s.mark_ready()
    s.apply(b"heartbeat:w1", signer.heartbeat(heartbeat()))
    return s


def key_of(rev: Revocation) -> bytes:
    return rev.target.key.encode()


def test_a_signed_revocation_revokes_its_target_until_not_after(rset, clock, signer):
    rev = revocation(lasts=60)
    assert rset.apply(key_of(rev), signer.revocation(rev)) == rev
    assert rset.is_revoked(token_id="jti-1")
    assert not rset.is_revoked(token_id="jti-2")
    clock.advance(59.999)
    assert rset.is_revoked(token_id="jti-1")
    clock.advance(0.001)
    rset.apply(b"heartbeat:w1", signer.heartbeat(heartbeat(T0 + timedelta(seconds=60))))
    assert not rset.is_revoked(token_id="jti-1")


@pytest.mark.parametrize("kind", ["token", "workflow", "workload", "delegation"])
def test_each_target_kind_is_answered_by_its_own_argument(rset, signer, kind):
    rev = revocation(kind, "x-1")
    rset.apply(key_of(rev), signer.revocation(rev))
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


def test_the_later_not_after_wins_whatever_the_order(rset, clock, signer):
    short, long = revocation(lasts=60, rid="a"), revocation(lasts=600, rid="b")
    rset.apply(key_of(long), signer.revocation(long))
    rset.apply(key_of(short), signer.revocation(short))
    clock.advance(120)
    rset.apply(b"heartbeat:w1", signer.heartbeat(heartbeat(T0 + timedelta(seconds=120))))
    assert rset.is_revoked(token_id="jti-1")
    assert rset.revoked_until("token", "jti-1") == long.not_after.timestamp()


def test_duplicates_are_applied_once_and_counted_as_replayed(rset, signer):
    rev = revocation()
    applied = [rset.apply(key_of(rev), signer.revocation(rev)) for _ in range(3)]
    assert applied == [rev, None, None]
    assert len(rset) == 1
    assert rset.stats.revocations == 1
    assert rset.stats.rejected == {"replayed": 2}
    assert rset.stats.bad_records == 0  # a duplicate is routine, not a bad record


def test_an_expired_revocation_is_counted_and_not_held(rset, signer):
    rev = revocation(lasts=-1)
    assert rset.apply(key_of(rev), signer.revocation(rev)) == rev
    assert rset.stats.expired_on_arrival == 1
    assert len(rset) == 0
    assert not rset.is_revoked(token_id="jti-1")


def test_prune_drops_only_expired_targets(rset, clock, signer):
    for i, lasts in enumerate([10, 20, 30]):
        rev = revocation(ident=f"jti-{i}", lasts=lasts, rid=f"rv-{i}")
        rset.apply(key_of(rev), signer.revocation(rev))
    extended = revocation(ident="jti-0", lasts=100, rid="rv-0b")
    rset.apply(key_of(extended), signer.revocation(extended))  # leaves a stale heap entry
    clock.advance(35)
    assert rset.prune() == 2  # jti-1 and jti-2; jti-0 was extended
    assert len(rset) == 1
    assert rset.revoked_until("token", "jti-0") is not None


def _tampered(signer: SetSigner) -> bytes:
    """A real SET whose record now names another target (the signature no longer matches)."""
    data = signer.revocation(revocation(ident="jti-9", rid="rv-9"))
    header, _, sig = data.split(b".")
    claims = unverified_parts(data)[1]
    claims["tether"]["target"]["id"] = "jti-other"
    payload = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=")
    return b".".join([header, payload, sig])


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda s, f: encode(revocation()), "unsigned"),
        (lambda s, f: encode(heartbeat()), "unsigned"),
        (lambda s, f: b"", "malformed"),
        (lambda s, f: b"not a set", "malformed"),
        (lambda s, f: b"\xff\xfe", "malformed"),
        (lambda s, f: b"[1, 2]", "malformed"),
        (lambda s, f: _tampered(s), "bad_signature"),
        (lambda s, f: f.revocation(revocation()), "unknown_kid"),
        (lambda s, f: SetSigner(s._key, issuer="urn:x").revocation(revocation()), "wrong_issuer"),
    ],
)
def test_records_that_do_not_verify_are_counted_by_reason_and_never_applied(
    rset, signer, forger, make, reason, clock
):
    rset.apply(b"token:jti-1", make(signer, forger))
    if reason == "unknown_kid":  # held for its key first; given up after HOLD_S
        assert rset.stats.held == 1
        clock.advance(HOLD_S)
        assert rset.retry_held() == []
    assert rset.stats.rejected == {reason: 1}
    assert rset.stats.bad_records == 1
    assert rset.stats.held == 0
    assert len(rset) == 0
    assert rset.stats.revocations == 0


def test_a_tombstone_does_not_lift_a_revocation(rset, signer):
    rev = revocation()
    rset.apply(key_of(rev), signer.revocation(rev))
    assert rset.apply(key_of(rev), None) is None
    assert rset.stats.tombstones == 1
    assert rset.is_revoked(token_id="jti-1")
    assert rset.prune() == 0
    assert rset.is_revoked(token_id="jti-1")


def test_a_forged_short_revocation_cannot_shorten_or_lift_a_real_one(rset, clock, signer, forger):
    rev = revocation(lasts=600)
    rset.apply(key_of(rev), signer.revocation(rev))
    forged = revocation(lasts=1, rid="rv-1")
    rset.apply(key_of(rev), forger.revocation(forged))
    rset.apply(key_of(rev), encode(forged))
    clock.advance(2)
    rset.prune()
    assert rset.is_revoked(token_id="jti-1")
    assert rset.revoked_until("token", "jti-1") == rev.not_after.timestamp()


def test_a_forged_revocation_revokes_nothing(rset, forger):
    rset.apply(b"token:victim", forger.revocation(revocation(ident="victim")))
    rset.apply(b"token:victim", encode(revocation(ident="victim")))
    assert rset.revoked_until("token", "victim") is None
    assert not rset.is_revoked(token_id="victim", tier="low")


def test_only_verified_heartbeats_keep_the_feed_fresh(clock, keys, signer, forger):
    rset = RevocationSet(
        clock=clock, staleness_s=5.0, verifier=SetVerifier(keys, issuer=ISSUER, clock=clock)
    )
    rset.mark_ready()
    for forged in (encode(heartbeat()), forger.heartbeat(heartbeat())):
        assert rset.apply(b"heartbeat:w1", forged) is None
        assert not rset.is_fresh()
        assert rset.is_revoked(token_id="t") is True  # stale: the default tier fails closed
    assert rset.stats.heartbeats == 0
    assert rset.apply(b"heartbeat:w1", signer.heartbeat(heartbeat())) == heartbeat()
    assert not rset.is_fresh()  # the forger's heartbeat is held (its key unknown): in doubt
    rset._held.clear()  # as if given up
    assert rset.apply(b"heartbeat:w1", signer.heartbeat(heartbeat(source="w2"))) is not None
    assert rset.is_fresh()
    clock.advance(30)  # the feed dies; an attacker replays the last real heartbeat
    rset.apply(b"heartbeat:w1", signer.heartbeat(heartbeat()))
    assert not rset.is_fresh()
    assert rset.last_heartbeat == T0.timestamp()


def test_a_heartbeat_is_recognised_by_its_kind_whatever_its_key(rset, clock, signer):
    clock.advance(30)
    hb = heartbeat(T0 + timedelta(seconds=30), source="w2")
    assert rset.apply(b"odd-key", signer.heartbeat(hb)) == hb
    assert rset.last_heartbeat == clock.now
    assert rset.last_heartbeat_source == "w2"


def test_the_record_not_its_key_names_the_target(rset, signer):
    rev = revocation(ident="jti-real")
    assert rset.apply(b"token:something-else", signer.revocation(rev)) == rev
    assert rset.is_revoked(token_id="jti-real")
    assert not rset.is_revoked(token_id="something-else")


# -- keys the JWKS does not know yet ---------------------------------------------------------


def test_a_record_signed_by_a_key_not_yet_known_is_held_then_applied(rset, keys, clock):
    rotated = SetSigner(generate_key("ES256"), issuer=ISSUER)
    rev = revocation(ident="jti-new", rid="rv-new")
    hb = heartbeat(T0, source="w-new")
    assert rset.apply(key_of(rev), rotated.revocation(rev)) is None
    assert rset.apply(b"heartbeat:w-new", rotated.heartbeat(hb)) is None
    assert rset.stats.held == 2
    assert rset.revoked_until("token", "jti-new") is None
    assert not rset.ready
    assert rset.is_revoked(token_id="anyone") is True  # records held: in doubt
    assert rset.retry_held() == []  # the key is still unknown
    assert rset.stats.held == 2
    keys.add(rotated)  # the JWKS refetch now finds it
    clock.advance(HOLD_S - 1)
    assert rset.retry_held() == [rev, hb]
    assert rset.stats.held == 0
    assert rset.stats.rejected == {}
    assert rset.is_revoked(token_id="jti-new")


def test_held_records_are_bounded_by_refusing_more_never_by_dropping(clock, keys, forger):
    verifier = SetVerifier(keys, issuer=ISSUER, clock=clock)
    rset = RevocationSet(clock=clock, verifier=verifier, hold_max=3)
    for i in range(3):
        rset.apply(b"token:x", forger.revocation(revocation(rid=f"rv-{i}")))
    with pytest.raises(HoldFull):
        rset.apply(b"token:x", forger.revocation(revocation(rid="rv-3")))
    assert rset.stats.held == 3
    assert rset.stats.hold_full == 1
    assert rset.stats.rejected == {}


def test_rejections_are_logged_at_most_once_per_reason_per_interval(rset, caplog):
    with caplog.at_level(logging.DEBUG, logger="tether.sdk.revocation_set"):
        for _ in range(100):
            rset.apply(b"token:x", encode(revocation()))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "unsigned" in warnings[0].getMessage()
    assert rset.stats.rejected == {"unsigned": 100}


# -- the Watcher wires a verifier from its settings ------------------------------------------


class Message:
    """Just enough of a confluent-kafka Message for Watcher._handle."""

    def __init__(self, key: bytes | None, value: bytes | None, offset: int = 0) -> None:
        self._key, self._value, self._offset = key, value, offset

    def error(self):
        return None

    def partition(self):
        return 0

    def offset(self):
        return self._offset

    def key(self):
        return self._key

    def value(self):
        return self._value

    def headers(self):
        return None


def test_the_watcher_verifies_with_the_jwks_and_issuer_of_its_settings(tmp_path, signer, forger):
    from tether.sdk.watcher import Watcher
    from tether.settings import Settings

    write_jwks(tmp_path / "jwks.json", [signer.public_jwk()])
    settings = Settings(kafka_bootstrap="127.0.0.1:1", jwks=str(tmp_path / "jwks.json"))
    seen: list[Revocation | Heartbeat] = []
    watcher = Watcher(settings, on_record=seen.append)
    rev = revocation(ident="jti-w", lasts=1e9)
    for value in (signer.revocation(rev), forger.revocation(rev), encode(rev), None):
        watcher._handle(Message(key_of(rev), value))
    assert seen == [rev]
    assert watcher.revocations.revoked_until("token", "jti-w") is not None
    assert watcher.stats.rejected == {"unsigned": 1}
    assert watcher.stats.held == 1  # the forger's key: held until HOLD_S, then given up
    assert watcher.stats.tombstones == 1


def test_the_watcher_hands_records_applied_late_to_on_record(tmp_path, signer):
    from tether.sdk.watcher import Watcher
    from tether.settings import Settings

    path = tmp_path / "jwks.json"
    write_jwks(path, [])
    settings = Settings(kafka_bootstrap="127.0.0.1:1", jwks=str(path), jwks_refetch_s=0.01)
    seen: list[Revocation | Heartbeat] = []
    watcher = Watcher(settings, on_record=seen.append)
    rev = revocation(ident="jti-late", lasts=1e9)
    watcher._handle(Message(key_of(rev), signer.revocation(rev)))
    assert seen == []
    write_jwks(path, [signer.public_jwk()])  # the rotation reaches the JWKS
    time.sleep(0.02)
    watcher._retry_held()
    assert seen == [rev]
    assert watcher.stats.held == 0
