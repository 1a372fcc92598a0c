"""The worker's input topics, fetched by librdkafka instead of faust's aiokafka consumer.

faust's consumer runs aiokafka on a thread of its own: every fetch of the input crossed that
thread and the event loop's, and aiokafka builds and parses fetch requests in Python, holding
the GIL. With the event loop busy applying a batch, each of those steps waited for the GIL, so a
record spent 5-15 ms between the broker and the worker (``benchmarks/latency_hops.py``).

``InputFetcher`` reads tether's input topics with a librdkafka consumer instead: librdkafka
fetches on its own threads without the GIL, and one thread of ours hands what it read to the
event loop, a batch at a time, into the ``Intake``. faust keeps everything else: it still
subscribes to the topics and assigns their partitions (co-partitioned with the tables), recovers
the tables, and commits the offsets the intake acknowledges. aiokafka merely never fetches these
topics (``faust_fixes.fetch_here``). The librdkafka consumer joins no group: it is told
which partitions to read, and from which offset, when faust has recovered the tables and sought
to the committed offsets (``assign``), and to stop reading them when faust revokes them.

Every batch carries the assignment it was read under; the event loop drops batches of an
earlier one (those partitions are read again from their committed offsets by their owner, or
from the record after the last one taken). An offset that librdkafka skips (a transaction
marker, an aborted record, a record deleted by retention) is registered as a gap, so that the
offset commit moves over it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from faust.types import TP, Message

from .intake import Intake

_log = logging.getLogger("tether.worker")

FETCH_MIN_BYTES = 64 * 1024  # a busy stream in fewer, larger fetches (TETHER_FETCH_WAIT_MS)
QUEUED_KBYTES = 16 * 1024  # what librdkafka prefetches ahead of the worker, at most
BATCHES_AHEAD = 4  # batches handed to the event loop and not yet taken into the intake
POLL_S = 0.1  # the reading thread looks for assignment changes at least this often
WATERMARK_EVERY_S = 0.1  # how often the high watermarks behind ``behind`` are refreshed
PAUSE_S = 0.05  # how often a held-back feed retries handing records over
RETRY_S = 1.0  # the reading thread's pause after an unexpected error
CONSUME_MAX = 100_000  # records one poll takes at most (librdkafka refuses over 1,000,000)


@dataclass(frozen=True, slots=True)
class _Assignment:
    """Partitions to read, from these offsets (the fetcher's ``epoch``-th assignment)."""

    epoch: int  # the fetcher's count of assignments: batches carry the one they were read in
    start: Mapping[TP, int | None]  # None: the partition's first offset (nothing committed)


def skipped(start: int | None, last: int | None, offset: int) -> tuple[int, int] | None:
    """The offsets skipped before a record at ``offset`` (inclusive bounds), if any.

    ``last`` is the offset of the previous record read from the partition under this assignment
    (None: this is the first); ``start`` the offset reading began at (None: the partition's
    first, so nothing before the first record is owed)."""
    expected = last + 1 if last is not None else start
    if expected is None or offset <= expected:
        return None
    return expected, offset - 1


class InputFetcher:
    """Reads the input topics' assigned partitions with librdkafka and feeds the intake."""

    def __init__(
        self,
        config: dict[str, Any],
        intake: Intake,
        topics: Iterable[str],
        *,
        lag_topic: str,
        add_gap: Callable[[TP, int, int], None],
        batch_max: int,
    ) -> None:
        self.config = {
            **config,
            "enable.auto.commit": False,  # faust commits what the intake acknowledged
            "enable.auto.offset.store": False,
            "fetch.min.bytes": config.get("fetch.min.bytes", FETCH_MIN_BYTES),
            "queued.max.messages.kbytes": QUEUED_KBYTES,
        }
        self.intake = intake
        self.topics = frozenset(topics)
        self.lag_topic = lag_topic
        self.add_gap = add_gap
        self.batch_max = batch_max
        self.epoch = 0  # the assignment the event loop accepts batches of (0: none)
        self.gaps = 0  # skipped offset ranges registered (as OffsetGuard.gaps)
        self.dropped = 0
        self._start: Mapping[TP, int | None] = {}
        self._last: dict[TP, int] = {}  # offset of the last record taken, per partition
        self._high: dict[int, int] = {}  # lag_topic partition -> high watermark (reader's view)
        self._commands: queue.SimpleQueue[_Assignment | None] = queue.SimpleQueue()
        self._credits = threading.Semaphore(BATCHES_AHEAD)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._batches: asyncio.Queue[tuple[int, list[Any]]] | None = None  # (epoch, records)
        self._pump: asyncio.Task[None] | None = None
        self._tps: dict[tuple[str, int], TP] = {}
        self._reading: tuple[int, list[TopicPartition]] = (0, [])  # the reader's assignment

    # -- event loop side --------------------------------------------------------------------

    def start(self) -> None:
        """Start the reading thread and the task that feeds the intake (idempotent)."""
        if self._thread is not None:
            return
        loop = asyncio.get_running_loop()
        self._batches = asyncio.Queue()
        self._pump = loop.create_task(self._feed())
        self._thread = threading.Thread(
            target=self._read, args=(loop,), name="tether-input", daemon=True
        )
        self._thread.start()

    def assign(self, start: Mapping[TP, int | None], generation: int) -> None:
        """Read ``start``'s partitions from its offsets from now on (replacing the previous
        assignment; faust's consumer ``generation``, for the log); batches read under earlier
        assignments are dropped."""
        self._start = dict(start)
        self._last.clear()
        self._order(self._start)
        _log.info("reading %d input partitions (generation %d)", len(start), generation)

    def unassign(self) -> None:
        """Stop reading every partition (faust revoked them); what was read is dropped."""
        self._order({})

    def _order(self, start: Mapping[TP, int | None]) -> None:
        self.epoch += 1
        self._commands.put(_Assignment(self.epoch, start))

    def _read_again(self) -> None:
        """Read every partition again from the record after the last one taken (records read
        since were not taken: skipping them would make their offsets look like a gap)."""
        last, start = self._last, self._start
        self._start = {tp: last[tp] + 1 if tp in last else start[tp] for tp in start}
        last.clear()
        self._order(self._start)

    def behind(self, partition: int) -> bool:
        """Whether a partition of ``lag_topic`` has records not taken yet (unknown: True)."""
        high = self._high.get(partition)
        if high is None or high < 0:
            return True
        last = self._last.get(self._tp(self.lag_topic, partition))
        start = self._start.get(self._tp(self.lag_topic, partition))
        taken = last + 1 if last is not None else (start or 0)
        return taken < high

    def lag_records(self, partition: int) -> int | None:
        """Records of a ``lag_topic`` partition not taken yet (None: not known yet)."""
        high = self._high.get(partition)
        if high is None or high < 0:
            return None
        last = self._last.get(self._tp(self.lag_topic, partition))
        start = self._start.get(self._tp(self.lag_topic, partition))
        taken = last + 1 if last is not None else (start or 0)
        return max(0, high - taken)

    def stop(self) -> None:
        """Stop reading and close the consumer (the worker is shutting down)."""
        self._stop.set()
        self._commands.put(None)
        if self._pump is not None:
            self._pump.cancel()
        if self._thread is not None:
            self._thread.join(5)

    def _tp(self, topic: str, partition: int) -> TP:
        tp = self._tps.get((topic, partition))
        if tp is None:
            tp = self._tps[(topic, partition)] = TP(topic, partition)
        return tp

    async def _feed(self) -> None:
        batches = self._batches
        assert batches is not None  # noqa: S101  # set by start()
        intake = self.intake
        held = BATCHES_AHEAD * self.batch_max
        while True:
            epoch, records = await batches.get()
            try:
                # records wait here, not in memory, while the intake holds back (the tables
                # are recovering, or a batch is being retried)
                while intake.pending >= held and epoch == self.epoch:
                    await intake.flush()
                    await asyncio.sleep(PAUSE_S)
            finally:
                self._credits.release()
            if epoch != self.epoch:
                self.dropped += len(records)
                continue
            try:
                self._take(records)
            except Exception:  # never let the feed stop, nor skip a record: read them again
                _log.exception("taking %d input records failed; reading again", len(records))
                self._read_again()
                continue
            await intake.flush()

    def _take(self, records: list[Any]) -> None:
        intake, last, start = self.intake, self._last, self._start
        for m in records:
            if m.error() is not None:
                _log.warning("input fetch: %s", m.error())
                continue
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            tp = self._tp(topic, partition)
            hole = skipped(start.get(tp), last.get(tp), offset)
            if hole is not None:
                _log.info("offsets %d..%d of %r hold no records", hole[0], hole[1], tp)
                self.add_gap(tp, *hole)
                self.gaps += 1
            ts_type, ts = m.timestamp()
            key, value = m.key(), m.value()
            intake.add(
                Message(
                    topic, partition, offset, ts / 1000, ts_type, None, key, value, None, 0, 0, tp
                )
            )
            last[tp] = offset  # taken: the offset to read again from is the next one

    # -- the reading thread -----------------------------------------------------------------

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        consumer = Consumer(self.config)
        try:
            while not self._stop.is_set():
                try:
                    self._read_with(consumer, loop)
                except Exception:  # the input must not stop for good: log, pause, go on
                    _log.exception("reading the input failed; retrying in %.0f s", RETRY_S)
                    # what was read and not handed over is read again, not taken for a gap
                    try:
                        loop.call_soon_threadsafe(self._read_again)
                    except RuntimeError:  # the event loop is closed: the worker is stopping
                        return
                    self._stop.wait(RETRY_S)
        finally:
            consumer.close()

    def _read_with(self, consumer: Consumer, loop: asyncio.AbstractEventLoop) -> None:
        # Every call on the consumer happens on this thread: librdkafka's assign() waits on
        # work that a concurrent poll() on another thread can hold up.
        commands, credits, stop = self._commands, self._credits, self._stop
        epoch, assigned = self._reading
        watermarks_at = 0.0
        more = min(self.batch_max, CONSUME_MAX) - 1  # what one poll adds to its first record
        batches = self._batches
        assert batches is not None  # noqa: S101  # set by start()
        while not stop.is_set():
            while not commands.empty():
                command = commands.get()
                if command is None:
                    self._stop.set()
                    return
                epoch = command.epoch
                assigned = [
                    TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING if o is None else o)
                    for tp, o in command.start.items()
                ]
                consumer.assign(assigned)
                self._reading = (epoch, assigned)
            now = time.monotonic()
            if now >= watermarks_at:
                watermarks_at = now + WATERMARK_EVERY_S
                self._refresh_watermarks(consumer, assigned)
            first = consumer.poll(POLL_S)
            if first is None:
                continue
            records = [first, *consumer.consume(more, 0)]
            while not credits.acquire(timeout=POLL_S):  # the event loop is behind: wait
                if stop.is_set() or not commands.empty():
                    break
            else:
                loop.call_soon_threadsafe(batches.put_nowait, (epoch, records))
                continue
            # an assignment change (or stop) while waiting: these records belong to the old
            # assignment; the new one reads their partitions again
            self.dropped += len(records)

    def _refresh_watermarks(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            if tp.topic == self.lag_topic:
                try:
                    self._high[tp.partition] = consumer.get_watermark_offsets(tp, cached=True)[1]
                except Exception:  # noqa: S112  # not fetched yet: unknown stays "behind"
                    continue
