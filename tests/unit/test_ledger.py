"""The revocation ledger's rules (``streams.ledger.LedgerState``), without a broker.

What must hold on the compacted topic: after the ledger has read a partition, the latest record
of every key whose longest revocation is live is that revocation (so compaction keeps it), and
a revocation past ``not_after + tombstone_after_s`` is tombstoned, never a live one. The
integration test with compaction running is
``tests/integration/test_worker_hostile.py::test_a_shorter_revocation_never_survives_compaction``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.ledger import LedgerState, RevocationFloor
from tether.models.outputs import Revocation, Target

NOW = 1_800_000_000.0


def rev(key: str, not_after: float) -> bytes:
    """A stand-in for a signed revocation: the bytes name their not_after."""
    return orjson.dumps({"key": key, "not_after": not_after})


def verify(value: bytes) -> Revocation | None:
    doc = orjson.loads(value)
    if "not_after" not in doc:
        return None  # a forgery: does not verify
    kind, _, ident = doc["key"].partition(":")
    return Revocation(
        revocation_id=f"r-{doc['not_after']}",
        target=Target(kind=kind, id=ident),
        reason="scope_escalation",
        severity="high",
        workflow_id="wf",
        issued_at=datetime.fromtimestamp(NOW, UTC),
        not_after=datetime.fromtimestamp(doc["not_after"], UTC),
        evidence=["e"],
    )


class Topic:
    """One partition of the compacted topic: what is published lands at its end."""

    def __init__(self) -> None:
        self.log: list[tuple[bytes, bytes | None]] = []
        self.now = NOW
        self.state = LedgerState(
            verify, self.publish, tombstone_after_s=60.0, clock=lambda: self.now
        )
        self.state.assign([0])
        self.read_to = 0

    def publish(self, key: bytes, value: bytes | None, partition: int) -> None:
        assert partition == 0
        self.log.append((key, value))

    def catch_up(self) -> None:
        """The ledger reads everything published so far (its own records included)."""
        while self.read_to < len(self.log):
            key, value = self.log[self.read_to]
            self.read_to += 1
            self.state.read(0, key, value)
        self.state.caught_up(0)

    def latest(self, key: bytes) -> bytes | None:
        """What compaction keeps for ``key``."""
        kept = None
        for k, v in self.log:
            if k == key:
                kept = v
        return kept


K = b"token:T"


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([rev("token:T", NOW + 3600), rev("token:T", NOW + 300)], NOW + 3600),  # shortened
        ([rev("token:T", NOW + 3600), rev("token:T", NOW - 9e8)], NOW + 3600),  # "2020"
        ([rev("token:T", NOW + 3600), None], NOW + 3600),  # a tombstone never lifts it
        ([rev("token:T", NOW + 3600), b'{"key":"token:T"}'], NOW + 3600),  # a forgery
        ([rev("token:T", NOW + 300), rev("token:T", NOW + 3600)], NOW + 3600),  # longer: kept
    ],
)
def test_the_latest_record_of_a_live_target_is_its_longest_revocation(
    records: list[bytes | None], expected: float
) -> None:
    topic = Topic()
    for live in (False, True):  # read at start-up (catch-up) and while tailing
        topic = Topic()
        if live:
            topic.catch_up()
        for value in records:
            topic.log.append((K, value))
            if live:
                topic.catch_up()
        topic.catch_up()
        kept = topic.latest(K)
        assert kept is not None
        assert orjson.loads(kept)["not_after"] == expected


def test_a_record_already_longest_is_not_republished() -> None:
    topic = Topic()
    topic.log += [(K, rev("token:T", NOW + 300)), (K, rev("token:T", NOW + 3600))]
    topic.catch_up()
    assert len(topic.log) == 2
    assert topic.state.corrections == 0


def test_an_expired_revocation_is_tombstoned_and_a_live_one_is_not() -> None:
    topic = Topic()
    topic.log += [(b"token:old", rev("token:old", NOW - 120)), (K, rev("token:T", NOW + 3600))]
    topic.catch_up()
    topic.state.sweep()
    assert topic.latest(b"token:old") is None  # tombstoned
    assert topic.latest(K) is not None
    topic.now += 100  # still within not_after + 60 s for neither... the live one is untouched
    topic.state.sweep()
    assert topic.latest(K) is not None


def test_a_revocation_published_before_the_tombstone_lands_is_restored() -> None:
    """The race: the ledger tombstones an expired revocation while a worker publishes a new one
    for the same key; the new one lands first, the tombstone after it. The ledger reads both
    and publishes the new one again."""
    topic = Topic()
    topic.log.append((K, rev("token:T", NOW - 120)))
    topic.catch_up()
    topic.log.append((K, rev("token:T", NOW + 3600)))  # a worker, before the tombstone lands
    topic.state.sweep()  # the tombstone, decided on what the ledger had read
    assert topic.log[-1] == (K, None)
    topic.catch_up()
    kept = topic.latest(K)
    assert kept is not None
    assert orjson.loads(kept)["not_after"] == NOW + 3600


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([b"token:a", b"token:b"]), st.integers(-3, 3)), max_size=12),
    st.lists(st.booleans(), max_size=12),
)
def test_any_sequence_of_revocations_leaves_each_live_key_at_its_longest(
    published: list[tuple[bytes, int]], reads: list[bool]
) -> None:
    """Whatever order, and however the ledger's reads interleave with the workers' publishes,
    once it has caught up the latest record of each key is its longest live revocation."""
    topic = Topic()
    for i, (key, hours) in enumerate(published):
        topic.log.append((key, rev(key.decode(), NOW + hours * 3600)))
        if i < len(reads) and reads[i]:
            topic.catch_up()
    topic.catch_up()
    topic.catch_up()  # its own corrections read back
    for key in {k for k, _ in published}:
        longest = max(NOW + h * 3600 for k, h in published if k == key)
        kept = topic.latest(key)
        if longest + 60 >= NOW:
            assert kept is not None
            assert orjson.loads(kept)["not_after"] == longest


def test_the_floor_raises_a_shorter_revocation_of_a_known_key() -> None:
    now = [NOW]
    floor = RevocationFloor(clock=lambda: now[0])
    long = verify(rev("token:T", NOW + 3600))
    short = verify(rev("token:T", NOW + 60))
    other = verify(rev("token:U", NOW + 60))
    assert long is not None
    assert short is not None
    assert other is not None
    assert floor.at_least(long) == long
    assert floor.at_least(short).not_after == long.not_after  # raised, nothing else changed
    assert floor.at_least(short).revocation_id == short.revocation_id
    assert floor.at_least(other) == other  # another key: untouched
    now[0] = NOW + 7200  # both past: forgotten
    floor.note("token:V", NOW + 9000)
    assert len(floor) == 1
