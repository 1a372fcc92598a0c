"""The runtime seam: every use tether makes of faust's and aiokafka's private API, in one place.

**Versions.** faust-streaming and aiokafka are pinned exactly (``PINNED``, and pyproject.toml);
``apply`` refuses any other version at start-up (``RuntimeVersionError``), and
``tests/unit/test_runtime_seam.py`` compares a digest of the source of every function patched,
wrapped or relied on here (``fingerprints``) with the one recorded for the pinned versions, so an
upgrade fails loudly in the tests instead of patching code it no longer fits. No other module
of tether touches a private name of faust or aiokafka.

**What faust still does for tether, and why.** faust is the stream-processing framework: it
joins the consumer group and assigns the partitions (the input topics co-partitioned with the
tables), keeps the tables' changelog topics and recovers the tables from them after every
rebalance, commits the input offsets the worker acknowledged, runs the timers and the worker's
lifecycle (signals, shutdown), and the optional web server. Those are the hard parts of a
stateful Kafka consumer, and they are what faust does well.

**What tether owns instead of patching.** Where a patch would cost more than the piece:
reading the input topics (``streams.input_fetch``: librdkafka on threads of its own; aiokafka
never fetches them), handing records to the worker in batches (``streams.intake``, no faust
agents or streams), restoring the tables (``streams.recovery``: bulk install; it reads faust's public recovery
state, whose code is fingerprinted here) and the table store without a key-to-partition map (``streams.store``).

**What is patched here, and why.** ``Consumer._drain_messages`` handed each fetched record to the
streams with ``wait_first(callback(message), suspend_flow.wait())``: when a rebalance suspended
the flow first, the callback was cancelled, yet the record's offset was recorded as read, and
the next record looked like a gap faust treats as acknowledged: the offset commit moved past a
record nobody processed (a lost revocation). The replacement loop records a record as read only
once delivered, stops at a suspension, gives changelog records of a recovery to
``streams.recovery`` and, should an input record ever come this way, checks it with an
``OffsetGuard`` (``streams.offsets``: a hole seeks back and becomes a gap only once re-reading
confirms it). ``_new_offset`` no longer commits past an unacknowledged record at the committed
offset. ``getmany`` no longer skips records of assigned partitions that are momentarily paused.
A seek forgets the gaps recorded for the partitions it moves, and ``perform_seek`` starts the
input fetcher at the offsets faust sought to. aiokafka never fetches the input topics
(``fetch_here``) and faust's check that it does is skipped for them (``checked_here``). Tables
get tether's codecs and store (``use_codecs``, ``use_state_store``).

What tether hangs on the app is kept in ``hooks`` (a weak map), never as attributes of faust's
objects.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final

from aiokafka.consumer.fetcher import Fetcher
from faust.stores.memory import Store as MemoryStore
from faust.tables.base import Collection
from faust.tables.recovery import Recovery
from faust.tables.table import Table
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as aiokafka_driver

from tether.streaming import RuntimeVersionError

from .offsets import OffsetGuard, Verdict

_applied = False


@dataclass(slots=True)
class Hooks:
    """What tether plugs into one app's consumer loop (kept here, never on faust's objects)."""

    intake: Any = None  # streams.intake.Intake: the input topics' records
    input: Any = None  # streams.input_fetch.InputFetcher: reads the input topics
    recovery: Any = None  # streams.recovery.FastRecovery: changelog records during recovery


_hooks: weakref.WeakKeyDictionary[Any, Hooks] = weakref.WeakKeyDictionary()
_guards: weakref.WeakKeyDictionary[Any, OffsetGuard[Any]] = weakref.WeakKeyDictionary()


def hooks(app: Any) -> Hooks:
    """The hooks of ``app`` (made empty on first use)."""
    found = _hooks.get(app)
    if found is None:
        found = _hooks[app] = Hooks()
    return found


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
    attached = hooks(self.app)
    intake = attached.intake  # streams.intake.Intake, when attached
    fast = attached.recovery  # streams.recovery.FastRecovery
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
    guard = _guards.get(consumer)
    if guard is None:
        guard = _guards[consumer] = OffsetGuard()
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


def attach_intake(app: Any, intake: Any) -> None:
    """Route the records of ``intake``'s topics from the consumer loop to ``intake``."""
    hooks(app).intake = intake


def attach_input(app: Any, fetcher: Any) -> None:
    """Have ``fetcher`` (``streams.input_fetch.InputFetcher``) read the topics it is given from
    the offsets faust seeks to, and aiokafka never fetch them."""
    hooks(app).input = fetcher
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
    fetcher = hooks(consumer.app).input
    if fetcher is None:
        return
    committed = consumer._committed_offset
    fetcher.assign(
        {tp: committed.get(tp) for tp in consumer.assignment() if tp.topic in fetcher.topics},
        consumer.app.consumer_generation_id,
    )


def attach_recovery(app: Any, recovery: Any) -> None:
    """Give the changelog records of an active table recovery to ``recovery``."""
    hooks(app).recovery = recovery


PINNED: Final = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}
"""The exact versions this module was written and fingerprinted against (pyproject.toml pins
them too). Anything else stops the worker at start-up: the patches below replace or wrap code
that differs between releases, and would otherwise apply silently onto code they do not fit."""


