"""The input topics read by librdkafka (``streams.input_fetch``): which offsets are gaps, what
reaches the intake, which batches are dropped, and aiokafka leaving those topics alone."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from streams import faust_fixes
from streams.input_fetch import InputFetcher, skipped

INTENTS = "t.intents"


@pytest.mark.parametrize(
    ("start", "last", "offset", "expected"),
    [
        (None, None, 0, None),  # nothing committed: the first record owes nothing
        (None, None, 7, None),  # nothing committed, retention removed 0..6: still nothing owed
        (5, None, 5, None),  # the committed offset is the first record read
        (5, None, 9, (5, 8)),  # retention removed 5..8 after they were committed up to 5
        (5, 5, 6, None),  # the next record
        (5, 6, 9, (7, 8)),  # a transaction marker or aborted records at 7..8
        (5, 6, 6, None),  # read again (at-least-once): no gap
    ],
)
def test_a_gap_is_every_offset_skipped_since_the_start_or_the_last_record(
    start: int | None, last: int | None, offset: int, expected: tuple[int, int] | None
) -> None:
    assert skipped(start, last, offset) == expected


class _Record:
    """What confluent-kafka's ``Message`` offers the fetcher."""

    def __init__(self, partition: int, offset: int, value: bytes = b"{}") -> None:
        self._partition, self._offset, self._value = partition, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return INTENTS

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)

    def key(self) -> bytes:
        return b"wf-1"

    def value(self) -> bytes:
        return self._value


class _Intake:
    def __init__(self) -> None:
        self.added: list[Any] = []
        self.flushes = 0
        self.pending = 0  # records buffered and not handed over (the tables are recovering)

    def add(self, message: Any) -> None:
        self.added.append(message)

    async def flush(self) -> None:
        self.flushes += 1


def _fetcher() -> tuple[InputFetcher, _Intake, list[tuple[TP, int, int]]]:
    intake = _Intake()
    holes: list[tuple[TP, int, int]] = []
    fetcher = InputFetcher(
        {"bootstrap.servers": "127.0.0.1:1"},
        intake,  # type: ignore[arg-type]  # the two methods the fetcher calls
        [INTENTS],
        lag_topic=INTENTS,
        add_gap=lambda tp, first, last: holes.append((tp, first, last)),
        batch_max=100,
    )
    return fetcher, intake, holes


def test_records_reach_the_intake_as_faust_messages_and_skipped_offsets_become_gaps() -> None:
    fetcher, intake, holes = _fetcher()
    fetcher.assign({TP(INTENTS, 0): 10, TP(INTENTS, 1): None}, generation=3)
    fetcher._take([_Record(0, 12, b"a"), _Record(0, 13), _Record(1, 40), _Record(0, 15)])
    assert [(m.tp, m.offset) for m in intake.added] == [
        (TP(INTENTS, 0), 12),
        (TP(INTENTS, 0), 13),
        (TP(INTENTS, 1), 40),
        (TP(INTENTS, 0), 15),
    ]
    first = intake.added[0]
    assert (first.topic, first.partition, first.key, first.value) == (INTENTS, 0, b"wf-1", b"a")
    assert first.timestamp == 1_700_000_000.0
    assert not first.acked  # acknowledged by the intake once durable
    # 10..11 were skipped at the start, 14 later; partition 1 had nothing committed
    assert holes == [(TP(INTENTS, 0), 10, 11), (TP(INTENTS, 0), 14, 14)]


def test_batches_read_under_an_earlier_assignment_are_dropped() -> None:
    fetcher, intake, _ = _fetcher()

    async def scenario() -> None:
        fetcher._batches = asyncio.Queue()
        fetcher.assign({TP(INTENTS, 0): 0}, generation=4)
        current = fetcher.epoch
        feed = asyncio.ensure_future(fetcher._feed())
        for epoch, offset in ((current - 1, 0), (current, 0), (current + 1, 1), (current, 1)):
            fetcher._batches.put_nowait((epoch, [_Record(0, offset)]))
        await asyncio.sleep(0.05)
        fetcher.unassign()  # faust revoked the partitions: nothing more is taken
        fetcher._batches.put_nowait((current, [_Record(0, 2)]))
        await asyncio.sleep(0.05)
        feed.cancel()

    asyncio.run(scenario())
    assert [m.offset for m in intake.added] == [0, 1]
    assert fetcher.dropped == 2 + 1


