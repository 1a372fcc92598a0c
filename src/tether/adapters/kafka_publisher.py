"""An idempotent Kafka producer usable from asyncio and threads, with per-record delivery futures."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any, Self

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from tether.adapters.kafka_config import producer_config
from tether.settings import Settings

_log = logging.getLogger(__name__)

Position = tuple[int, int]
"""Where the broker stored a record: ``(partition, offset)``."""
Entry = tuple[str, bytes | None, bytes | None, int | None]
"""A record to publish: ``(topic, key, value, partition or None for the key's)``."""


class DeliveryError(Exception):
    """The broker did not acknowledge a record (or it could not even be queued).

    Attributes:
        topic: the destination topic.
        key: the record key.
        code: the librdkafka error code (``KafkaError.*``), or None for a local failure.
        retriable: librdkafka considers the error transient.
    """

    def __init__(self, topic: str, key: bytes | None, error: KafkaError | str) -> None:
        """Describe a failed delivery of the record keyed ``key`` to ``topic``."""
        if isinstance(error, KafkaError):
            detail = f"{error.name()}: {error.str()}"
            self.code: int | None = error.code()
            self.retriable = error.retriable()
        else:
            detail, self.code, self.retriable = error, None, False
        shown = key.decode("utf-8", "replace")[:80] if key is not None else None
        super().__init__(f"delivery to {topic} (key {shown!r}) failed: {detail}")
        self.topic = topic
        self.key = key


class KafkaPublisher:
    """A confluent-kafka producer whose deliveries resolve futures.

    A background thread polls the producer, so delivery callbacks run promptly without the
    caller polling; each callback settles the record's future (``asyncio`` futures through
    ``loop.call_soon_threadsafe``). The worker awaits these futures before committing the input
    offsets that produced the records.

    Example::

        publisher = KafkaPublisher(settings, client_id="tether-worker-1")
        publisher.start()
        partition, offset = await publisher.publish("tether.revocations", b"token:j1", data)
        publisher.stop()
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str = "tether-publisher",
        overrides: Mapping[str, Any] | None = None,
        poll_interval_s: float = 0.05,
        queue_full_timeout_s: float = 5.0,
    ) -> None:
        """Configure the producer; nothing connects until :meth:`start`.

        Args:
            settings: supplies ``kafka_bootstrap``.
            client_id: names the producer in broker logs.
            overrides: librdkafka properties over :func:`producer_config`'s defaults, e.g.
                ``{"message.timeout.ms": 30000}`` to fail deliveries sooner than 5 minutes.
            poll_interval_s: how long the background thread waits for events per poll.
            queue_full_timeout_s: how long :meth:`send`/:meth:`publish` wait for room when the
                local queue is full before failing the record.
        """
        config = producer_config(settings, client_id=client_id, overrides=overrides)
        config["error_cb"] = self._on_error
        self._config = config
        self._bootstrap = settings.kafka_bootstrap
        self._poll_interval_s = poll_interval_s
        self._queue_full_timeout_s = queue_full_timeout_s
        self._producer: Producer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.fatal_error: KafkaError | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Create the producer and the polling thread (idempotent)."""
        if self._producer is not None:
            return
        self._stopping.clear()
        self._producer = Producer(self._config)
        self._thread = threading.Thread(
            target=self._poll_loop, name="tether-publisher", daemon=True
        )
        self._thread.start()

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has run (and :meth:`stop` has not)."""
        return self._producer is not None

    def stop(self, timeout: float = 30.0) -> int:
        """Flush, then stop polling and drop the producer.

        Records still undelivered after ``timeout`` are purged: their futures fail with a
        :class:`DeliveryError`, so nobody waits forever.

        Returns:
            The number of records that were purged undelivered.
        """
        producer = self._producer
        if producer is None:
            return 0
        remaining = producer.flush(timeout)
        if remaining:
            producer.purge(in_queue=True, in_flight=True, blocking=False)
            producer.flush(1.0)  # serves the purge's failed delivery reports
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        self._producer = None
        self._thread = None
        return remaining

    def __enter__(self) -> Self:
        """Start; stop (flushing) when the block exits."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop, flushing what is pending."""
        self.stop()

    # -- publishing ------------------------------------------------------------------------

    def publish(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> asyncio.Future[Position]:
        """Queue one record; the returned future resolves when the broker has acknowledged it.

        ``partition`` pins the record to a partition (as a table's changelog needs); by default
        the key decides.

        Must be called from a running event loop. The future resolves to ``(partition, offset)``
        or fails with :class:`DeliveryError`. Queueing itself does not block, unless librdkafka's
        local queue is full (then it waits up to ``queue_full_timeout_s``: backpressure).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Position] = loop.create_future()

        def settle(outcome: Position | DeliveryError) -> None:
            if future.done():
                return
            if isinstance(outcome, DeliveryError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        def on_outcome(outcome: Position | DeliveryError) -> None:
            try:
                loop.call_soon_threadsafe(settle, outcome)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                _log.debug("delivery report after the event loop closed: %s", outcome)

        self._produce(topic, key, value, on_outcome, partition)
        return future

    def publish_many(
        self, records: Sequence[Entry]
    ) -> asyncio.Future[list[tuple[Entry, DeliveryError]]]:
        """Queue ``(topic, key, value, partition)`` records; one future settles once the broker
        has answered for every one of them, with the records that failed and why (empty when
        all were acknowledged).

        One future and one hand-off to the event loop per batch, instead of per record: the
        worker's output path publishes a decision and a credential use for nearly every input.
        Each delivery report is one call of the batch's ``_BatchReport``, with its record bound
        by ``functools.partial`` (no closures made per record). Must be called from a running
        event loop.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[tuple[Entry, DeliveryError]]] = loop.create_future()
        if not records:
            future.set_result([])
            return future
        report = _BatchReport(loop, future, len(records))
        produce = self._require().produce
        for entry in records:
            topic, key, value, partition = entry
            on_delivery = partial(report, entry)
            try:
                produce(
                    topic,
                    value=value,
                    key=key,
                    partition=-1 if partition is None else partition,
                    on_delivery=on_delivery,
                )
            except (BufferError, KafkaException):  # a full queue (waited on) or a refusal
                self.produce(topic, key, value, on_delivery, partition)
        return future

    def send(
        self, topic: str, key: bytes | None, value: bytes
    ) -> concurrent.futures.Future[Position]:
        """Queue one record from any thread; like :meth:`publish` with a thread-safe future."""
        future: concurrent.futures.Future[Position] = concurrent.futures.Future()

        def on_outcome(outcome: Position | DeliveryError) -> None:
            if future.cancelled():
                return
            if isinstance(outcome, DeliveryError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        self._produce(topic, key, value, on_outcome)
        return future

    def flush(self, timeout: float = 30.0) -> int:
        """Wait until every queued record is acknowledged or failed.

        Returns:
            The number of records still outstanding after ``timeout`` (0 when all settled).
        """
        return self._require().flush(timeout)

    async def aflush(self, timeout: float = 30.0) -> int:
        """:meth:`flush` without blocking the event loop."""
        return await asyncio.to_thread(self.flush, timeout)

    def __len__(self) -> int:
        """Records queued or in flight."""
        return len(self._producer) if self._producer is not None else 0

    # -- internals -------------------------------------------------------------------------

    def _require(self) -> Producer:
        if self._producer is None:
            raise RuntimeError("KafkaPublisher is not started: call start() first")
        return self._producer

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        on_delivery: Callable[[KafkaError | None, Message | None], None],
        partition: int | None = None,
    ) -> None:
        """Queue one record with librdkafka's own delivery callback (run on the polling
        thread; ``msg`` is None when the record could not even be queued): the cheapest path,
        without a future, for fire-and-forget producers such as the SDK Emitter. A full local
        queue is waited on for up to ``queue_full_timeout_s``."""
        producer = self._require()
        pinned = -1 if partition is None else partition  # -1: librdkafka's partitioner decides
        deadline = time.monotonic() + self._queue_full_timeout_s
        while True:
            try:
                producer.produce(
                    topic, value=value, key=key, partition=pinned, on_delivery=on_delivery
                )
                return
            except BufferError:
                if time.monotonic() >= deadline:
                    on_delivery(
                        KafkaError(KafkaError._QUEUE_FULL, "local producer queue is full"), None
                    )
                    return
                producer.poll(0.01)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else KafkaError(KafkaError._FAIL, str(exc))
                on_delivery(error, None)
                return

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        on_outcome: Callable[[Position | DeliveryError], None],
        partition: int | None = None,
    ) -> None:
        def on_delivery(err: KafkaError | None, msg: Message | None) -> None:
            if err is not None or msg is None:
                on_outcome(DeliveryError(topic, key, err or "not queued"))
            else:
                on_outcome((msg.partition() or 0, msg.offset() or 0))

        self.produce(topic, key, value, on_delivery, partition)

    def _poll_loop(self) -> None:
        producer = self._producer
        if producer is None:  # stop() ran before the thread got going
            return
        while not self._stopping.is_set():
            try:
                producer.poll(self._poll_interval_s)
            except Exception:  # a user callback must never kill delivery reporting
                _log.exception("error while serving producer callbacks")

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self.fatal_error = error
            _log.error("fatal Kafka producer error (%s): %s", self._bootstrap, error.str())
        else:
            _log.warning("Kafka producer (%s): %s", self._bootstrap, error.str())


class _BatchReport:
    """The delivery reports of one ``publish_many`` batch: counts them down (on the polling
    thread, or on the caller's for a record that could not be queued), keeps the failures,
    and settles the batch's future on its event loop once the last report is in."""

    __slots__ = ("_failures", "_future", "_lock", "_loop", "_remaining")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[list[tuple[Entry, DeliveryError]]],
        count: int,
    ) -> None:
        self._loop = loop
        self._future = future
        self._remaining = count
        self._failures: list[tuple[Entry, DeliveryError]] = []
        self._lock = threading.Lock()

    def __call__(self, entry: Entry, err: KafkaError | None, msg: Message | None) -> None:
        """One record's outcome (librdkafka's ``on_delivery`` arguments after ``entry``)."""
        with self._lock:
            if err is not None or msg is None:
                self._failures.append(
                    (entry, DeliveryError(entry[0], entry[1], err or "not queued"))
                )
            self._remaining -= 1
            last = self._remaining == 0
        if last:
            try:
                self._loop.call_soon_threadsafe(self._settle)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                _log.debug("delivery report after the event loop closed")

    def _settle(self) -> None:
        if not self._future.done():
            self._future.set_result(self._failures)
