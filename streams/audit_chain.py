"""The worker's side of the tamper-evident decision log (docs/audit.md).

Every decision the worker writes goes to an explicit partition of the decisions topic: the
partition of its workflow's intents (the topics have one partition count). The worker that owns
an intents partition is then the only writer of the decisions partition of the same number, so
it can hold that partition's chain head in memory and link each decision after it
(``tether.audit.chain.ChainHeads``).

The head comes from the log itself: when a partition is newly assigned (a start, a restart, a
rebalance) the worker reads the last linked record of that decisions partition before it writes
there (``read_heads``); a partition it keeps across a rebalance keeps its head. So after a crash,
the decisions of the input read again are new links after the last one that reached Kafka (an
at-least-once duplicate is a new link, never a break). A zombie that keeps writing after its
partition moved continues the same head as the new owner: ``tether audit verify`` reports the
two branches as a fork.

At intervals (``TETHER_AUDIT_CHECKPOINT_S``) the worker signs, for each partition whose chain
moved, a checkpoint of its *durable* head (the last link Kafka acknowledged: a checkpoint never
names a record that could still be lost) and publishes it to ``<prefix>audit-checkpoints``,
partition = the decisions partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from tether.adapters.kafka_config import consumer_config
from tether.adapters.kafka_publisher import Entry
from tether.audit.chain import ChainHeads, Link, NotChained, unseal
from tether.audit.checkpoint import CheckpointSigner
from tether.security import SetSigner
from tether.settings import Settings
from tether.topics import AUDIT_CHECKPOINTS, DECISIONS

_log = logging.getLogger("tether.worker")

TAIL_WINDOW = 256
"""How many records back from a partition's end the head is looked for (records appended by
someone else, unlinked, are skipped)."""


@dataclass(slots=True)
class _Step:
    """One step's last link on one partition, and whether Kafka has acknowledged the step."""

    link: Link
    acked: bool = False


ReadHeads = Callable[[Collection[int]], dict[int, Link | None]]
"""Reads the last link of each decisions partition (None: the partition holds none)."""


class DecisionChain:
    """The chain heads of the decisions partitions this worker writes, and their checkpoints."""

    def __init__(
        self,
        settings: Settings,
        signer: SetSigner,
        *,
        worker_id: str,
        read_heads: ReadHeads | None = None,
    ) -> None:
        self.heads = ChainHeads()
        self.topic = settings.topic(DECISIONS)
        self.checkpoint_topic = settings.topic(AUDIT_CHECKPOINTS)
        self.worker_id = worker_id
        self.read_heads = read_heads
        self._signer = CheckpointSigner(signer)
        self._step: dict[int, Link] = {}  # links sealed since the last ``take``
        # per partition, the steps' last links in the order they were sealed, each with
        # whether Kafka has acknowledged it: the durable head is the end of the acknowledged
        # prefix (a later step acknowledged before an earlier one still being retried moves
        # it no further)
        self._steps: dict[int, deque[_Step]] = {}
        self._durable: dict[int, Link] = {}  # the last acknowledged link per partition
        self._checkpointed: dict[int, int] = {}  # partition -> seq of its last checkpoint
        self.checkpoints = 0
        self.read_failures = 0
        self.reading = False  # heads are being read: no decision may be written yet

    def seal(self, partition: int, body: bytes) -> bytes:
        """``body`` (a serialized decision) linked after ``partition``'s head."""
        value, link = self.heads.seal(partition, body)
        self._step[partition] = link
        return value

    def take(self) -> list[_Step]:
        """The step just sealed: its last link per partition, queued in seal order."""
        step, self._step = self._step, {}
        taken = [_Step(link) for link in step.values()]
        for s in taken:
            self._steps.setdefault(s.link.partition, deque()).append(s)
        return taken

    def acknowledged(self, steps: list[_Step]) -> Callable[[asyncio.Future[None]], None]:
        """A done-callback for a step's publication: once Kafka has acknowledged it, its links
        are durable, as far as every earlier step of the partition is too (and then may be
        checkpointed)."""

        def done(future: asyncio.Future[None]) -> None:
            if future.cancelled() or future.exception() is not None:
                return  # only a shutdown: the step was not made durable
            for s in steps:
                s.acked = True
                queue = self._steps.get(s.link.partition)
                while queue and queue[0].acked:
                    self._durable[s.link.partition] = queue.popleft().link

        return done

    async def assign(self, partitions: set[int]) -> None:
        """Own the decisions partitions ``partitions`` now: read the head of each new one."""
        for partition in self.heads.partitions():
            if partition not in partitions:
                self.heads.forget(partition)
                self._steps.pop(partition, None)
                self._durable.pop(partition, None)
                self._checkpointed.pop(partition, None)
        new = sorted(p for p in partitions if not self.heads.known(p))
        if not new or self.read_heads is None:
            return
        self.reading = True
        try:
            await self._read(new)
        finally:
            self.reading = False

    async def _read(self, new: list[int]) -> None:
        read = self.read_heads
        assert read is not None  # noqa: S101  # checked by assign
        for attempt in range(5):
            try:
                heads = await asyncio.to_thread(read, new)
                break
            except Exception as exc:  # the broker is unreachable: try again, then say so
                _log.warning("reading the decisions' chain heads failed (%r); retrying", exc)
                await asyncio.sleep(0.5 * (attempt + 1))
        else:
            self.read_failures += 1
            _log.error(
                "could not read the chain heads of decisions partitions %s: their next "
                "decisions restart the chain (tether audit verify reports the break)",
                new,
            )
            return
        for partition in new:
            if partition not in heads:
                continue  # unreadable (logged): its next decision restarts the chain
            head = heads[partition]
            self.heads.set_head(partition, head)
            if head is not None:
                # the next checkpoint vouches for the head this worker continues from: the
                # previous owner may have died before checkpointing its last links
                self._durable[partition] = head
        _log.info(
            "decisions' chain heads: %s", {p: (h.seq if h else None) for p, h in heads.items()}
        )

    def due_checkpoints(self, now: float) -> list[Entry]:
        """Signed checkpoints of every durable head that moved since its last checkpoint."""
        out: list[Entry] = []
        for partition, link in sorted(self._durable.items()):
            if self._checkpointed.get(partition, -1) >= link.seq:
                continue
            if not self.heads.known(partition):
                continue
            token = self._signer.sign(link, log=self.topic, worker=self.worker_id, now=now)
            out.append((self.checkpoint_topic, str(partition).encode(), token, partition))
            self._checkpointed[partition] = link.seq
            self.checkpoints += 1
        return out


