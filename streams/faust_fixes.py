"""Fixes to faust-streaming's consumer loop that at-least-once delivery depends on.

``Consumer._drain_messages`` hands each fetched record to the streams with
``wait_first(callback(message), suspend_flow.wait())``. When a rebalance suspends the flow
first, the callback is cancelled, so the record is never delivered, yet its offset is recorded
as read. The next record then looks like a gap in the log, which faust treats as acknowledged:
the offset commit moves past a record nobody processed. Records of partitions paused during
recovery leave the same kind of "gap". For tether that is a lost revocation.

The patched loop records a record as read only once it was actually delivered and stops at a
suspension (the rebalance seeks back to the committed offsets). For the input topics an
``OffsetGuard`` (``streams.offsets``) decides per record: a hole in a partition's offsets seeks
that partition back (the others carry on) and becomes a gap only once re-reading confirms it.
The offset commit (``_new_offset``) no longer commits past an unacknowledged record at the
committed offset. ``getmany`` no longer skips records of assigned partitions that are
momentarily paused. A seek forgets the gaps recorded for the partitions it moves. When another
client reads the input topics (``streams.input_fetch``), aiokafka never fetches them
(``fetch_here``), faust's check that aiokafka fetches them is skipped (``checked_here``), and
that client starts at the offsets faust seeks to (``perform_seek``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka.consumer.fetcher import Fetcher
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as aiokafka_driver

from streams.offsets import OffsetGuard, Verdict

_applied = False

# faust asks the broker for records with a 1.5 s long poll and no minimum, so under a steady
# trickle every fetch returns a handful of records and the next one is sent at once: thousands
# of fetch round trips a second, each crossing faust's consumer thread. Waiting up to
# TETHER_FETCH_WAIT_MS (5) for 64 KiB batches the trickle; a record waits at most that longer.
FETCH_MIN_BYTES = 64 * 1024
FETCH_MAX_WAIT_MS = 5
# Once a fetch comes back empty the input is quiet, and a 5 ms wait would mean up to 200 empty
# fetch round trips a second (~125 measured here), a fixed cost to the worker and the broker
# while nothing happens. The next fetch asks for a single byte instead, held up to
# TETHER_FETCH_IDLE_WAIT_MS (100): the broker answers as soon as a record arrives (the first
# record after a lull waits for nothing), and the fetch after a record batches again.
FETCH_IDLE_WAIT_MS = 100


@dataclass(frozen=True, slots=True)
class FetchPacing:
    """How the worker's input fetch waits: for a batch while records flow (``busy_*``), for the
    first record while the input is quiet (``idle_wait_ms``; 0 keeps the busy wait)."""

    busy_wait_ms: int = FETCH_MAX_WAIT_MS
    busy_min_bytes: int = FETCH_MIN_BYTES
    idle_wait_ms: int = FETCH_IDLE_WAIT_MS

    def apply(self, fetcher: Any, *, had_records: bool) -> None:
        """Set the wait of ``fetcher``'s next request (an aiokafka ``Fetcher`` reads these two
        attributes each time it builds one) from what the last response held."""
        if had_records or self.idle_wait_ms <= 0:
            fetcher._fetch_max_wait_ms = self.busy_wait_ms
            fetcher._fetch_min_bytes = self.busy_min_bytes
        else:
            fetcher._fetch_max_wait_ms = self.idle_wait_ms
            fetcher._fetch_min_bytes = 1


_pacing = FetchPacing()


def configure_fetch(max_wait_ms: int, idle_wait_ms: int = FETCH_IDLE_WAIT_MS) -> None:
    """Set the fetch waits of the consumers created from now on (``Settings.fetch_wait_ms``,
    ``Settings.fetch_idle_wait_ms``)."""
    global _pacing  # noqa: PLW0603  # one consumer configuration per process
    _pacing = FetchPacing(max_wait_ms, FETCH_MIN_BYTES, idle_wait_ms)


def tune_fetch(consumer: Any) -> Any:
    """Give an aiokafka consumer tether's fetch size and waits (its fetcher, created when the
    consumer starts, is paced by the ``paced`` wrapper below)."""
    pacing = _pacing
    consumer._fetch_min_bytes = pacing.busy_min_bytes
    consumer._fetch_max_wait_ms = pacing.busy_wait_ms
    consumer._tether_pacing = pacing
    return consumer


async def _getmany(self: Any, timeout: float) -> Any:
    """``Consumer.getmany`` without skipping records of partitions that are assigned but
    momentarily not "active" (paused for recovery or back-pressure): skipping them moved the
    fetch position past records nobody would read. The worker holds input until recovery is
    complete, so delivering them is safe; records of partitions no longer assigned are still
    dropped (their new owner reads them)."""
    records, _active = await self._wait_next_records(timeout)
    generation_id = self.app.consumer_generation_id
    if records is None or self.should_stop:
        return
    assigned = self.assignment()
    to_message = self._to_message
    if not self.flow_active:
        try:
            await self.perform_seek()  # faust's own rule: back to the committed offsets
        except Exception as exc:  # faust logs and carries on here too
            self.log.warning("exception performing seek when flow not active %r", exc)
        return
    for tp, record in self.scheduler.iterate(records):
        if not self.flow_active or self.app.consumer_generation_id != generation_id:
            break  # a rebalance started: it seeks back to the committed offsets
        if tp in assigned:
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            yield tp, to_message(tp, record)


async def _drain_messages(self: Any, fetcher: Any) -> None:  # noqa: PLR0912, PLR0915  # faust's loop, kept whole
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    read_offset = self._read_offset
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    suspend = self.suspend_flow
    flag = faust_consumer.CONSUMER_FETCHING
    guard = _guard(self)
    intake = getattr(self.app, "tether_intake", None)  # streams.intake.Intake, when attached
    fast = getattr(self.app, "tether_recovery", None)  # streams.recovery.FastRecovery
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            self.diag.set_flag(flag)
            # Poll briefly while a batch waits for the tables to recover.
            ait = getmany(timeout=0.05 if intake is not None and intake.pending else 1.0)
            await asyncio.sleep(0)  # getmany can loop without yielding to the event loop
            if self.should_stop:
                continue
            rewind: list[Any] = []
            absorbed: Any = None
            async for tp, message in ait:
                offset = message.offset
                if fast is not None and fast.absorb(tp, message):
                    read_offset[tp] = offset  # a changelog record of a table being recovered
                    absorbed = message
                    continue
                acked = acks_enabled_for(message.topic)
                if acked:  # an input topic: every offset is delivered or a confirmed gap
                    verdict = guard.check(tp, offset)
                    if verdict is Verdict.SKIP:
                        continue
                    if verdict is Verdict.REWIND:
                        rewind.append(tp)  # its other records in this fetch are skipped
                        continue
                    if verdict is Verdict.GAP:
                        first, last = guard.gap(tp, offset)
                        self.log.info("offsets %d..%d of %r hold no records", first, last, tp)
                        add_gap(self, tp, first, last)
                else:
                    r_offset = read_offset[tp]
                    if r_offset is not None and offset < r_offset:
                        continue  # already delivered (a seek went back): faust's own rule
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                if suspend.is_set():
                    break  # not delivered: the rebalance seeks back to the committed offsets
                if intake is not None and intake.handles(message.topic):
                    intake.add(message)  # acknowledged once handled; dropped at a rebalance
                    guard.delivered(tp, offset)
                    read_offset[tp] = offset
                    if intake.full:
                        await intake.flush()
                    continue
                delivery = asyncio.ensure_future(callback(message))
                if not delivery.done():
                    await asyncio.wait(
                        [delivery, asyncio.ensure_future(suspend.wait())],
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                if not delivery.done():
                    delivery.cancel()
                    break  # suspended while the stream buffer was full: not delivered
                delivery.result()
                if acked:
                    guard.delivered(tp, offset)
                read_offset[tp] = offset
            if absorbed is not None and fast is not None and fast.complete():
                fast.install()
                await callback(absorbed)  # faust's recovery loop sees it is complete
            if intake is not None:
                await intake.flush()
            for tp in rewind:
                to = guard.rewind_to(tp)
                self.log.warning("re-reading %r from offset %d: records were skipped", tp, to)
                await self.seek(tp, to)
            self.diag.unset_flag(flag)
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        self.diag.unset_flag(flag)


def _guard(consumer: Any) -> OffsetGuard[Any]:
    guard: OffsetGuard[Any] | None = getattr(consumer, "tether_offsets", None)
    if guard is None:
        guard = consumer.tether_offsets = OffsetGuard()
    return guard


def add_gap(consumer: Any, tp: Any, first: int, last: int) -> None:
    """Mark ``first..last`` (inclusive) as having no records, for the offset commit: unlike
    faust's ``_add_gap`` it neither includes the record after the gap nor clips the gap at the
    committed offset (which ``_new_offset`` below no longer tolerates a hole at)."""
    gaps = consumer._gap[tp]
    gaps.addi(first, last + 1)
    gaps.merge_overlaps()


def _new_offset(self: Any, tp: Any) -> int | None:
    """faust's ``Consumer._new_offset`` without its tolerance of a one-record hole at the head
    (faust commits past an unacknowledged record at the committed offset as soon as the next
    one is acknowledged): the commit moves over acknowledged records and registered gaps only."""
    acked: list[int] = self._acked[tp]
    if not acked:
        return None
    gaps = self._gap[tp]
    if gaps:
        top = max(acked)
        spans = sorted(gaps.overlap(0, top + 1), key=lambda span: span.begin)
        if spans:
            for span in spans:
                acked.extend(range(span.begin, span.end))
            gaps.chop(0, max(spans[-1].end, top + 1))
    committed = self._committed_offset[tp]
    if committed is not None:
        acked[:] = [o for o in acked if o >= committed]
    acked.sort()
    if not acked or (committed is not None and acked[0] > committed):
        return None  # the record at the committed offset is not done yet
    end, i, n = acked[0], 0, len(acked)
    while i < n and acked[i] <= end:
        end = max(end, acked[i] + 1)
        i += 1
    self._acked_index[tp].difference_update(acked[:i])
    del acked[:i]
    return end


def paced(proc_fetch_request: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap aiokafka's ``Fetcher._proc_fetch_request`` (which handles one fetch response and
    reports whether it held records) so that the response sets the wait of the next request,
    for the fetchers ``tune_fetch`` gave a pacing (not those of other aiokafka clients)."""

    async def _proc_fetch_request(self: Any, assignment: Any, node_id: Any, request: Any) -> Any:
        had_records = await proc_fetch_request(self, assignment, node_id, request)
        pacing: FetchPacing | None = getattr(self, "_tether_pacing", None)
        if pacing is not None:
            pacing.apply(self, had_records=bool(had_records))
        return had_records

    return _proc_fetch_request


