"""Records signed by a key the JWKS does not know (yet): held, never dropped, and in doubt meanwhile.

Issue 18 item 8: a gateway starting while its JWKS was unreachable held 10,000 such records,
dropped the rest for good, then reported ready and fresh. Now nothing is dropped while the JWKS
cannot be read: the set holds what it can (bounded), refuses the rest with ``HoldFull`` (the
watcher then pauses the partition and reads it again later), and is neither ready nor fresh
while anything is held. A record is given up only once it has waited ``hold_s`` AND a JWKS read
that succeeded after that still lacks its key.
"""

# token_id is a credential's jti (an identifier), not a secret

from __future__ import annotations

import pytest

from sdk_helpers import T0, FakeClock, heartbeat, revocation
from tether.sdk.revocation_set import HOLD_S, HoldFull, RevocationSet
from tether.security import KeySource, SetSigner, SetVerifier, generate_key
from tether.security.keys import write_jwks

ISSUER = "urn:tether:monitor"


@pytest.fixture(scope="module")
def signer():
    return SetSigner(generate_key("ES256"), issuer=ISSUER)


@pytest.fixture(scope="module")
def bogus():
    return SetSigner(generate_key("ES256"), issuer=ISSUER)


class Tick:
    """Monotonic seconds for the key source's rate limit."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world(tmp_path):
    clock, tick = FakeClock(), Tick()
    path = tmp_path / "jwks.json"  # not there yet: the JWKS is unreachable
    source = KeySource(path, min_refetch_s=10.0, clock=tick)
    verifier = SetVerifier(source, issuer=ISSUER, clock=clock)
    rset = RevocationSet(clock=clock, staleness_s=5.0, verifier=verifier, hold_max=1000)
    return rset, clock, tick, path


def _later(clock, tick, seconds):
    clock.advance(seconds)
    tick.now += seconds


def test_nothing_is_dropped_while_the_jwks_cannot_be_read(world, signer):
    rset, clock, tick, path = world
    revs = [revocation("token", f"jti-{i}", rid=f"rv-{i}", lasts=1e6) for i in range(1200)]
    refused = []
    for rev in revs:
        try:
            rset.apply(rev.target.key.encode(), signer.revocation(rev))
        except HoldFull:
            refused.append(rev)  # the watcher pauses the partition here and reads it again later
    assert rset.stats.held == 1000
    assert len(refused) == 200
    with pytest.raises(HoldFull):  # the hold is full: a heartbeat waits in the topic too
        rset.apply(b"heartbeat:w1", signer.heartbeat(heartbeat(T0)))
    rset.mark_ready()
    assert not rset.ready  # bootstrapped, but records are held: not ready
    assert not rset.is_fresh()
    assert rset.is_revoked(token_id="jti-never", tier="high") is True  # in doubt: fail closed

    for _ in range(100):  # an hour of retries with the JWKS still unreachable: nothing given up
        _later(clock, tick, 36)
        assert rset.retry_held() == []
    assert rset.stats.held == 1000
    assert rset.stats.rejected == {}

    write_jwks(path, [signer.public_jwk()])
    _later(clock, tick, 10)
    assert len(rset.retry_held()) == 1000
    for rev in refused:  # read again once the partition resumes
        rset.apply(rev.target.key.encode(), signer.revocation(rev))
    assert rset.stats.held == 0
    assert rset.ready
    assert all(rset.is_revoked(token_id=f"jti-{i}", tier="low") for i in range(1200))


def test_a_flood_of_bogus_kids_is_given_up_only_after_a_jwks_read_without_them(
    world, signer, bogus
):
    rset, clock, tick, path = world
    write_jwks(path, [signer.public_jwk()])
    real = revocation("token", "jti-real", rid="rv-real", lasts=1e6)
    rset.apply(real.target.key.encode(), signer.revocation(real))  # the first read: key known
    rset.mark_ready()
    for i in range(500):
        rset.apply(b"token:x", bogus.revocation(revocation("token", f"x-{i}", rid=f"b-{i}")))
    assert rset.stats.held == 500
    assert not rset.ready
    assert rset.is_revoked(token_id="someone", tier="high") is True
    _later(clock, tick, HOLD_S - 1)
    assert rset.retry_held() == []  # the JWKS is read again, and lacks the key, but ...
    assert rset.stats.held == 500  # ... a key may take a while to reach every copy of it
    _later(clock, tick, 1)
    assert rset.retry_held() == []
    assert rset.stats.held == 500  # waited HOLD_S; no JWKS read since (rate-limited)
    _later(clock, tick, 10)
    rset.retry_held()  # a JWKS read after the wait lacks the key: given up
    assert rset.stats.held == 0
    assert rset.stats.rejected == {"unknown_kid": 500}
    assert rset.ready
    assert rset.is_revoked(token_id="jti-real", tier="low") is True


def test_hold_full_is_raised_by_bytes_too(tmp_path, signer):
    clock = FakeClock()
    verifier = SetVerifier(KeySource(tmp_path / "missing.json"), issuer=ISSUER, clock=clock)
    rset = RevocationSet(clock=clock, verifier=verifier, hold_max=10**6, hold_max_bytes=5000)
    records = [signer.revocation(revocation("token", f"t-{i}", rid=f"r-{i}")) for i in range(100)]
    refused = 0
    for value in records:
        try:
            rset.apply(b"k", value)
        except HoldFull:
            refused += 1
    assert refused > 0
    assert 0 < rset.stats.held < 100
    assert rset.stats.rejected == {}
