"""Keeps the Redis registry in step with the revocations topic (after Kafka acknowledged them).

The registry is a materialised view of the compacted topic. A consumer of its own (a
confluent-kafka consumer in a thread, group ``<app id>.registry``) verifies each signed
revocation (anything written to the topic must not reach the gateways' shared registry
unverified), writes the batch to Redis and commits its offsets only then. While Redis is down
it retries and holds its offsets, so after an outage the registry catches up from where it
stopped; detection never waits for Redis, because this consumer is not on the worker's input
path. Every worker runs one, in the same group, so the topic's partitions are shared out.

A record this process signed itself needs no verification: ``LocalSignatures`` remembers the
exact bytes of the last revocations the worker signed, and a record read back with those bytes
is taken as the revocation it was made from (anything else, including another worker's records,
is verified). At full rate that saves an RSA verification and a JOSE parse per revocation.
Writes to Redis go in one pipelined round trip per batch.

Redis may also come back *empty* (a restart without persistence, a failover to a fresh
replica, a flush): the committed offsets then point past revocations the registry no longer
holds. So the sync keeps a mark per partition in Redis (``tether:registry:sync:<topic>:<p>``):
``synced`` once the registry holds everything the partition carried. At assignment and every
``check_s`` it reads the marks of its partitions; a partition without one is read again from
the start of the (compacted) topic, marked ``rebuilding`` meanwhile, and marked ``synced`` once
the sync has written everything up to the offset the partition had reached when the loss was
noticed. A worker that dies mid-rebuild leaves ``rebuilding``, and the partition's next owner
starts the rebuild over. Revocations that have expired are not written again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from time import monotonic

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from tether.adapters.kafka_config import consumer_config
from tether.adapters.redis_registry import RedisRegistry
from tether.adapters.registry import RegistryUnavailableError
from tether.models.outputs import Revocation
from tether.security import SetRejected, SetVerifier
from tether.settings import Settings
from tether.topics import REVOCATIONS

_log = logging.getLogger("tether.registry")

SYNCED = "synced"
REBUILDING = "rebuilding"

REGISTRY_FETCH_WAIT_MS = 100
"""How long the broker may hold the sync's fetch while the topic is quiet. Apache Kafka answers
a fetch as soon as a record arrives (the consumer asks for one byte), so this bounds only the
empty fetches: about 10 a second instead of the ~150 of the 5 ms wait the watchers use. The sync
is not on the detection path."""


class LocalSignatures:
    """The revocations this process signed, by their exact signed bytes (bounded, FIFO)."""

    def __init__(self, capacity: int = 50_000) -> None:
        self.capacity = capacity
        self._signed: dict[bytes, Revocation] = {}
        self._lock = threading.Lock()  # the signing thread adds, the registry thread takes

    def add(self, token: bytes, rev: Revocation) -> None:
        """``token`` is the compact SET this process signed for ``rev``."""
        with self._lock:
            signed = self._signed
            signed[token] = rev
            while len(signed) > self.capacity:
                del signed[next(iter(signed))]

    def take(self, token: bytes) -> Revocation | None:
        """The revocation ``token`` was signed for here, if it was (forgotten once taken)."""
        with self._lock:
            return self._signed.pop(token, None)

    def __len__(self) -> int:
        return len(self._signed)


class RegistrySync:
    """Follows the revocations topic and writes every verified revocation to the registry."""

    def __init__(
        self,
        settings: Settings,
        registry: RedisRegistry,
        verifier: SetVerifier,
        *,
        client_id: str = "tether-registry",
        batch_max: int = 500,
        max_backoff_s: float = 2.0,
        local: LocalSignatures | None = None,
        check_s: float = 1.0,
    ) -> None:
        self.topic = settings.topic(REVOCATIONS)
        self.registry = registry
        self.verifier = verifier
        self.local = local if local is not None else LocalSignatures()
        self.batch_max = batch_max
        self.max_backoff_s = max_backoff_s
        self._config = consumer_config(
            settings,
            group_id=f"{settings.group_id}.registry",
            client_id=client_id,
            overrides={
                "session.timeout.ms": int(settings.session_timeout_s * 1000),
                "fetch.wait.max.ms": REGISTRY_FETCH_WAIT_MS,
            },
        )
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.skipped = 0
        self.check_s = check_s  # how often the partitions' marks are read
        self.rebuilds = 0  # partitions read again from the start after the registry lost them
        self._assigned: set[int] = set()
        self._rebuilding: dict[int, int] = {}  # partition -> offset to reach before "synced"
        self._check_at = 0.0  # monotonic time of the next mark check (0: at once)

    def start(self) -> None:
        """Start following the topic (idempotent)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="tether-registry", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the batch in hand (its offsets are committed only if it was written)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        consumer = Consumer(self._config)
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            while not self._stopping.is_set():
                messages = consumer.consume(self.batch_max, 0.5)
                revocations = self.parse(messages)
                if not self._write(revocations):
                    return  # stopping with the batch unwritten: its offsets stay uncommitted
                if any(m.error() is None for m in messages):  # not only end-of-partition events
                    try:
                        consumer.commit(asynchronous=False)
                    except Exception as exc:  # e.g. a rebalance: the new owner rereads them
                        _log.warning("registry offsets not committed (%s)", exc)
                self._maintain(consumer)
        except Exception:
            _log.exception("the registry sync stopped")
        finally:
            consumer.close()

    # -- rebuilding a registry that lost its data ------------------------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned |= {tp.partition for tp in partitions}
        self._check_at = 0.0  # read the new partitions' marks at once

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._assigned.discard(tp.partition)
            self._rebuilding.pop(tp.partition, None)

    def _maintain(self, consumer: Consumer) -> None:
        """Mark rebuilt partitions synced; every ``check_s``, rebuild partitions without a mark."""
        try:
            for partition, goal in list(self._rebuilding.items()):
                (tp,) = consumer.position([TopicPartition(self.topic, partition)])
                if tp.offset >= goal:
                    self.registry.set_sync_mark(self.topic, partition, SYNCED)
                    del self._rebuilding[partition]
                    _log.warning(
                        "registry: partition %d of %s rebuilt (read again up to offset %d)",
                        partition,
                        self.topic,
                        goal,
                    )
            if monotonic() < self._check_at or not self._assigned:
                return
            self._check_at = monotonic() + self.check_s
            partitions = sorted(self._assigned)
            marks = self.registry.sync_marks(self.topic, partitions)
            for partition, mark in zip(partitions, marks, strict=True):
                if mark is None or (mark != SYNCED and partition not in self._rebuilding):
                    self._rebuild(consumer, partition, mark)
        except (RegistryUnavailableError, ConnectionError, OSError) as exc:
            _log.debug("registry marks not checked (%s); retrying", exc)
            self._check_at = 0.0
        except KafkaException as exc:  # e.g. a seek before the partition's first fetch
            _log.debug("registry rebuild deferred (%s)", exc)
            self._check_at = 0.0

    def _rebuild(self, consumer: Consumer, partition: int, mark: str | None) -> None:
        """Read ``partition`` again from the start of the topic (its offsets stay committed
        where they were until the rebuild has passed them)."""
        tp = TopicPartition(self.topic, partition)
        low, high = consumer.get_watermark_offsets(tp, timeout=5.0, cached=False)
        if high > low:
            consumer.seek(TopicPartition(self.topic, partition, OFFSET_BEGINNING))
            self.verifier.forget()  # what is read again must not be skipped as a replay
            self.registry.set_sync_mark(self.topic, partition, REBUILDING)
            self._rebuilding[partition] = high
            self.rebuilds += 1
        else:
            self.registry.set_sync_mark(self.topic, partition, SYNCED)  # nothing to hold
        if mark is None and high <= low:
            return  # a new registry on an empty partition: nothing was lost
        _log.warning(
            "registry: partition %d of %s has %s mark in Redis (%s): reading it again from "
            "offset %d to %d",
            partition,
            self.topic,
            "no" if mark is None else f"the {mark!r}",
            "Redis lost its data, or is new" if mark is None else "its rebuild was interrupted",
            low,
            high,
        )

    def parse(self, messages: Sequence[Message]) -> list[Revocation]:
        """The verified revocations among ``messages`` (heartbeats, tombstones, duplicates and
        rejected records are skipped; a tombstone never lifts a revocation)."""
        out: list[Revocation] = []
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    _log.warning("revocations feed: %s", error.str())
                continue
            value = msg.value()
            if not value:
                continue
            mine = self.local.take(value)
            if mine is not None:
                out.append(mine)
                continue
            try:
                record = self.verifier.verify(value)
            except SetRejected as exc:
                if exc.reason != "replayed":  # a duplicate from at-least-once delivery
                    self.skipped += 1
                    _log.warning("rejected record on %s@%s: %s", msg.topic(), msg.offset(), exc)
                continue
            if isinstance(record, Revocation):
                out.append(record)
        return out

    def _write(self, revocations: list[Revocation]) -> bool:
        """Write every revocation, retrying while Redis is unavailable; False if stopped first."""
        if not revocations:
            return True
        backoff = 0.05
        while True:
            try:
                self.registry.put_many_sync(revocations)
            except (RegistryUnavailableError, ConnectionError, OSError) as exc:
                _log.error("registry unavailable (%s); retrying in %.2fs", exc, backoff)
                if self._stopping.wait(backoff):
                    return False
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            self.written += len(revocations)
            return True