def attach_intake(app: Any, intake: Any) -> None:
    """Route the records of ``intake``'s topics from the consumer loop to ``intake``."""
    app.tether_intake = intake


def attach_input(app: Any, fetcher: Any) -> None:
    """Have ``fetcher`` (``streams.input_fetch.InputFetcher``) read the topics it is given from
    the offsets faust seeks to, and aiokafka never fetch them."""
    app.tether_input = fetcher
    _elsewhere.update(fetcher.topics)


_elsewhere: set[str] = set()  # topics other clients fetch for this process's consumers


class _FetchedHere:
    """An aiokafka assignment seen without the partitions fetched elsewhere (those still need
    a valid position: faust seeks them and waits for their position like any other)."""

    __slots__ = ("_assignment",)

    def __init__(self, assignment: Any) -> None:
        self._assignment = assignment

    @property
    def tps(self) -> frozenset[Any]:
        a = self._assignment
        return frozenset(
            tp
            for tp in a.tps
            if tp.topic not in _elsewhere or not a.state_value(tp).has_valid_position
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._assignment, name)


def fetch_here(get_actions_per_node: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap aiokafka's ``Fetcher._get_actions_per_node`` (which builds the fetch requests for an
    assignment) to leave out the partitions another client fetches."""

    def _get_actions_per_node(self: Any, assignment: Any) -> Any:
        if _elsewhere:
            assignment = _FetchedHere(assignment)
        return get_actions_per_node(self, assignment)

    return _get_actions_per_node


def checked_here(verify_event_path: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap faust's ``AIOKafkaConsumerThread.verify_event_path`` (its periodic check that
    aiokafka fetches each assigned partition and the streams process it) to leave out the
    partitions another client fetches: aiokafka never sends a fetch request for those, so every
    check logged "Aiokafka has not sent fetch request ... since start" at ERROR, for each input
    partition about once a second (576 lines a minute for 12 partitions in a benchmark run),
    although the input was being read. The input fetcher logs its own read errors."""

    def _verify_event_path(self: Any, now: float, tp: Any) -> Any:
        if tp.topic in _elsewhere:
            return None
        return verify_event_path(self, now, tp)

    return _verify_event_path


