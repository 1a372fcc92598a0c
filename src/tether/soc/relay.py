"""A consumer of an output topic that acknowledges nothing before it has delivered it.

``tether alerts`` and ``tether ocsf-forward`` share this loop: poll a batch, hand it to
``deliver`` (which returns only once every record is delivered, retrying as long as it must),
then commit the batch's offsets. A crash or a restart repeats at most what was delivered but not
yet committed (at-least-once); it loses nothing, because the committed position never passes a
record that was not delivered. The finding id lets a receiver drop the repeats.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from tether.adapters.kafka_config import consumer_config
from tether.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed record: where it came from, its key and value."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


Deliver = Callable[[Sequence[Record]], bool]
"""Delivers a batch; returns False only when asked to stop before it finished (no commit)."""


class Relay:
    """Consume ``topics`` in consumer group ``group_id``; commit only what ``deliver`` took."""

    def __init__(
        self,
        settings: Settings,
        *,
        topics: list[str],
        group_id: str,
        client_id: str,
        deliver: Deliver,
        batch: int = 500,
        stop: threading.Event | None = None,
        idle: Callable[[], bool] | None = None,
    ) -> None:
        self._consumer = Consumer(
            consumer_config(
                settings,
                group_id=group_id,
                client_id=client_id,
                overrides={"isolation.level": "read_committed"},
            )
        )
        self._consumer.subscribe(topics)
        self._deliver = deliver
        self._batch = batch
        self.stop = stop or threading.Event()
        self._idle = idle  # called between polls: may flush held work (a storm summary)
        self.delivered = 0
        self._held: dict[tuple[str, int], int] = {}  # delivered, not yet committed

    def run(self) -> None:
        """Until ``stop`` is set. Offsets are committed synchronously after each delivery."""
        try:
            while not self.stop.is_set():
                self.step(timeout=0.5)
        finally:
            self._consumer.close()

    def step(self, timeout: float) -> int:
        """One poll, delivery and commit; the number of records delivered."""
        msgs: list[Message] = self._consumer.consume(self._batch, timeout)
        records: list[Record] = []
        positions: dict[tuple[str, int], int] = {}
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                continue
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            value = m.value()
            if topic is None or partition is None or offset is None:
                continue
            positions[(topic, partition)] = offset + 1
            if value is not None:  # a tombstone has nothing to deliver
                records.append(Record(topic, partition, offset, m.key(), value))
        if records and not self._deliver(records):
            return 0  # stopping mid-delivery: commit nothing of this batch
        self._held.update(positions)
        if self._held and (self._idle is None or self._idle()):
            self._commit(self._held)
            self._held = {}
        self.delivered += len(records)
        return len(records)

    def _commit(self, positions: dict[tuple[str, int], int]) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # e.g. a partition moved away: its new owner repeats it
            log.warning("offset commit failed (records will be redelivered): %s", exc)
