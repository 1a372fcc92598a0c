"""The revocation ledger: on the compacted revocations topic, a target's latest record is always
its longest revocation, and a revocation past its ``not_after`` is tombstoned.

Why. Compaction keeps the latest record per key (``<kind>:<id>``). A target can be revoked again
with a shorter ``not_after`` (an agent presents a revoked token again, in another workflow, on
another worker, claiming it expired long ago): compaction then kept only the shorter one, and a
gateway that bootstrapped afterwards, or a Redis rebuilt from the topic, answered "not revoked"
once it passed. And expired revocations were never removed, so every bootstrap grew for ever.

How. The workers publish revocations as before: nothing is added before the first publish (the
fast path stays one hop). A consumer of its own (group ``<app id>.ledger``; every worker runs
one, so the partitions are shared out) reads its partitions **from the start**: the compacted
topic is the ledger's changelog, since after every correction the latest record of a key is
its longest revocation, so reading the topic again rebuilds the ledger. It verifies each record
(only a signed revocation counts) and holds, per key, the signed bytes of the longest one. Then,
for each record it reads after its first catch-up:

* a revocation no longer than the one held, a tombstone, or a record that does not verify, on a
  key whose held revocation is still live: the held bytes are published again, to the same
  partition. They land after the record that displaced them, so compaction keeps them (the
  cleaner never touches the active segment, and the correction follows within milliseconds).
  A tombstone never lifts a live revocation, whoever wrote it. The copy has the same ``jti``:
  a watcher that already holds it ignores it as a replay.
* once the wall clock passes ``not_after + tombstone_after_s``: a tombstone. Should a new
  revocation of the key have been published meanwhile (before the tombstone, in the log), the
  ledger reads it, then the tombstone, and republishes it: the rule above heals the race.

Watchers never drop a revocation before its signed ``not_after`` (tombstones change nothing for
them); the registry expires its keys at ``not_after`` on its own.

Memory: one signed record (~1.5 KB) per live target of the partitions a worker owns. Cost: one
signature verification per record read (~0.1 ms), off the detection path.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from tether.adapters.kafka_config import consumer_config, producer_config
from tether.models.outputs import Reinstatement, Revocation
from tether.security import SetRejected, SetVerifier, peek
from tether.settings import Settings
from tether.topics import REVOCATIONS

from .registry_sync import LocalSignatures

_log = logging.getLogger("tether.ledger")

SWEEP_S = 1.0
"""How often expired revocations are looked for (wall time)."""


@dataclass(slots=True)
class _Rev:
    """One live revocation of a key, as signed."""

    issued_at: float
    not_after: float
    value: bytes


@dataclass(slots=True)
class _Key:
    """What the ledger knows of one key: the revocations that an operator's reinstatement may
    leave standing (none outlasts another while being as recent), and the latest such lift."""

    revs: list[_Rev] = field(default_factory=list)
    lift: float = -math.inf  # revocations issued at or before this are lifted
    lift_until: float = -math.inf  # the reinstatement's not_after
    lift_value: bytes = b""  # the reinstatement, as signed
    current: bool = True  # the latest record read for the key is its truth

    def truth(self) -> bytes | None:
        """What compaction must keep for the key: its longest standing revocation, else the
        reinstatement that lifted the others (so a lifted revocation copied onto the topic
        later cannot come back), else nothing."""
        if self.revs:
            return max(self.revs, key=lambda r: (r.not_after, r.issued_at)).value
        return self.lift_value or None

    def dead_at(self) -> float:
        """When nothing of the key matters any more (its tombstone is due tombstone_after_s later)."""
        return max([r.not_after for r in self.revs] + [self.lift_until])

    def add(self, issued_at: float, not_after: float, value: bytes) -> bool:
        """Hold a revocation; False when a reinstatement lifts it or one held makes it moot."""
        if issued_at <= self.lift:
            return False
        if any(r.issued_at >= issued_at and r.not_after >= not_after for r in self.revs):
            return False
        self.revs = [r for r in self.revs if r.issued_at > issued_at or r.not_after > not_after]
        self.revs.append(_Rev(issued_at, not_after, value))
        return True

    def reinstate(self, item: Reinstatement, value: bytes) -> None:
        at = item.issued_at.timestamp()
        if at >= self.lift:
            self.lift, self.lift_value = at, value
        self.lift_until = max(self.lift_until, item.not_after.timestamp())
        self.revs = [r for r in self.revs if r.issued_at > self.lift]


@dataclass(slots=True)
class _Partition:
    held: dict[bytes, _Key] = field(default_factory=dict)
    expiry: list[tuple[float, bytes]] = field(default_factory=list)  # heap of (dead_at, key)
    live: bool = False  # caught up with the partition's end once: corrections are made


class RevocationFloor:
    """The longest ``not_after`` this process knows was published per revocation key: what the
    worker published itself, and what its ledger read on the partitions it owns. The worker
    raises a new revocation's ``not_after`` to it before signing, so that, as far as this
    process knows, a key's revocation is never republished shorter (the ledger corrects what
    another worker published meanwhile). Thread-safe; entries leave once past (wall clock)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}
        self._issued: dict[str, float] = {}  # the latest issued_at noted per key (for lift)
        self._expiry: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._until)

    def note(self, key: str, until: float, issued: float = -math.inf) -> float:
        """``key`` was published until ``until`` (issued at ``issued``); returns the floor for
        it now."""
        with self._lock:
            current = self._until.get(key)
            if current is None or until > current:
                self._until[key] = until
                heapq.heappush(self._expiry, (until, key))
                current = until
            if issued > self._issued.get(key, -math.inf):
                self._issued[key] = issued
            now = self._clock()
            heap = self._expiry
            while heap and heap[0][0] < now:
                t, old = heapq.heappop(heap)
                if self._until.get(old) == t:
                    del self._until[old]
                    self._issued.pop(old, None)
            return current

    def lift(self, key: str, at: float) -> bool:
        """An operator's verified reinstatement of ``key`` at ``at``: forget the key's floor
        unless a revocation issued after ``at`` was noted (a later violation stays in force).
        Returns whether it was lifted."""
        with self._lock:
            if key not in self._until or self._issued.get(key, -math.inf) > at:
                return False
            del self._until[key]
            self._issued.pop(key, None)
            return True

    def revoked_until(self, key: str, now: float) -> float | None:
        """The longest ``not_after`` known for ``key`` if in force at ``now`` (the worker's
        revocation view for its decision log, ``tether.core.decisions.RevocationView``)."""
        until = self._until.get(key)  # one dict read: atomic under the GIL
        return until if until is not None and now < until else None

    def at_least(self, rev: Revocation) -> Revocation:
        """``rev``, its ``not_after`` raised to the floor of its key (and noted)."""
        until = rev.not_after.timestamp()
        floor = self.note(rev.target.key, until, rev.issued_at.timestamp())
        if floor <= until:
            return rev
        return rev.model_copy(update={"not_after": datetime.fromtimestamp(floor, UTC)})