def check_versions(installed: Callable[[str], str] = metadata.version) -> None:
    """Refuse to run on any faust-streaming or aiokafka but the pinned ones.

    Raises:
        RuntimeVersionError: naming what is installed and what is expected.
    """
    wrong = []
    for name, expected in PINNED.items():
        try:
            found = installed(name)
        except metadata.PackageNotFoundError:
            found = "not installed"
        if found != expected:
            wrong.append(f"{name} {found} (expected {expected})")
    if wrong:
        raise RuntimeVersionError(
            "tether's worker runs only on the faust-streaming and aiokafka versions it is pinned "
            f"to: found {', '.join(wrong)}; reinstall tether (`pip install .`) or its pins"
        )


def _touched() -> dict[str, Callable[..., Any]]:
    """Every faust and aiokafka function this module replaces or wraps, or whose private state
    (attributes set in it) tether reads, as installed (before ``apply``)."""
    consumer = faust_consumer.Consumer
    thread = aiokafka_driver.AIOKafkaConsumerThread
    return {
        "faust.Consumer.__init__": consumer.__init__,  # _read_offset, _gap, _acked, ...
        "faust.Consumer._drain_messages": consumer._drain_messages,  # replaced whole
        "faust.Consumer.getmany": consumer.getmany,  # replaced whole
        "faust.Consumer._wait_next_records": consumer._wait_next_records,
        "faust.Consumer._new_offset": consumer._new_offset,  # replaced whole
        "faust.Consumer.seek": consumer.seek,  # wrapped
        "faust.Consumer.perform_seek": consumer.perform_seek,  # wrapped
        "faust.Consumer.on_partitions_revoked": consumer.on_partitions_revoked,  # wrapped
        "faust.AIOKafkaConsumerThread.verify_event_path": thread.verify_event_path,  # wrapped
        "aiokafka.Fetcher._get_actions_per_node": Fetcher._get_actions_per_node,  # wrapped
        "faust.Table._new_changelog_topic": Table._new_changelog_topic,  # table codecs
        "faust.Collection.data": Collection.data.fget,  # _data
        "faust.Recovery.__init__": Recovery.__init__,  # active_offsets, tp_to_table, ...
        "faust.Recovery.need_recovery": Recovery.need_recovery,
        "faust.MemoryStore.on_recovery_completed": MemoryStore.on_recovery_completed,
    }


_ORIGINALS: Final = _touched()  # taken at import, before ``apply`` replaces any of them


def fingerprints() -> dict[str, str]:
    """A digest of the source of every function in ``_touched``, as installed: compared with
    ``FINGERPRINTS`` by the tests, so that an upgrade that changes any of them fails loudly."""
    return {
        name: hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]
        for name, function in _ORIGINALS.items()
    }


FINGERPRINTS: Final = {
    "aiokafka.Fetcher._get_actions_per_node": "1dab2cf937d165d0",
    "faust.AIOKafkaConsumerThread.verify_event_path": "b983e7735f647cb3",
    "faust.Collection.data": "ade4a02ddd5582cb",
    "faust.Consumer.__init__": "302410d59e6972d1",
    "faust.Consumer._drain_messages": "44a2500309e83c63",
    "faust.Consumer._new_offset": "1d2c7ea89a7ad4f1",
    "faust.Consumer._wait_next_records": "6218e1969a636b3f",
    "faust.Consumer.getmany": "4b168d84882a70d6",
    "faust.Consumer.on_partitions_revoked": "d04b7ae72c6fc206",
    "faust.Consumer.perform_seek": "0e8c130ff4b0afd8",
    "faust.Consumer.seek": "b86a9fe05f956b30",
    "faust.MemoryStore.on_recovery_completed": "a00bef343e139602",
    "faust.Recovery.__init__": "acec96bd78fac09b",
    "faust.Recovery.need_recovery": "fd1dc345b5d5e121",
    "faust.Table._new_changelog_topic": "77bea64b59f79809",
}
"""``fingerprints()`` of the pinned versions (``PINNED``). When a test says one changed, read
the new code against the patch that touches it, adapt the patch, then record the new digest."""


def use_state_store(table: Any) -> None:
    """Keep ``table``'s data in a ``streams.store.StateStore`` (before anything reads it)."""
    from .store import StateStore  # noqa: PLC0415  # the store imports faust's, as this

    table._data = StateStore(
        "memory://",
        table.app,
        table,
        table_name=table.name,
        key_type=table.key_type,
        key_serializer=table.key_serializer,
        value_serializer=table.value_serializer,
        value_type=table.value_type,
        loop=table.loop,
        options=table.options,
    )


def use_codecs(table: Any, key_codec: str, value_codec: str) -> None:
    """Set tether's codecs on ``table`` and on its changelog topic (already made when the table
    was registered, from key_type/value_type: state is not a faust Record), so that writes and
    recovery both use them."""
    table.key_serializer = key_codec
    table.value_serializer = value_codec
    table.changelog_topic = table._new_changelog_topic()


def apply() -> None:
    """Install the fixes (idempotent)."""
    global _applied  # noqa: PLW0603  # a process-wide patch, applied once
    if _applied:
        return
    check_versions()
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
    Fetcher._get_actions_per_node = fetch_here(Fetcher._get_actions_per_node)
    thread.verify_event_path = checked_here(thread.verify_event_path)  # type: ignore[method-assign]
    base.seek = seek  # type: ignore[method-assign]
    base.perform_seek = perform_seek  # type: ignore[method-assign]
    base.on_partitions_revoked = on_partitions_revoked  # type: ignore[method-assign]
    base._new_offset = _new_offset  # type: ignore[method-assign]