def _start_input(consumer: Any) -> None:
    """Point the input fetcher, if any, at the committed offsets faust just sought to."""
    fetcher = getattr(consumer.app, "tether_input", None)
    if fetcher is None:
        return
    committed = consumer._committed_offset
    fetcher.assign(
        {tp: committed.get(tp) for tp in consumer.assignment() if tp.topic in fetcher.topics},
        consumer.app.consumer_generation_id,
    )


def attach_recovery(app: Any, recovery: Any) -> None:
    """Give the changelog records of an active table recovery to ``recovery``."""
    app.tether_recovery = recovery


def apply() -> None:
    """Install the fixes (idempotent)."""
    global _applied  # noqa: PLW0603  # a process-wide patch, applied once
    if _applied:
        return
    _applied = True
    base = faust_consumer.Consumer
    base._drain_messages = _drain_messages  # type: ignore[method-assign]
    base.getmany = _getmany  # type: ignore[method-assign]

    original_seek = base.seek
    original_perform_seek = base.perform_seek
    original_revoked = base.on_partitions_revoked

    async def seek(self: Any, partition: Any, offset: int) -> None:
        self._gap.pop(partition, None)
        await original_seek(self, partition, offset)
        _guard(self).seek(partition, offset)

    async def perform_seek(self: Any) -> None:
        self._gap.clear()
        await original_perform_seek(self)
        guard = _guard(self)
        for tp, offset in self._committed_offset.items():
            if offset is not None and offset > 0:  # aiokafka seeks only to these
                guard.seek(tp, offset)
        _start_input(self)

    async def on_partitions_revoked(self: Any, revoked: Any) -> None:
        guard = _guard(self)
        for tp in revoked:
            guard.forget(tp)
        await original_revoked(self, revoked)

    thread = aiokafka_driver.AIOKafkaConsumerThread
    original_create = thread._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = tune_fetch(original_create(self, transport))
        original_start = consumer.start

        async def start() -> None:  # the fetcher exists once the consumer has started
            await original_start()
            consumer._fetcher._tether_pacing = consumer._tether_pacing

        consumer.start = start
        return consumer

    thread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
    Fetcher._proc_fetch_request = paced(Fetcher._proc_fetch_request)
    Fetcher._get_actions_per_node = fetch_here(Fetcher._get_actions_per_node)
    thread.verify_event_path = checked_here(thread.verify_event_path)  # type: ignore[method-assign]
    base.seek = seek  # type: ignore[method-assign]
    base.perform_seek = perform_seek  # type: ignore[method-assign]
    base.on_partitions_revoked = on_partitions_revoked  # type: ignore[method-assign]
    base._new_offset = _new_offset  # type: ignore[method-assign]