Publish = Callable[[bytes, bytes | None, int], None]
"""Publishes ``(key, value or None for a tombstone, partition)`` to the revocations topic."""


class LedgerState:
    """What the ledger knows and decides; no I/O (``RevocationLedger`` feeds it and publishes
    what it asks for), so the rules are tested without a broker."""

    def __init__(
        self,
        verify: Callable[[bytes], Revocation | Reinstatement | None],
        publish: Publish,
        *,
        tombstone_after_s: float,
        clock: Callable[[], float] = time.time,
        floor: RevocationFloor | None = None,
    ) -> None:
        self._verify = verify
        self._publish = publish
        self._floor = floor  # told every revocation read, for the worker's own publishes
        self.tombstone_after_s = tombstone_after_s
        self._clock = clock
        self.partitions: dict[int, _Partition] = {}
        self.corrections = 0  # held revocations published again
        self.tombstones = 0

    def assign(self, partitions: Sequence[int]) -> None:
        for p in partitions:
            self.partitions[p] = _Partition()

    def revoke(self, partitions: Sequence[int]) -> None:
        for p in partitions:
            self.partitions.pop(p, None)

    def read(self, partition: int, key: bytes | None, value: bytes | None) -> None:
        """One record of the topic, in partition order."""
        part = self.partitions.get(partition)
        if part is None or key is None or key.startswith(b"heartbeat:"):
            return
        held = part.held.get(key)
        if held is not None and held.dead_at() + self.tombstone_after_s < self._clock():
            del part.held[key]  # past: nothing to keep on the topic (its tombstone is due)
            held = None
        record = self._verify(value) if value else None
        if record is not None:
            if held is None:
                held = part.held[key] = _Key()
            before = held.dead_at()
            if isinstance(record, Reinstatement):
                held.reinstate(record, value or b"")
                if self._floor is not None:
                    self._floor.lift(record.target.key, record.issued_at.timestamp())
            else:
                t, issued = record.not_after.timestamp(), record.issued_at.timestamp()
                if self._floor is not None:
                    self._floor.note(record.target.key, t, issued)
                held.add(issued, t, value or b"")
            if held.dead_at() != before:
                heapq.heappush(part.expiry, (held.dead_at(), key))
        if held is None:
            return
        truth = held.truth()
        if truth is None or truth == value:
            held.current = True
            return
        # displaced: by something shorter, a tombstone, a forgery, a lifted revocation copied
        # again, or a reinstatement that leaves a later revocation standing
        held.current = False
        if part.live:
            self._republish(partition, key, held)

    def caught_up(self, partition: int) -> None:
        """The partition's end was reached: from now on displaced revocations are corrected at
        once; those displaced in what was read so far are corrected now."""
        part = self.partitions.get(partition)
        if part is None or part.live:
            return
        part.live = True
        now = self._clock()
        for key, held in part.held.items():
            if not held.current and held.dead_at() + self.tombstone_after_s >= now:
                self._republish(partition, key, held)

    def sweep(self) -> None:
        """Tombstone every key whose revocations (and reinstatement) are all past
        ``not_after + tombstone_after_s``."""
        now = self._clock()
        for partition, part in self.partitions.items():
            if not part.live:
                continue
            heap = part.expiry
            while heap and heap[0][0] + self.tombstone_after_s < now:
                t, key = heapq.heappop(heap)
                held = part.held.get(key)
                if held is None or held.dead_at() != t:
                    continue  # it changed since: its own entry is queued
                del part.held[key]
                self._publish(key, None, partition)
                self.tombstones += 1

    def _republish(self, partition: int, key: bytes, held: _Key) -> None:
        truth = held.truth()
        if truth is None:
            return
        self._publish(key, truth, partition)
        held.current = True
        self.corrections += 1
        _log.warning(
            "revocation %s displaced on partition %d: published again (until %.0f)",
            key.decode("utf-8", "replace")[:200],
            partition,
            held.dead_at(),
        )


