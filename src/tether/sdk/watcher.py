"""The gateway-side watcher: follows the compacted revocations topic into a local revocation set."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection
from types import TracebackType
from typing import Final, Self

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from tether.adapters.kafka_config import consumer_config
from tether.adapters.registry import Clock, RevocationLookup
from tether.sdk.revocation_set import (
    HoldFull,
    RecordVerifier,
    RevocationSet,
    WatcherStats,
)
from tether.security.keys import verifier_from_settings
from tether.security.sets import FeedRecord
from tether.settings import Settings
from tether.topics import REVOCATIONS

_log = logging.getLogger(__name__)

_BATCH: Final = 500
_POLL_S: Final = 0.05
_HOUSEKEEPING_S: Final = 0.5
_METADATA_TIMEOUT_S: Final = 5.0
_RETRY_S: Final = 1.0

OnRecord = Callable[[FeedRecord], None]


class Watcher:
    """Keeps a local copy of every live revocation and answers ``is_revoked`` in microseconds.

    A background thread assigns itself every partition of the revocations topic (no consumer
    group, no commits), reads it from the beginning up to the high-water marks it found at
    start (then :attr:`ready` is set), and keeps tailing it. The topic is compacted, so this
    bootstrap yields every revocation still in force. Heartbeat records on the same topic tell
    a dead feed from a quiet one; see :class:`~tether.sdk.revocation_set.RevocationSet` for how
    staleness, fail-closed tiers and the registry fallback decide answers in doubt.

    Every record is a signed SET (docs/contract.md, "Signed revocations"), verified on ingest
    against the JWKS of ``TETHER_JWKS`` and the issuer ``TETHER_ISSUER``: a record that does not
    verify is counted in ``stats.rejected`` by reason, logged (rate-limited) and never applied;
    only verified heartbeats keep the feed fresh; a tombstone never lifts a revocation.

    A record whose signing key the JWKS does not know (yet, or because the JWKS cannot be
    read) is held, never dropped. When the hold is full the watcher pauses that partition at
    the record and, once the hold has drained, seeks back to it and reads on: nothing is lost,
    whatever a writer floods the topic with. While records are held or a partition is paused
    or re-reading, :attr:`ready` is clear and answers are in doubt (fail-closed tiers deny).
    Freshness counts per partition and bounds the workers' input lag
    (:class:`~tether.sdk.freshness.FeedFreshness`).

    Example::

        with Watcher(Settings(), fail_closed_tiers={"high", "default"}) as watcher:
            watcher.wait_ready(30)
            if watcher.is_revoked(token_id=jti, workflow_id=wf, workload_id=spiffe_id):
                deny()
    """

    def __init__(  # noqa: PLR0913  # keyword-only options, each with a sensible default
        self,
        settings: Settings | None = None,
        *,
        topic: str | None = None,
        staleness_s: float | None = None,
        fail_closed_tiers: Collection[str] | None = None,
        registry: RevocationLookup | None = None,
        from_beginning: bool = True,
        on_record: OnRecord | None = None,
        verifier: RecordVerifier | None = None,
        clock: Clock = time.time,
        client_id: str = "tether-watcher",
    ) -> None:
        """Configure the watcher; nothing connects until :meth:`start`.

        Args:
            settings: Kafka bootstrap, topic prefix and ``staleness_s`` (default: ``Settings()``).
            topic: the revocations topic (default: ``<prefix>revocations``).
            staleness_s: heartbeat age beyond which answers are in doubt (default: from
                settings); ``math.inf`` disables the check.
            fail_closed_tiers: tiers denied when in doubt; other tiers are allowed and counted
                (default: ``TETHER_FAIL_CLOSED_TIERS``; an unknown tier name is a ValueError).
            registry: shared fallback (e.g. :class:`~tether.adapters.redis_registry.RedisRegistry`)
                asked only while the feed is stale; it answers "not revoked" only while the
                registry sync vouches for it.
            from_beginning: bootstrap from the start of the topic. False tails from the end and
                is ready at once, knowing only revocations issued from its first start on (a
                restart resumes where it stopped, whichever is chosen).
            on_record: called on the watcher's thread with each record applied.
            verifier: authenticates each record (default: a
                :class:`~tether.security.SetVerifier` from the settings' ``jwks`` and
                ``issuer``; it reads the JWKS on the first record, not here).
            clock: epoch seconds; tests inject a fake.
            client_id: names the consumer in broker logs.
        """
        settings = settings or Settings()
        self.topic = topic or settings.topic(REVOCATIONS)
        self.revocations = RevocationSet(
            staleness_s=settings.staleness_s if staleness_s is None else staleness_s,
            fail_closed_tiers=(
                settings.fail_closed_tiers if fail_closed_tiers is None else fail_closed_tiers
            ),
            registry=registry,
            clock=clock,
            verifier=verifier or verifier_from_settings(settings, clock=clock),
            max_input_lag_s=settings.max_input_lag_s,
            hold_max=settings.watcher_hold_max,
            hold_s=settings.watcher_hold_s,
        )
        self.is_revoked = self.revocations.is_revoked
        """``is_revoked(token_id=, workflow_id=, workload_id=, delegation_id=, *, tier=)``.

        The revocation set's method itself (no wrapper call on the hot path); see
        :meth:`RevocationSet.is_revoked <tether.sdk.revocation_set.RevocationSet.is_revoked>`.
        """
        self.stats: WatcherStats = self.revocations.stats
        self.ready = threading.Event()
        self.last_error: str | None = None
        self._config = consumer_config(
            settings,
            # Required by confluent-kafka, never joined: the watcher assigns partitions itself
            # and commits nothing. Unique, so no two watchers ever share group state.
            group_id=f"{client_id}-{uuid.uuid4().hex[:12]}",
            client_id=client_id,
            overrides={"enable.partition.eof": True, "error_cb": self._on_error},
        )
        self._hold_max = settings.watcher_hold_max
        self._from_beginning = from_beginning
        self._on_record = on_record
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._high: dict[int, int] = {}
        self._pending: set[int] = set()
        self._bootstrapped = False
        self._consumer: Consumer | None = None
        self._paused: dict[int, int] = {}  # partition -> offset to read again from
        # partition -> the offset after the last record taken: where a restart resumes
        self._positions: dict[int, int] = {}
        self._behind: dict[int, int] = {}  # partition -> offset to reach again after a pause

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the background thread (idempotent); returns self."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="tether-watcher", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop following the topic and close the consumer (the local set stays readable).

        :meth:`start` again resumes each partition after the last record taken, so nothing
        published in between is skipped; :attr:`ready` waits until that gap is read.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until bootstrap completes; False if ``timeout`` passed first."""
        return self.ready.wait(timeout)

    def __enter__(self) -> Self:
        """Start; stop when the block exits."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        self.stop()

    @property
    def last_heartbeat(self) -> float | None:
        """When the feed was last known alive (epoch seconds), or None."""
        return self.revocations.last_heartbeat

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            consumer = Consumer(self._config)
        except (KafkaException, ValueError, TypeError) as exc:  # a configuration error
            self.last_error = f"cannot create the Kafka consumer: {exc}"
            _log.error("revocation watcher: %s", self.last_error)
            return  # never ready: fail-closed tiers keep denying
        self._consumer = consumer
        try:
            partitions = self._assign(consumer)
            last_housekeeping = time.monotonic()
            while partitions and not self._stop.is_set():
                try:
                    # poll() returns as soon as one record arrives (consume() would wait for a
                    # full batch or the timeout); whatever else is already there is drained.
                    first = consumer.poll(_POLL_S)
                    if first is not None:
                        self._handle(first)
                        for msg in consumer.consume(_BATCH, 0):
                            self._handle(msg)
                        self._update_ready()
                    if time.monotonic() - last_housekeeping >= _HOUSEKEEPING_S:
                        last_housekeeping = time.monotonic()
                        self._retry_held()
                        self._resume_paused(consumer)
                        self.revocations.prune()
                        self._update_ready()
                        self.stats.lag = self._lag(consumer, partitions)
                except Exception as exc:  # the feed must outlive any single bad moment
                    self.stats.errors += 1
                    self.last_error = str(exc)
                    _log.exception("revocation watcher error; continuing")
                    self._stop.wait(_RETRY_S)
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> list[TopicPartition]:
        """Wait for the topic, note its high-water marks, assign all of its partitions."""
        while not self._stop.is_set():
            try:
                metadata = consumer.list_topics(self.topic, timeout=_METADATA_TIMEOUT_S)
                topic = metadata.topics.get(self.topic)
                if topic is None or topic.error is not None or not topic.partitions:
                    detail = topic.error if topic is not None else "missing"
                    raise LookupError(f"topic {self.topic} is not available: {detail}")
                ids = sorted(topic.partitions)
                self.revocations.expect_partitions(ids)
                marks = {
                    p: consumer.get_watermark_offsets(
                        TopicPartition(self.topic, p), timeout=_METADATA_TIMEOUT_S
                    )
                    for p in ids
                }
                partitions = self._resume_at(marks)
                consumer.assign(partitions)
                if self._paused:  # still paused from before a restart: resumed as the hold drains
                    consumer.pause([TopicPartition(self.topic, p) for p in self._paused])
            except (KafkaException, LookupError) as exc:
                self.last_error = str(exc)
                _log.warning("revocation watcher waiting for %s: %s", self.topic, exc)
                self._stop.wait(_RETRY_S)
                continue
            if not self._pending:
                self._mark_ready()
            return partitions
        return []

    def _resume_at(self, marks: dict[int, tuple[int, int]]) -> list[TopicPartition]:
        """Where each partition is read from, and what must be read before :attr:`ready`.

        The first start reads from the beginning (or, with ``from_beginning=False``, from the
        high-water marks of that first start). A restart of the same watcher resumes each
        partition after the last record it took: revocations published while it was stopped
        are read, not skipped (a tailing watcher that restarted at the end lost them all), and
        it is not ready again until it has read up to the marks of the restart.
        """
        restart = self._bootstrapped or bool(self._positions)
        if not restart and not self._from_beginning:
            self._positions = {p: high for p, (_low, high) in marks.items()}
        self._high = {p: high for p, (_low, high) in marks.items()}
        self._pending = {
            p for p, (low, high) in marks.items() if high > max(low, self._positions.get(p, low))
        }
        if restart and self._pending:
            self._bootstrapped = False  # ready again once caught up (:meth:`_caught_up`)
            self._update_ready()
        return [
            TopicPartition(self.topic, p, self._positions.get(p, OFFSET_BEGINNING))
            for p in sorted(marks)
        ]

    def _handle(self, msg: Message) -> None:
        error = msg.error()
        partition = msg.partition()
        offset = msg.offset()
        if partition is not None and partition in self._paused:
            # Fetched before the pause took hold: it will be read again after the seek back.
            if offset is not None and error is None:
                self._behind[partition] = max(self._behind.get(partition, -1), offset)
            return
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                self._reached(partition, None)
                self._caught_up(partition)
            else:
                self.stats.errors += 1
                self.last_error = error.str()
            return
        try:
            record = self.revocations.apply(
                msg.key(), msg.value(), msg.headers(), partition=partition
            )
        except HoldFull:
            self._pause(partition, offset)
            return
        self._reached(partition, offset)
        if partition is not None and offset is not None:
            self._positions[partition] = offset + 1
        if (
            partition in self._pending
            and offset is not None
            and offset + 1 >= self._high.get(partition, 0)
        ):
            self._caught_up(partition)
        if record is not None:
            self._notify(record)

    def _pause(self, partition: int | None, offset: int | None) -> None:
        """The hold is full: stop reading ``partition`` and read it again from ``offset`` later."""
        if partition is None or offset is None or self._consumer is None:
            raise RuntimeError("a record without a position cannot be left in the topic")
        self._consumer.pause([TopicPartition(self.topic, partition)])
        self._paused[partition] = offset
        self._behind[partition] = max(self._behind.get(partition, -1), offset)
        self.revocations.set_behind(True)
        self._update_ready()
        _log.warning(
            "revocation watcher: %d records held for unknown keys; partition %d paused at "
            "offset %d until they drain (the JWKS may be unreachable, or a writer floods the "
            "topic with unknown key ids)",
            self.revocations.held,
            partition,
            offset,
        )

    def _resume_paused(self, consumer: Consumer) -> None:
        """Once the hold has room again, read each paused partition from where it paused."""
        if not self._paused or self.revocations.held > self._hold_max // 2:
            return
        for partition, offset in list(self._paused.items()):
            whole = TopicPartition(self.topic, partition)
            consumer.resume([whole])  # then seek: a resume alone goes on after what was skipped
            try:
                consumer.seek(TopicPartition(self.topic, partition, offset))
            except KafkaException:
                consumer.pause([whole])  # still paused: retried at the next housekeeping
                raise
            del self._paused[partition]
        self._set_behind()

    def _reached(self, partition: int | None, offset: int | None) -> None:
        """A paused partition read again up to where it was: no longer behind (None: its end)."""
        if partition is None or partition not in self._behind or partition in self._paused:
            return
        if offset is None or offset >= self._behind[partition]:
            del self._behind[partition]
            self._set_behind()

    def _set_behind(self) -> None:
        self.revocations.set_behind(bool(self._paused or self._behind))

    def _update_ready(self) -> None:
        """:attr:`ready` mirrors the set: bootstrapped, nothing held, nothing to read again."""
        if self._bootstrapped and self.revocations.ready:
            if not self.ready.is_set():
                self.ready.set()
        elif self.ready.is_set():
            self.ready.clear()

    def _notify(self, record: FeedRecord) -> None:
        if self._on_record is not None:
            try:
                self._on_record(record)
            except Exception:  # a caller's callback must not stop the feed
                _log.exception("on_record callback failed")

    def _retry_held(self) -> None:
        """Records whose signing key was unknown: verify them again (the JWKS may know it now)."""
        for record in self.revocations.retry_held():
            self._notify(record)

    def _caught_up(self, partition: int | None) -> None:
        self._pending.discard(partition if partition is not None else -1)
        if not self._pending and not self._bootstrapped:
            self._mark_ready()

    def _mark_ready(self) -> None:
        self._retry_held()
        self.revocations.prune()
        self.revocations.mark_ready()
        self._bootstrapped = True
        self._update_ready()

    def _lag(self, consumer: Consumer, partitions: list[TopicPartition]) -> int | None:
        total = 0
        for position in consumer.position(partitions):
            low, high = consumer.get_watermark_offsets(position, cached=True)
            if high < 0:
                return None
            total += max(0, high - (position.offset if position.offset >= 0 else low))
        return total

    def _on_error(self, error: KafkaError) -> None:
        self.last_error = error.str()
        _log.warning("revocation watcher (Kafka): %s", error.str())
