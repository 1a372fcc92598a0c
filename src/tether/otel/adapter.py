"""``tether ingest otlp``: OTLP traces from Kafka in, tether events out, at least once.

One process of the worker's kind (a confluent-kafka consumer and an idempotent producer, both
configured by :mod:`tether.adapters.kafka_config`, so TLS/SASL apply here too):

1. read exporter records from the OTLP topic (``otlp_spans``), in batches;
2. decode each (:mod:`tether.otel.decode`); a record that cannot be decoded, and spans with
   invalid ids, become dead letters with their reason, never a stall;
3. hold spans per trace until their ancestry is known (:mod:`tether.otel.join`), then map them
   (:mod:`tether.otel.mapping`) and produce the events to ``tether.intents`` keyed by workflow
   id, coverage records to ``tether.coverage``, unmappable spans to ``tether.deadletter``;
4. wait until the broker has acknowledged every one of those records, and only then commit, per
   partition, the offset below which no record still has spans held in the join.

A crash between 3 and 4 re-reads the records; their events have the same ids (derived from the
trace and span ids) and the worker ignores them as duplicates.

The adapter is a telemetry source like any other: given its source key (``sources.yaml``,
docs/SECURITY.md), it signs every event it produces, and the worker's source registry decides
what those events may assert (docs/otel.md, "Trust").
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from tether.adapters.kafka_config import consumer_config, producer_config
from tether.models.codec import Rejected, dead_letter, encode
from tether.models.outputs import DeadLetter, DeadLetterReason, Source
from tether.otel.config import MappingConfig
from tether.otel.decode import Encoding, SpanView, UndecodableError, decode
from tether.otel.join import Released, TraceJoiner
from tether.security.proof import SourceKey
from tether.settings import Settings
from tether.topics import COVERAGE, DEADLETTER, INTENTS, TopicSpec, topic_spec

_log = logging.getLogger("tether.ingest.otlp")
DEFAULT_SOURCE_TOPIC: Final = "otlp_spans"
DEFAULT_MAX_RECORD_BYTES: Final = 16 * 1024 * 1024  # the exporter's default cap is 1 MB
_BATCH: Final = 500
_LOG_EVERY_S: Final = 10.0


def coverage_spec(settings: Settings) -> TopicSpec:
    """``tether.coverage``: coverage records, keyed by workflow id (one of :func:`topic_specs`)."""
    return topic_spec(
        COVERAGE,
        settings.topic_prefix,
        settings.partitions,
        min_insync_replicas=settings.kafka.min_insync_replicas,
    )


def tune_gc() -> None:
    """Collect young objects every 50,000 allocations instead of 700.

    Decoding allocates several objects per span attribute, all freed by reference counting
    (spans hold no cycles); with the default threshold the cyclic collector ran so often over
    a batch's live spans that it cost a third of the throughput (benchmarks/otel_ingest.py on
    per-batch records: 10,800 spans/s with the default, 15,700 without collections).
    """
    gc.set_threshold(50_000, 20, 100)


class _Origin:
    """One input record, held until every trace that took spans from it is released."""

    __slots__ = ("holds", "offset", "partition")

    def __init__(self, partition: int, offset: int) -> None:
        self.partition = partition
        self.offset = offset
        self.holds = 0


class DeliveryFailedError(RuntimeError):
    """The broker did not acknowledge produced records: nothing past them is committed."""


class OtlpIngest:
    """The adapter loop. ``run()`` until ``stop()`` (or SIGTERM/SIGINT via the CLI)."""

    def __init__(  # noqa: PLR0913  # keyword-only options with defaults
        self,
        settings: Settings,
        mapping: MappingConfig,
        *,
        source_topic: str = DEFAULT_SOURCE_TOPIC,
        encoding: Encoding = "auto",
        group_id: str | None = None,
        client_id: str = "tether-ingest-otlp",
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        clock: Callable[[], float] = time.time,
        source_key: SourceKey | None = None,
    ) -> None:
        """Configure; nothing connects until :meth:`run`. With ``source_key`` every event is
        signed as that source's (a proof the worker's source registry verifies)."""
        self.settings = settings
        self.source_key = source_key
        self.source_topic = source_topic
        self.encoding: Encoding = encoding
        self.max_record_bytes = max_record_bytes
        self.clock = clock
        self.joiner = TraceJoiner(mapping)
        self.group_id = group_id or f"{settings.topic_prefix}otel-ingest"
        self._consumer_config = consumer_config(
            settings, group_id=self.group_id, client_id=client_id
        )
        self._producer_config = producer_config(settings, client_id=client_id)
        self._intents = settings.topic(INTENTS)
        self._deadletter = settings.topic(DEADLETTER)
        self._coverage = settings.topic(COVERAGE)
        self._stop = threading.Event()
        self._pending: dict[int, dict[int, _Origin]] = {}  # partition -> offset -> origin
        self._next: dict[int, int] = {}  # partition -> offset after the last record read
        self._committed: dict[int, int] = {}
        self._failures: list[str] = []
        self.stats: Counter[str] = Counter()
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None

    def stop(self) -> None:
        """Ask :meth:`run` to drain, commit and return."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the loop gracefully."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    # -- the loop ------------------------------------------------------------------------------------
    def run(self) -> None:
        """Consume, map, produce, commit; on stop, drain the join and commit everything."""
        self._producer = Producer(self._producer_config)
        consumer = Consumer(self._consumer_config)
        self._consumer = consumer
        consumer.subscribe([self.source_topic], on_revoke=self._on_revoke)
        last_log = time.monotonic()
        try:
            while not self._stop.is_set():
                # wait for one record, then take what is already fetched: consume() alone
                # would wait out its whole timeout for a full batch (latency on a quiet topic)
                first = consumer.poll(0.2)
                # `is not None`: a Message's truth is its length, and an empty record is falsy
                messages = (
                    [first, *consumer.consume(_BATCH - 1, timeout=0)] if first is not None else []
                )
                now = self.clock()
                for msg in messages:
                    self._take(msg, now)
                self._publish(self.joiner.release(now))
                if time.monotonic() - last_log >= _LOG_EVERY_S:
                    last_log = time.monotonic()
                    _log.info("ingest: %s, %d traces held", dict(self.stats), len(self.joiner))
            self._publish(self.joiner.drain(self.clock()))
        finally:
            consumer.close()
            self._producer.flush(30)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Before partitions move to another member: map what is held and commit it all, so
        the new owner does not wait for traces this process was holding."""
        _log.info("partitions revoked: draining %d held traces", len(self.joiner))
        self._publish(self.joiner.drain(self.clock()))
        revoked = {tp.partition for tp in partitions}
        for p in revoked:
            self._pending.pop(p, None)
            self._next.pop(p, None)
            self._committed.pop(p, None)

    def _take(self, msg: Message, now: float) -> None:
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:  # librdkafka's name
                _log.warning("consumer error: %s", error)
            return
        partition, offset = msg.partition(), msg.offset()
        assert partition is not None  # noqa: S101  # a real record has a position
        assert offset is not None  # noqa: S101
        self.stats["records"] += 1
        self._next[partition] = offset + 1
        data = msg.value() or b""
        key = msg.key()
        source = Source(topic=msg.topic() or self.source_topic, partition=partition, offset=offset)
        if len(data) > self.max_record_bytes:
            self._dead(key, data, "otlp_undecodable", "oversized", source)
            return
        try:
            decoded = decode(data, self.encoding)
        except UndecodableError as exc:
            self._dead(key, data, "otlp_undecodable", str(exc), source)
            return
        if decoded.invalid:
            shown = "; ".join(decoded.invalid[:5])
            more = f" and {len(decoded.invalid) - 5} more" if len(decoded.invalid) > 5 else ""  # noqa: PLR2004
            self._dead(
                key,
                data,
                "otlp_undecodable",
                f"{len(decoded.invalid)} span(s) skipped: {shown}{more}",
                source,
            )
        self.stats["spans"] += len(decoded.spans)
        origin = _Origin(partition, offset)
        origin.holds = self.joiner.add(decoded.spans, origin, now)
        if origin.holds:
            self._pending.setdefault(partition, {})[offset] = origin

    # -- output ----------------------------------------------------------------------------------------
    def _publish(self, released: list[Released]) -> None:
        for item in released:
            for event in item.mapped.events:
                data = encode(event)
                if self.source_key is not None:
                    data = self.source_key.sign(data)
                self._send(self._intents, event.workflow_id.encode(), data)
                self.stats["events"] += 1
            for cov in item.mapped.coverage:
                self._send(self._coverage, cov.workflow_id.encode(), encode(cov))
            for rej in item.mapped.rejected:
                self._dead_span(rej.span, rej.workflow_id, rej.event_id, rej.error)
        producer = self._producer
        assert producer is not None  # noqa: S101  # run() created it
        remaining = producer.flush(60)
        if remaining or self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryFailedError(
                f"{remaining} record(s) unacknowledged, {len(failures)} failed "
                f"(first: {failures[:1]}); no offset past them is committed"
            )
        for item in released:
            for origin in item.origins:
                assert isinstance(origin, _Origin)  # noqa: S101  # only _take adds origins
                origin.holds -= 1
                if origin.holds == 0:
                    self._pending.get(origin.partition, {}).pop(origin.offset, None)
        self._commit()

    def _commit(self) -> None:
        """Per partition: the lowest offset still held, else the one after the last read."""
        offsets = []
        for partition, after in self._next.items():
            held = self._pending.get(partition)
            target = min(held) if held else after
            if self._committed.get(partition) != target:
                offsets.append(TopicPartition(self.source_topic, partition, target))
                self._committed[partition] = target
        if offsets and self._consumer is not None:
            self._consumer.commit(offsets=offsets, asynchronous=False)

    def _send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Produce one record (the one place every output goes through)."""
        producer = self._producer
        assert producer is not None  # noqa: S101
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=self._delivered)
                break
            except BufferError:  # local queue full: serve delivery reports, then retry
                producer.poll(0.1)
        producer.poll(0)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}: {err.str()}")

    def _dead(
        self, key: bytes | None, data: bytes, reason: DeadLetterReason, error: str, source: Source
    ) -> None:
        record = dead_letter(data, Rejected(reason, error), source, datetime.now(UTC))
        self._send(self._deadletter, key, encode(record))
        self.stats["deadletters"] += 1

    def _dead_span(
        self, span: SpanView, workflow_id: str | None, event_id: str, error: str
    ) -> None:
        payload = orjson.dumps(
            {
                "trace_id": span.trace_id,
                "span_id": span.span_id,
                "parent_span_id": span.parent_span_id,
                "name": span.name,
                "attributes": span.attributes,
                "resource": span.resource,
            },
            default=lambda v: v.hex() if isinstance(v, bytes) else str(v),
        )
        record = DeadLetter(
            reason="otlp_unmappable",
            error=error,
            source=Source(topic=self.source_topic),
            received_at=datetime.now(UTC),
            payload=payload[:16384].decode("utf-8", "replace"),
            workflow_id=workflow_id[:256] if workflow_id else None,
            event_id=event_id,
        )
        key = workflow_id.encode() if workflow_id else None
        self._send(self._deadletter, key, encode(record))
        self.stats["deadletters"] += 1