def kafka_head_reader(settings: Settings, *, client_id: str, timeout_s: float = 10.0) -> ReadHeads:
    """``read_heads`` over the decisions topic: for each partition, the last linked record
    within ``TAIL_WINDOW`` of its end (assign(), no commits, group ``<app id>.audit``).

    A partition whose records have all expired (its low watermark is past 0 and it is empty)
    has no readable head: the chain restarts there, reported by verify as a break."""
    topic = settings.topic(DECISIONS)

    def read(partitions: Collection[int]) -> dict[int, Link | None]:
        config = consumer_config(
            settings,
            group_id=f"{settings.group_id}.audit",
            client_id=client_id,
            overrides={"enable.auto.commit": False, "enable.partition.eof": True},
        )
        consumer = Consumer(config)
        heads: dict[int, Link | None] = {}
        try:
            for p in partitions:
                try:
                    heads[p] = _tail(consumer, topic, p, timeout_s)
                except _Unreadable as exc:  # left unknown: the chain restarts, visibly
                    _log.error("%s: its chain restarts at its next decision", exc)
        finally:
            consumer.close()
        return heads

    return read


class _Unreadable(RuntimeError):
    pass


def _tail(consumer: Consumer, topic: str, partition: int, timeout_s: float) -> Link | None:
    low, high = consumer.get_watermark_offsets(
        TopicPartition(topic, partition), timeout=timeout_s, cached=False
    )
    if high <= low:
        if low > 0:
            raise _Unreadable(f"{topic}[{partition}] is empty after retention")
        return None
    start = max(low, high - TAIL_WINDOW)
    consumer.assign([TopicPartition(topic, partition, start)])
    deadline = time.monotonic() + timeout_s
    last: Link | None = None
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:  # confluent's constant
                break
            raise KafkaException(err)
        with contextlib.suppress(NotChained):  # someone else's unlinked record: skipped
            last = unseal(msg.value() or b"").link
        if (msg.offset() or 0) >= high - 1:
            break
    else:
        raise TimeoutError(f"reading the tail of {topic}[{partition}] took over {timeout_s}s")
    consumer.unassign()
    if last is None and start > low:
        raise _Unreadable(f"no linked record in the last {TAIL_WINDOW} of {topic}[{partition}]")
    return last