def test_records_that_could_not_be_taken_are_read_again_not_skipped() -> None:
    fetcher, intake, holes = _fetcher()

    class _Broken(_Record):
        def value(self) -> bytes:
            raise RuntimeError("a bug")

    async def scenario() -> None:
        fetcher._batches = asyncio.Queue()
        fetcher.assign({TP(INTENTS, 0): 0, TP(INTENTS, 1): 7}, generation=1)
        feed = asyncio.ensure_future(fetcher._feed())
        fetcher._batches.put_nowait((fetcher.epoch, [_Record(0, 0), _Broken(0, 1), _Record(0, 2)]))
        fetcher._batches.put_nowait((fetcher.epoch, [_Record(0, 3)]))  # read before the re-seek
        await asyncio.sleep(0.05)
        feed.cancel()

    asyncio.run(scenario())
    assert [m.offset for m in intake.added] == [0]
    assert holes == []  # offsets 1.. are not a gap: they are read again
    orders = []
    while not fetcher._commands.empty():
        orders.append(fetcher._commands.get())
    assert orders[-1].epoch == fetcher.epoch
    assert orders[-1].start == {TP(INTENTS, 0): 1, TP(INTENTS, 1): 7}


def test_the_feed_holds_records_back_while_the_intake_is_full() -> None:
    fetcher, intake, _ = _fetcher()

    async def scenario() -> tuple[int, int]:
        fetcher._batches = asyncio.Queue()
        fetcher.assign({TP(INTENTS, 0): 0}, generation=1)
        intake.pending = 4 * 100  # four batches' worth waits for the tables
        feed = asyncio.ensure_future(fetcher._feed())
        fetcher._credits.acquire()
        fetcher._batches.put_nowait((fetcher.epoch, [_Record(0, 0)]))
        await asyncio.sleep(0.2)
        held = len(intake.added)
        intake.pending = 0  # recovered: the intake handed its records over
        await asyncio.sleep(0.2)
        feed.cancel()
        return held, len(intake.added)

    held, taken = asyncio.run(scenario())
    assert (held, taken) == (0, 1)
    assert intake.flushes > 1  # it kept trying to hand the buffered records over


def test_a_partition_is_behind_until_its_last_record_is_taken() -> None:
    fetcher, _, _ = _fetcher()
    fetcher.assign({TP(INTENTS, 0): 5, TP(INTENTS, 1): None}, generation=1)
    assert fetcher.behind(0)  # no high watermark known yet: assume records wait
    fetcher._high.update({0: 8, 1: 0})
    assert fetcher.behind(0)
    assert not fetcher.behind(1)  # an empty partition
    fetcher._take([_Record(0, 5), _Record(0, 6)])
    assert fetcher.behind(0)
    fetcher._take([_Record(0, 7)])
    assert not fetcher.behind(0)


def _assignment(positions: dict[TP, bool]) -> Any:
    return SimpleNamespace(
        tps=frozenset(positions),
        state_value=lambda tp: SimpleNamespace(has_valid_position=positions[tp]),
        active=True,
    )


class _App(SimpleNamespace):
    """An app double that can be a weak key, as faust's app is (``faust_fixes.hooks``)."""

    __hash__ = object.__hash__


