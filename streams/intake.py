"""Batches of input records straight from faust's consumer loop to the worker.

faust hands every fetched record to an agent through its conductor, a per-agent queue, an Event
and a Stream: about 250 µs a record on this class of machine, which capped a worker at a few
thousand events a second, and the hand-offs are also where records went missing around a
rebalance. tether's own input topics are read by ``input_fetch.InputFetcher`` (librdkafka), which gives
the records to this class instead: it buffers what one fetch returned, hands the batch to the
topic's handler once the tables have recovered, and acknowledges the records to faust's offset
tracking only after the handler returned (the handler returns once its outputs and state are
durable in Kafka). faust still owns group membership, partition assignment, table recovery and
offset commits; changelog records still take faust's path.

A rebalance drops whatever is buffered but unprocessed: faust seeks every partition back to its
committed offset, so those records are read again. A revocation waits for a batch that is
already being processed (``wait_idle``), so its acknowledgements and changelog writes land
before the partitions move.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

_log = logging.getLogger("tether.worker")


class InputRecord(Protocol):
    """What a handler reads of a record (faust's message has these attributes)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


Handler = Callable[[Sequence[Any]], Awaitable[None]]
"""Applies a batch when called and returns an awaitable that completes once the batch's outputs
and state are durable (``Worker.submit_intents``): the next batch can be applied meanwhile."""


class Intake:
    """Buffers, hands over and acknowledges the records of the topics it has handlers for."""

    def __init__(
        self,
        handlers: dict[str, Handler],
        *,
        ready: Callable[[], bool],
        ack: Callable[[Any], object],
        generation: Callable[[], int],
        batch_max: int = 1000,
        max_inflight: int | None = None,
        retry_s: float = 0.5,
        inbound: Callable[[Sequence[Any]], object] | None = None,
    ) -> None:
        self.handlers = handlers
        self.ready = ready
        # told of every batch handed over: faust's monitor learns that its partitions are
        # being processed (``streams.app.mark_inbound``)
        self.inbound = inbound
        self.ack = ack
        self.generation = generation
        self.batch_max = batch_max
        # Records handed over but not yet durable (their batches wait for a state epoch): a
        # bound on records, not batches, so that a trickle of small batches never waits while
        # a worker catching up holds no more than a few full batches in memory.
        self.max_inflight = max_inflight if max_inflight is not None else 4 * batch_max
        self._inflight_records = 0
        self.retry_s = retry_s
        self._pending: list[Any] = []
        self._pending_generation = -1
        self._inflight: list[asyncio.Future[Any]] = []
        self._retry_at = 0.0
        self.delivered = 0
        self.batches = 0
        self.dropped = 0

    def route(self, topic: str, handler: Handler) -> None:
        """Hand the records of ``topic`` to ``handler`` (before the first record arrives)."""
        self.handlers[topic] = handler

    def handles(self, topic: str) -> bool:
        """Whether records of ``topic`` come here (instead of faust's agents)."""
        return topic in self.handlers

    def add(self, message: Any) -> None:
        """Buffer one fetched record (not yet processed, not yet acknowledged)."""
        if not self._pending:
            self._pending_generation = self.generation()
        self._pending.append(message)

    @property
    def pending(self) -> int:
        """Records buffered and not yet handed over."""
        return len(self._pending)

    @property
    def full(self) -> bool:
        """Enough is buffered for one batch."""
        return len(self._pending) >= self.batch_max

    def reset(self) -> None:
        """Forget buffered records (a rebalance: faust reads them again from the committed
        offsets)."""
        if self._pending:
            _log.info("rebalance: %d buffered records will be read again", len(self._pending))
            self.dropped += len(self._pending)
        self._pending = []

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until every batch handed over is durable and acknowledged; False if that took
        longer than ``timeout``."""
        if not self._inflight:
            return True
        try:
            await asyncio.wait_for(asyncio.gather(*self._inflight), timeout)
        except TimeoutError:
            return False
        return True

    async def flush(self) -> None:
        """Hand the buffered records over, in order; they are acknowledged once durable.

        Does nothing while the tables are recovering or a rebalance is on (the records stay
        buffered), and drops records of an earlier consumer generation (they are read again).
        A handler that raises leaves the batch buffered, to be retried after ``retry_s``. Up
        to ``max_inflight`` records may be on their way to durability at once.
        """
        if not self._pending:
            return
        if self._pending_generation != self.generation():
            self.reset()
            return
        if not self.ready() or time.monotonic() < self._retry_at:
            return
        batch = self._pending
        groups: dict[str, list[Any]] = {}
        for message in batch:
            groups.setdefault(message.topic, []).append(message)
        try:
            steps = [self.handlers[topic](records) for topic, records in groups.items()]
        except Exception:  # keep the batch: nothing of it is acknowledged, it is retried
            _log.exception("handling a batch of %d records failed; retrying", len(batch))
            self._retry_at = time.monotonic() + self.retry_s
            return
        self._pending = []
        if self.inbound is not None:
            self.inbound(batch)
        durable = asyncio.gather(*steps)
        durable.add_done_callback(lambda done: self._settled(done, batch))
        self._inflight.append(durable)
        self._inflight_records += len(batch)
        while self._inflight_records > self.max_inflight and self._inflight:
            await asyncio.wait([self._inflight[0]])

    def _settled(self, done: asyncio.Future[Any], batch: list[Any]) -> None:
        self._inflight.remove(done)
        self._inflight_records -= len(batch)
        if done.cancelled() or done.exception() is not None:
            # Only a shutdown cancels a step (publishing retries until Kafka acknowledges):
            # the records stay unacknowledged and are read again by the next owner.
            _log.warning("a batch of %d records was not made durable", len(batch))
            return
        ack = self.ack
        for message in batch:
            ack(message)
        self.delivered += len(batch)
        self.batches += 1
