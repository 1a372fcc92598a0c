"""The revocation ledger and operators' reinstatements (``streams.ledger.LedgerState``), without a
broker: after the ledger has caught up, what compaction keeps for a key is its longest
revocation a reinstatement did not lift, else the reinstatement itself (so a lifted revocation
copied onto the topic again cannot come back, and a later violation is never lost)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.ledger import LedgerState, RevocationFloor
from tether.models.outputs import Reinstatement, Revocation, Target

NOW = 1_800_000_000.0
K = b"token:T"


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def rev(issued: float, until: float) -> bytes:
    return orjson.dumps({"r": [issued, until]})


def reinstate(issued: float) -> bytes:
    return orjson.dumps({"x": issued})


def verify(value: bytes) -> Revocation | Reinstatement | None:
    doc = orjson.loads(value)
    target = Target(kind="token", id="T")
    if "r" in doc:
        issued, until = doc["r"]
        return Revocation(
            revocation_id=f"r-{issued}-{until}",
            target=target,
            reason="scope_escalation",
            severity="high",
            workflow_id="wf",
            issued_at=_at(issued),
            not_after=_at(until),
            evidence=["e"],
        )
    if "x" in doc:
        return Reinstatement(
            reinstatement_id=f"x-{doc['x']}",
            target=target,
            by="alice",
            reason="false positive",
            issued_at=_at(doc["x"]),
            not_after=_at(doc["x"]) + timedelta(days=7),
        )
    return None


class Topic:
    def __init__(self) -> None:
        self.log: list[tuple[bytes, bytes | None]] = []
        self.state = LedgerState(verify, self.publish, tombstone_after_s=60.0, clock=lambda: NOW)
        self.state.assign([0])
        self.read_to = 0

    def publish(self, key: bytes, value: bytes | None, partition: int) -> None:
        self.log.append((key, value))

    def catch_up(self) -> None:
        while self.read_to < len(self.log):
            key, value = self.log[self.read_to]
            self.read_to += 1
            self.state.read(0, key, value)
        self.state.caught_up(0)

    def latest(self) -> bytes | None:
        kept = None
        for k, v in self.log:
            if k == K:
                kept = v
        return kept


def run(records: list[bytes | None]) -> Topic:
    topic = Topic()
    topic.catch_up()
    for value in records:
        topic.log.append((K, value))
        topic.catch_up()
    topic.catch_up()
    return topic


def test_a_reinstatement_is_what_compaction_keeps_once_it_lifted_everything() -> None:
    topic = run([rev(NOW - 10, NOW + 3600), reinstate(NOW)])
    assert topic.latest() == reinstate(NOW)
    assert topic.state.corrections == 0  # the ledger stops republishing the lifted revocation


def test_a_later_revocation_is_republished_after_a_reinstatement() -> None:
    later = rev(NOW + 20, NOW + 600)  # shorter, but issued after the reinstatement
    topic = run([rev(NOW - 10, NOW + 3600), later, reinstate(NOW + 10)])
    assert topic.latest() == later


def test_a_lifted_revocation_copied_again_is_displaced_by_the_reinstatement() -> None:
    old = rev(NOW - 10, NOW + 3600)
    topic = run([old, reinstate(NOW), old])
    assert topic.latest() == reinstate(NOW)


def test_a_tombstone_or_forgery_does_not_remove_the_reinstatement() -> None:
    topic = run([rev(NOW - 10, NOW + 3600), reinstate(NOW), None, b'{"forged": 1}'])
    assert topic.latest() == reinstate(NOW)


def test_a_revocation_after_the_reinstatement_revokes_again() -> None:
    again = rev(NOW + 30, NOW + 60)
    topic = run([rev(NOW - 10, NOW + 3600), reinstate(NOW), again])
    assert topic.latest() == again


_RECORDS = [
    rev(NOW - 30, NOW + 3600),
    rev(NOW - 5, NOW + 100),
    rev(NOW + 5, NOW + 900),
    rev(NOW + 15, NOW + 50),
    reinstate(NOW - 10),
    reinstate(NOW + 10),
    None,
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_RECORDS), max_size=10), st.lists(st.booleans(), max_size=10))
def test_what_compaction_keeps_answers_like_the_whole_log(
    published: list[bytes | None], reads: list[bool]
) -> None:
    """However reads interleave with publishes: once caught up, the record compaction keeps
    says what the whole log says (the longest revocation no reinstatement lifts; else the
    latest reinstatement, if any was read)."""
    topic = Topic()
    for i, value in enumerate(published):
        topic.log.append((K, value))
        if i < len(reads) and reads[i]:
            topic.catch_up()
    topic.catch_up()
    topic.catch_up()
    lift = max((orjson.loads(v)["x"] for v in published if v and b'"x"' in v), default=None)
    standing = [
        orjson.loads(v)["r"]
        for v in published
        if v and b'"r"' in v and (lift is None or orjson.loads(v)["r"][0] > lift)
    ]
    kept = topic.latest()
    if standing:
        assert kept is not None
        assert orjson.loads(kept)["r"][1] == max(u for _i, u in standing)
    elif lift is not None:
        assert kept == reinstate(lift)


def test_the_revocation_floor_is_lifted_by_a_reinstatement_but_keeps_a_later_revocation() -> None:
    """The worker's decisions read its RevocationFloor: a reinstated target is allowed again,
    and a revocation issued after the reinstatement stays in force (issue 22, item 3 x 2)."""
    floor = RevocationFloor(clock=lambda: 1_000.0)
    floor.note("token:jti-p", 5_000.0, 1_000.0)
    assert floor.revoked_until("token:jti-p", 1_500.0) == 5_000.0
    assert floor.lift("token:jti-p", 1_200.0)
    assert floor.revoked_until("token:jti-p", 1_500.0) is None
    floor.note("token:jti-p", 4_000.0, 1_300.0)  # a later violation revokes again
    assert not floor.lift("token:jti-p", 1_250.0)  # a reinstatement older than it lifts nothing
    assert floor.revoked_until("token:jti-p", 1_500.0) == 4_000.0