def test_aiokafka_does_not_fetch_the_topics_librdkafka_reads() -> None:
    seen: list[frozenset[TP]] = []
    wrapped = faust_fixes.fetch_here(lambda _self, assignment: seen.append(assignment.tps))
    changelog, intents, unpositioned = TP("t.sessions", 0), TP(INTENTS, 0), TP(INTENTS, 1)
    assignment = _assignment({changelog: True, intents: True, unpositioned: False})
    app = _App()
    faust_fixes.attach_input(app, SimpleNamespace(topics=frozenset({INTENTS})))
    try:
        wrapped(None, assignment)
    finally:
        faust_fixes._elsewhere.discard(INTENTS)
    # a partition without a position still gets one (faust waits for it when it seeks)
    assert seen == [frozenset({changelog, unpositioned})]
    assert faust_fixes.hooks(app).input.topics == {INTENTS}


def test_faust_does_not_check_that_aiokafka_fetches_the_topics_librdkafka_reads() -> None:
    """faust's periodic event-path check would log at ERROR, for every input partition about
    once a second, that aiokafka never sent a fetch request for it (true, and intended)."""
    faust_fixes.apply()
    checked: list[TP] = []
    # faust's own method, as installed: it first checks aiokafka's fetching of the partition
    thread = SimpleNamespace(
        _verify_aiokafka_event_path=lambda _now, tp: checked.append(tp) or True
    )
    changelog, intents = TP("t.sessions", 0), TP(INTENTS, 0)
    faust_fixes.attach_input(_App(), SimpleNamespace(topics=frozenset({INTENTS})))
    try:
        AIOKafkaConsumerThread.verify_event_path(thread, time.monotonic(), intents)  # type: ignore[arg-type]
        AIOKafkaConsumerThread.verify_event_path(thread, time.monotonic(), changelog)  # type: ignore[arg-type]
    finally:
        faust_fixes._elsewhere.discard(INTENTS)
    assert checked == [changelog]  # the changelog is still checked; the input is not


def test_the_fetcher_starts_at_the_offsets_faust_sought_to() -> None:
    calls: list[tuple[dict[TP, int | None], int]] = []
    fetcher = SimpleNamespace(
        topics=frozenset({INTENTS}), assign=lambda start, gen: calls.append((start, gen))
    )
    app = _App(consumer_generation_id=7)
    faust_fixes.hooks(app).input = fetcher
    a, b, changelog = TP(INTENTS, 0), TP(INTENTS, 1), TP("t.sessions", 0)
    consumer = SimpleNamespace(
        app=app,
        _committed_offset={a: 42, changelog: 9},
        assignment=lambda: {a, b, changelog},
    )
    faust_fixes._start_input(consumer)
    assert calls == [({a: 42, b: None}, 7)]


def test_an_error_in_the_reader_makes_the_partitions_read_again_from_the_last_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fetcher, _, holes = _fetcher()
    monkeypatch.setattr("streams.input_fetch.RETRY_S", 0.01)

    assigned: list[list[tuple[str, int, int]]] = []

    class _Failing:
        """A consumer whose first poll fails (after records were read, say)."""

        polls = 0

        def __init__(self, _config: object) -> None:
            pass

        def assign(self, tps: list[Any]) -> None:
            assigned.append([(tp.topic, tp.partition, tp.offset) for tp in tps])

        def get_watermark_offsets(self, *_args: object, **_kwargs: object) -> tuple[int, int]:
            return (0, 0)

        def poll(self, timeout: float) -> None:
            _Failing.polls += 1
            if _Failing.polls == 1:
                raise RuntimeError("broken")
            time.sleep(0.01)
            if len(assigned) > 1 or _Failing.polls > 200:
                fetcher._stop.set()

        def close(self) -> None:
            pass

    monkeypatch.setattr("streams.input_fetch.Consumer", _Failing)

    async def scenario() -> None:
        fetcher._batches = asyncio.Queue()
        fetcher.assign({TP(INTENTS, 0): 0}, generation=1)
        fetcher._take([_Record(0, 0), _Record(0, 1)])
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, fetcher._read, loop)
        await asyncio.sleep(0.01)  # the re-read ordered from the reader thread

    asyncio.run(scenario())
    # read again from offset 2, under a new assignment (batches read before it are dropped)
    assert assigned == [[(INTENTS, 0, 0)], [(INTENTS, 0, 2)]]
    assert fetcher.epoch == 2
    assert holes == []
