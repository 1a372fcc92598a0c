"""Publishing a step's outputs and waiting until Kafka has acknowledged every one of them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

from confluent_kafka import KafkaError

from tether.adapters.kafka_publisher import DeliveryError, Entry
from tether.models.outputs import Revocation

_log = logging.getLogger("tether.worker")

Failures = list[tuple[Entry, DeliveryError]]
PublishMany = Callable[[list[Entry]], Awaitable[Failures]]
"""Publishes records and returns, once the broker has answered for all, those that failed."""
Reject = Callable[[Entry, DeliveryError], Entry | None]
"""Given a record the broker refused for good, what to publish instead (its dead letter), or
``None`` to keep retrying it (a revocation; a record small enough that the topic, not the
record, must be at fault)."""

PERMANENT = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,  # larger than the topic's max.message.bytes (or ours)
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_RECORD,  # e.g. refused by a broker-side validation
    }
)
"""Produce errors about the record itself: sending the same bytes again can never succeed."""

SIZE_ERRORS = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_MSG_SIZE}
)


def routed(urgent_topics: Collection[str], urgent: PublishMany, bulk: PublishMany) -> PublishMany:
    """One ``PublishMany`` over two producers: records of ``urgent_topics`` go to ``urgent``,
    every other record to ``bulk``. Both queue their records before this returns (as
    ``Publisher.send_now`` needs); the awaitable gathers the failures of both.

    librdkafka's ``linger.ms`` is one setting per producer, and it sends one request per
    partition: the worker's decisions, credential uses and state reach ~30 partitions, and with
    a 1 ms linger all its outputs took ~1,500 produce requests a second at 5,600 intents/s
    (librdkafka's statistics). A second producer lets the routine records wait to
    share requests while revocations and findings leave at once."""
    topics = frozenset(urgent_topics)

    def publish_many(records: list[Entry]) -> Awaitable[Failures]:
        now = [r for r in records if r[0] in topics]
        if not now:
            return bulk(records)
        if len(now) == len(records):
            return urgent(records)
        return _joined(urgent(now), bulk([r for r in records if r[0] not in topics]))

    return publish_many


async def _joined(first: Awaitable[Failures], second: Awaitable[Failures]) -> Failures:
    return [*await first, *await second]


@dataclass(slots=True)
class Batch:
    """Records to publish together: (topic, key, value, partition or None for the key's)."""

    records: list[Entry] = field(default_factory=list)
    unsigned: list[Revocation] = field(default_factory=list)  # signed before publishing

    def add(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> None:
        """Queue one record."""
        self.records.append((topic, key, value, partition))

    def revoke(self, rev: Revocation) -> None:
        """Queue a revocation; it is signed (off the event loop) before it is published."""
        self.unsigned.append(rev)

    def __len__(self) -> int:
        return len(self.records) + len(self.unsigned)


class Publisher:
    """Publishes batches with at-least-once delivery: failed records are retried until Kafka
    acknowledges them (ids derive from causes, so a duplicate is harmless). While it retries,
    the caller is blocked and no input offset moves: a lost revocation would be a security hole.

    Except for a record the broker refuses for good (``PERMANENT``: too large for the topic,
    invalid): the same bytes can never be accepted, and retrying them forever stalled the whole
    worker (intake, heartbeats, every gateway failing closed). Such a record is first sent
    again on its own (refused in a batch, it may have been the batch that was too large), then,
    if still refused, handed to ``reject``, whose replacement (a small dead letter naming the
    record and the error) is published instead; the other records of the batch go on. Without
    ``reject``, or when it answers ``None``, the record is retried like any other.
    """

    def __init__(
        self,
        publish_many: PublishMany,
        *,
        max_backoff_s: float = 2.0,
        reject: Reject | None = None,
    ) -> None:
        self.publish_many = publish_many
        self.reject = reject
        self._max_backoff = max_backoff_s
        self.failing_since: float | None = None
        self.published = 0
        self.retries = 0
        self.rejected = 0  # records refused for good and replaced by their dead letter

    async def send(self, batch: Batch) -> None:
        """Publish every record of ``batch``; return once all are acknowledged."""
        await self._deliver(batch.records, None)

    def send_now(self, batch: Batch) -> asyncio.Future[None]:
        """``send``, with the first attempt made before this returns: the records are queued
        to Kafka now, not when the event loop next runs a task (which may be after the next
        batch has been applied)."""
        records = batch.records
        first: Awaitable[Failures] | Exception | None = None
        if records:
            try:
                first = self.publish_many(records)
            except Exception as exc:  # handled as the attempt's outcome, in the task
                first = exc
        return asyncio.ensure_future(self._deliver(records, first))

    async def _deliver(
        self, pending: list[Entry], first: Awaitable[Failures] | Exception | None
    ) -> None:
        backoff = 0.05
        loop = asyncio.get_running_loop()
        while pending:
            attempt, first = first, None
            try:
                if isinstance(attempt, Exception):
                    raise attempt
                failures = await (attempt if attempt is not None else self.publish_many(pending))
            except Exception as exc:  # could not even queue them: same as failing them all
                failures = [(rec, DeliveryError(rec[0], rec[1], repr(exc))) for rec in pending]
            self.published += len(pending) - len(failures)
            instead: list[Entry] = []
            if failures and self.reject is not None:
                failures, instead = await self._judge(
                    failures, alone=len(pending) == 1, reject=self.reject
                )
            if not failures:
                if not instead:
                    self.failing_since = None
                    return
                pending = instead  # the dead letters of records refused for good
                continue
            if self.failing_since is None:
                self.failing_since = loop.time()
            self.retries += len(failures)
            errors = sorted({str(err) for _, err in failures})
            _log.error(
                "%d of %d records not acknowledged (%s); retrying in %.2fs, input is held",
                len(failures),
                len(pending),
                "; ".join(errors)[:500],
                backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)
            pending = [rec for rec, _ in failures] + instead

    async def _judge(
        self, failures: Failures, *, alone: bool, reject: Reject
    ) -> tuple[Failures, list[Entry]]:
        """Split ``failures`` into those to retry and the replacements of records refused for
        good. A record refused in a batch is sent again on its own first, awaited before the
        next (librdkafka would batch them together again): only a refusal of the record alone
        says something about the record."""
        retry: Failures = []
        instead: list[Entry] = []
        for rec, first in failures:
            err = first
            if err.code not in PERMANENT:
                retry.append((rec, err))
                continue
            if not alone:
                try:
                    again = await self.publish_many([rec])
                except Exception as exc:  # could not even queue it: retry with the others
                    again = [(rec, DeliveryError(rec[0], rec[1], repr(exc)))]
                if not again:
                    self.published += 1
                    continue
                err = again[0][1]
                if err.code not in PERMANENT:
                    retry.append((rec, err))
                    continue
            replacement = reject(rec, err)
            if replacement is None:
                retry.append((rec, err))
            else:
                self.rejected += 1
                _log.error("%s; publishing its dead letter instead of retrying it", err)
                instead.append(replacement)
        return retry, instead

    def stuck_for(self, now: float) -> float:
        """Seconds the publisher has been failing (0 when healthy)."""
        return 0.0 if self.failing_since is None else now - self.failing_since
