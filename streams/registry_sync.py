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

Gateways must not trust an empty or lagging Redis, so the sync also vouches for it: it writes
the topic's partition count, and for each partition a freshness heartbeat
(``tether:registry:fresh:<topic>:<p>``): the time a verified worker heartbeat read on that
partition says the worker was alive, written only after everything before it is in Redis. A
gateway's :class:`~tether.adapters.redis_registry.RedisRegistry` answers "not revoked" only
while every mark says ``synced`` and every freshness heartbeat is recent. The sync also reads
its own freshness heartbeats back every ``check_s``: one missing, or older than the last it
wrote (a flush with the marks set again, a failover to a lagging replica), means Redis lost
writes, and the partition is rebuilt.

A record signed by a key the JWKS does not know (yet, or because the JWKS cannot be read) is
never skipped: the partition stops there (paused, its offset committed no further), and the
record is read again every ``retry_s``. It is given up only once it has waited ``hold_s`` and
a JWKS read that succeeded after that still lacks its key, as the gateways' watchers do.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from tether.models.outputs import Heartbeat, Reinstatement, Revocation
from tether.sdk.revocation_set import HOLD_S
from tether.security import SetRejected, SetVerifier, peek
from tether.security.sets import FeedRecord
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


@dataclass
class _Waiting:
    """A record at ``offset`` whose signing key is unknown: its partition waits for it."""

    offset: int
    since: float  # monotonic time first seen
    after_wait: int | None = None  # the key generation once it had waited hold_s
    retry_at: float = 0.0
    reread: bool = False  # sought back to ``offset``: what arrives now is read again in order