class RevocationLedger:
    """Runs ``LedgerState`` over the revocations topic in a thread of its own."""

    def __init__(
        self,
        settings: Settings,
        verifier: SetVerifier,
        *,
        client_id: str = "tether-ledger",
        clock: Callable[[], float] = time.time,
        floor: RevocationFloor | None = None,
        local: LocalSignatures | None = None,
    ) -> None:
        self.topic = settings.topic(REVOCATIONS)
        self.verifier = verifier
        # the exact bytes this worker signed: taken as the revocation they were made from,
        # without a verification (as the registry sync does; another worker's are verified)
        self.local = local if local is not None else LocalSignatures()
        self._consumer_config = consumer_config(
            settings,
            group_id=f"{settings.group_id}.ledger",
            client_id=client_id,
            overrides={
                "session.timeout.ms": int(settings.session_timeout_s * 1000),
                "enable.partition.eof": True,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 100,
            },
        )
        self._producer_config = producer_config(settings, client_id=f"{client_id}-out")
        self.state = LedgerState(
            self._verified,
            self._publish,
            tombstone_after_s=settings.tombstone_after_s,
            clock=clock,
            floor=floor,
        )
        self._producer: Producer | None = None
        self._failed: list[tuple[bytes, bytes | None, int]] = []  # to publish again
        self._goal: dict[int, int] = {}  # partition -> its end when the ledger started reading
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start following the topic (idempotent)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="tether-ledger", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop; what is queued to publish is flushed."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        self._producer = Producer(self._producer_config)
        consumer = Consumer(self._consumer_config)
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        swept = 0.0
        try:
            while not self._stopping.is_set():
                for msg in consumer.consume(500, 0.5):
                    self._take(consumer, msg)
                self._producer.poll(0)
                self._retry()
                if time.monotonic() - swept >= SWEEP_S:
                    swept = time.monotonic()
                    self.state.sweep()
        except Exception:
            _log.exception("the revocation ledger stopped")
        finally:
            consumer.close()
            self._producer.flush(5.0)

    def _take(self, consumer: Consumer, msg: Message) -> None:
        error = msg.error()
        partition = msg.partition()
        if partition is None:
            return
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                self.state.caught_up(partition)
            else:
                _log.warning("revocation ledger: %s", error.str())
            return
        self.state.read(partition, msg.key(), msg.value())
        # On a busy topic the end of the partition may never be met exactly: what was there
        # when the ledger started reading it is enough to count as caught up.
        goal = self._goal.get(partition)
        if goal is None:
            tp = TopicPartition(self.topic, partition)
            try:
                goal = self._goal[partition] = consumer.get_watermark_offsets(tp, timeout=5)[1]
            except Exception as exc:  # asked again with the next record
                _log.debug("revocation ledger: no high watermark yet (%s)", exc)
                return
        offset = msg.offset()
        if offset is not None and offset + 1 >= goal:
            self.state.caught_up(partition)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # always from the start: the compacted topic is the ledger's changelog
        self.state.assign([tp.partition for tp in partitions])
        for tp in partitions:
            self._goal.pop(tp.partition, None)
        consumer.assign(
            [TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in partitions]
        )

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.state.revoke([tp.partition for tp in partitions])

    def _verified(self, value: bytes) -> Revocation | Reinstatement | None:
        mine = self.local.take(value)
        if mine is not None:
            return mine
        try:
            record = self.verifier.verify(value)
        except SetRejected as exc:
            if exc.reason != "replayed":
                return None
            record = peek(value)  # its signature verified: only its jti was seen before
        return record if isinstance(record, Revocation | Reinstatement) else None

    def _publish(self, key: bytes, value: bytes | None, partition: int) -> None:
        producer = self._producer
        if producer is None:
            return

        def delivered(err: KafkaError | None, _msg: Message | None) -> None:
            if err is not None:
                _log.error("revocation ledger: publishing %r failed (%s); retrying", key, err)
                with self._lock:
                    self._failed.append((key, value, partition))

        try:
            producer.produce(
                self.topic, key=key, value=value, partition=partition, on_delivery=delivered
            )
        except (BufferError, Exception) as exc:  # a full queue or a refusal: try again later
            _log.error("revocation ledger: queueing %r failed (%s); retrying", key, exc)
            with self._lock:
                self._failed.append((key, value, partition))

    def _retry(self) -> None:
        with self._lock:
            failed, self._failed = self._failed, []
        for key, value, partition in failed:
            if partition in self.state.partitions:
                self._publish(key, value, partition)