class RegistrySync:
    """Follows the revocations topic and writes every verified revocation to the registry."""

    def __init__(  # noqa: PLR0913  # keyword-only options, each with a sensible default
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
        retry_s: float = 1.0,
        hold_s: float = HOLD_S,
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
        self.reinstated = 0
        self.skipped = 0
        self.check_s = check_s  # how often the partitions' marks are read
        self.rebuilds = 0  # partitions read again from the start after the registry lost them
        self._assigned: set[int] = set()
        self._rebuilding: dict[int, int] = {}  # partition -> offset to reach before "synced"
        self._check_at = 0.0  # monotonic time of the next mark check (0: at once)
        self.retry_s = retry_s  # how often a record with an unknown key is read again
        self.hold_s = hold_s
        self.held = 0  # records with an unknown key met (each stops its partition meanwhile)
        self._waiting: dict[int, _Waiting] = {}  # partition -> the record it waits on
        self._stopped_at: dict[int, int] = {}  # partitions stopped in the batch being parsed
        self._alive: dict[int, int] = {}  # partition -> epoch ms a heartbeat read there says
        self._fresh_written: dict[int, int] = {}  # partition -> the last freshness written

    def start(self) -> None:
        """Start following the topic (idempotent)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="tether-registry", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the following thread is alive (``/readyz`` of ``tether registry-sync``)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def assigned(self) -> frozenset[int]:
        """The revocations partitions this sync follows now (its share of the group's)."""
        return frozenset(self._assigned)

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
                self._vouch(consumer)
                offsets = self._offsets(messages)
                if offsets:  # not only end-of-partition events
                    try:
                        consumer.commit(offsets=offsets, asynchronous=False)
                    except Exception as exc:  # e.g. a rebalance: the new owner rereads them
                        _log.warning("registry offsets not committed (%s)", exc)
                self._stop_partitions(consumer)
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
            self._waiting.pop(tp.partition, None)
            self._fresh_written.pop(tp.partition, None)
            self._alive.pop(tp.partition, None)

    # -- records whose key is unknown: the partition waits, nothing is skipped ---------------

    def _offsets(self, messages: Sequence[Message]) -> list[TopicPartition]:
        """What to commit: past each partition's last record, or up to the record it waits on."""
        last: dict[int, int] = {}
        for msg in messages:
            partition, offset = msg.partition(), msg.offset()
            if msg.error() is None and partition is not None and offset is not None:
                last[partition] = max(last.get(partition, -1), offset + 1)
        for partition, offset in self._stopped_at.items():
            last[partition] = offset
        for partition, waiting in self._waiting.items():  # still waiting: never past it
            if partition in last:
                last[partition] = min(last[partition], waiting.offset)
        return [TopicPartition(self.topic, p, o) for p, o in sorted(last.items())]

    def _stop_partitions(self, consumer: Consumer) -> None:
        """Pause each partition that met a record with an unknown key (read again later)."""
        for partition in self._stopped_at:
            consumer.pause([TopicPartition(self.topic, partition)])
        self._stopped_at = {}

    def _retry_waiting(self, consumer: Consumer) -> None:
        """Read each waiting partition again from the record it waits on, every ``retry_s``."""
        now = monotonic()
        for partition, waiting in list(self._waiting.items()):
            if now < waiting.retry_at:
                continue
            tp = TopicPartition(self.topic, partition)
            consumer.resume([tp])  # then seek: a resume alone goes on after what was skipped
            try:
                consumer.seek(TopicPartition(self.topic, partition, waiting.offset))
            except KafkaException:
                consumer.pause([tp])  # nothing read past the waiting record; next time
                raise
            waiting.retry_at = now + self.retry_s
            waiting.reread = True

    def _unknown_key(self, partition: int, offset: int, before: int | None) -> bool:
        """A record with an unknown key at ``offset``: True to give it up, False to wait on it."""
        now = monotonic()
        waiting = self._waiting.get(partition)
        if waiting is None or waiting.offset != offset:
            waiting = self._waiting[partition] = _Waiting(offset, now)
            self.held += 1
        if now - waiting.since >= self.hold_s:
            generation = self.verifier.key_generation
            if generation is None or before is None:
                return True
            if waiting.after_wait is None:
                waiting.after_wait = before
            if generation > waiting.after_wait:
                return True
        waiting.retry_at = now + self.retry_s
        waiting.reread = False
        self._stopped_at[partition] = offset
        return False

    # -- vouching for Redis ---------------------------------------------------------------

    def _heartbeat(self, partition: int | None, hb: Heartbeat) -> None:
        """A verified heartbeat read on ``partition``: the worker was alive then (never later
        than now); a heartbeat naming another partition (a copy) vouches for nothing."""
        if partition is None or (hb.partition is not None and hb.partition != partition):
            return
        alive = int(min(hb.emitted_at.timestamp(), time.time()) * 1000)
        if alive > self._alive.get(partition, -1):
            self._alive[partition] = alive

    def _vouch(self, consumer: Consumer) -> None:
        """Write the freshness heartbeats the batch just written earned (only ever forward,
        and only over the value written last: one gone or changed means Redis lost writes)."""
        moves: dict[int, tuple[int | None, int]] = {
            p: (self._fresh_written[p], ms)
            for p, ms in self._alive.items()
            if p in self._fresh_written and ms > self._fresh_written[p]
        }
        if not moves:
            return
        try:
            lost = self.registry.advance_fresh(self.topic, moves)
        except (RegistryUnavailableError, ConnectionError, OSError) as exc:
            _log.debug("registry freshness not written (%s); next batch", exc)
            return
        for partition, (_expected, ms) in moves.items():
            if partition not in lost:
                self._fresh_written[partition] = ms
        for partition in lost:
            _log.warning(
                "registry: the freshness heartbeat of partition %d is not the one written last: "
                "Redis lost writes",
                partition,
            )
            try:
                self._rebuild(consumer, partition, None)
            except (RegistryUnavailableError, KafkaException) as exc:
                _log.debug("registry rebuild deferred (%s)", exc)
                self._check_at = 0.0

    def _maintain(self, consumer: Consumer) -> None:
        """Mark rebuilt partitions synced; every ``check_s``, rebuild partitions without a mark
        or whose freshness heartbeat Redis lost; read waiting partitions again."""
        try:
            self._retry_waiting(consumer)
            for partition, goal in list(self._rebuilding.items()):
                (tp,) = consumer.position([TopicPartition(self.topic, partition)])
                if tp.offset >= goal:
                    del self._rebuilding[partition]
                    self._synced(partition)
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
            self._count_partitions(consumer)
            marks = self.registry.sync_marks(self.topic, partitions)
            fresh = self.registry.fresh_marks(self.topic, partitions)
            for partition, mark, alive in zip(partitions, marks, fresh, strict=True):
                written = self._fresh_written.get(partition)
                if mark == SYNCED and written is None and partition not in self._rebuilding:
                    if alive is not None:  # a partition this sync took over: go on from there
                        self._fresh_written[partition] = alive
                        continue
                    # synced, but no freshness heartbeat: lost with Redis's data, or written by
                    # a sync from before they existed. Either way nothing vouches: rebuild.
                    self._rebuild(consumer, partition, None)
                elif written is not None and (alive is None or alive < written):
                    _log.warning(
                        "registry: the freshness heartbeat of partition %d went back (%s < %d): "
                        "Redis lost writes",
                        partition,
                        alive,
                        written,
                    )
                    self._rebuild(consumer, partition, None)
                elif mark is None or (mark != SYNCED and partition not in self._rebuilding):
                    self._rebuild(consumer, partition, mark)
        except (RegistryUnavailableError, ConnectionError, OSError) as exc:
            _log.debug("registry marks not checked (%s); retrying", exc)
            self._check_at = 0.0
        except KafkaException as exc:  # e.g. a seek before the partition's first fetch
            _log.debug("registry rebuild deferred (%s)", exc)
            self._check_at = 0.0

    def _synced(self, partition: int) -> None:
        """Redis holds everything ``partition`` carried: write its freshness baseline (the last
        heartbeat read, or 0, which vouches for nothing yet but is what the next write expects),
        then the mark."""
        ms = self._alive.get(partition, 0)
        self.registry.advance_fresh(self.topic, {partition: (None, ms)})
        self._fresh_written[partition] = ms
        self.registry.set_sync_mark(self.topic, partition, SYNCED)

    def _count_partitions(self, consumer: Consumer) -> None:
        """Record the topic's partition count: gateways need every partition's mark."""
        topic = consumer.list_topics(self.topic, timeout=5.0).topics.get(self.topic)
        if topic is not None and topic.error is None and topic.partitions:
            self.registry.set_partition_count(self.topic, len(topic.partitions))

    def _rebuild(self, consumer: Consumer, partition: int, mark: str | None) -> None:
        """Read ``partition`` again from the start of the topic (its offsets stay committed
        where they were until the rebuild has passed them)."""
        tp = TopicPartition(self.topic, partition)
        low, high = consumer.get_watermark_offsets(tp, timeout=5.0, cached=False)
        self._fresh_written.pop(partition, None)
        self._alive.pop(partition, None)
        if self._waiting.pop(partition, None) is not None:
            consumer.resume([tp])
        if high > low:
            consumer.seek(TopicPartition(self.topic, partition, OFFSET_BEGINNING))
            self.verifier.forget()  # what is read again must not be skipped as a replay
            self.registry.set_sync_mark(self.topic, partition, REBUILDING)
            self._rebuilding[partition] = high
            self.rebuilds += 1
        else:
            self._synced(partition)  # nothing to hold
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

    def parse(self, messages: Sequence[Message]) -> list[Revocation | Reinstatement]:
        """The verified revocations and operators' reinstatements among ``messages``, in order
        (tombstones and rejected records are skipped; a tombstone never lifts a revocation; a
        duplicate is written again, harmlessly: the ledger republishes a revocation a
        reinstatement did not lift, and Redis must then hold it again). Heartbeats are noted for
        the freshness heartbeats; a record whose key is unknown stops its partition (it and
        what follows it are read again later) until it verifies or is given up."""
        out: list[Revocation | Reinstatement] = []
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    _log.warning("revocations feed: %s", error.str())
                continue
            partition, offset = msg.partition(), msg.offset()
            waiting = self._waiting.get(partition) if partition is not None else None
            if partition in self._stopped_at or (
                waiting is not None and (not waiting.reread or (offset or 0) < waiting.offset)
            ):
                continue  # behind a record that waits for its key: read again later
            value = msg.value()
            if not value:
                continue
            mine = self.local.take(value)
            record = mine if mine is not None else self._verified(msg, value)
            if record is None:
                continue
            if partition is not None:
                self._waiting.pop(partition, None)  # the partition goes on
            if isinstance(record, Heartbeat):
                self._heartbeat(partition, record)
            else:
                out.append(record)
        return out

    def _verified(self, msg: Message, value: bytes) -> FeedRecord | None:
        """The record, or None: rejected (logged), or waiting for its key (partition stopped)."""
        partition, offset = msg.partition(), msg.offset()
        before = self.verifier.key_generation
        try:
            return self.verifier.verify(value)
        except SetRejected as exc:
            if (
                exc.reason == "unknown_kid"
                and partition is not None
                and offset is not None
                and not self._unknown_key(partition, offset, before)
            ):
                return None
            if exc.reason == "replayed":  # authentic (verified before its jti was checked)
                record = peek(value)
                if not isinstance(record, Heartbeat):  # a heartbeat again proves nothing
                    return record
            else:
                self.skipped += 1
                _log.warning("rejected record on %s@%s: %s", msg.topic(), offset, exc)
            if partition is not None:
                self._waiting.pop(partition, None)
            return None

    def _write(self, records: list[Revocation | Reinstatement]) -> bool:
        """Write every revocation and apply every reinstatement, in order, retrying while Redis
        is unavailable; False if stopped first."""
        run: list[Revocation] = []
        for record in records:
            if isinstance(record, Revocation):
                run.append(record)
                continue
            if not self._put(run):
                return False
            run = []
            if not self._retrying(functools.partial(self._reinstate, record)):
                return False
        return self._put(run)

    def _reinstate(self, item: Reinstatement) -> None:
        lifted = self.registry.reinstate_sync(item)
        self.reinstated += 1
        _log.warning(
            "registry: %s reinstated %s (%s)%s",
            item.by,
            item.target.key,
            item.reason,
            "; its revocation deleted" if lifted else "",
        )

    def _retrying(self, write: Callable[[], None]) -> bool:
        backoff = 0.05
        while True:
            try:
                write()
            except (RegistryUnavailableError, ConnectionError, OSError) as exc:
                _log.error("registry unavailable (%s); retrying in %.2fs", exc, backoff)
                if self._stopping.wait(backoff):
                    return False
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            return True

    def _put(self, revocations: list[Revocation]) -> bool:
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
