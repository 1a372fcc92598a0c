"""No input record is skipped unprocessed: the offset guard and the offset commit rule.

A fetched record that is not delivered (a rebalance cut the fetch short, a seek went back)
leaves a hole in the offsets the consumer loop sees. Before the guard, the loop re-read once
and then registered the hole as a gap, which faust's commit treats as acknowledged; a re-read
that broke off the whole fetch made holes in the other partitions too, so under load holes
repeated and records were committed unprocessed (lost revocations in the worker-kill test).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from intervaltree import IntervalTree

from streams.faust_fixes import _new_offset, add_gap
from streams.offsets import OffsetGuard, Verdict

TP = "intents-0"


def test_records_in_order_are_delivered() -> None:
    guard: OffsetGuard[str] = OffsetGuard()
    guard.seek(TP, 10)
    for offset in (10, 11, 12):
        assert guard.check(TP, offset) is Verdict.DELIVER
        guard.delivered(TP, offset)
    assert guard.position(TP) == 13


def test_a_record_read_again_after_a_seek_back_is_skipped() -> None:
    guard: OffsetGuard[str] = OffsetGuard()
    guard.seek(TP, 5)
    guard.delivered(TP, 5)
    guard.delivered(TP, 6)
    assert guard.check(TP, 6) is Verdict.SKIP


def test_a_hole_rewinds_only_its_partition_and_skips_the_rest_of_its_fetch() -> None:
    guard: OffsetGuard[str] = OffsetGuard()
    guard.seek(TP, 0)
    guard.seek("intents-1", 0)
    assert guard.check(TP, 0) is Verdict.DELIVER
    guard.delivered(TP, 0)
    assert guard.check(TP, 3) is Verdict.REWIND  # 1 and 2 were fetched, never delivered
    assert guard.check(TP, 4) is Verdict.SKIP  # the rest of this fetch: read again
    assert guard.check("intents-1", 0) is Verdict.DELIVER  # other partitions carry on
    assert guard.rewind_to(TP) == 1
    guard.seek(TP, 1)  # the consumer loop's seek
    assert guard.check(TP, 1) is Verdict.DELIVER  # they were there: no gap


def test_a_hole_is_a_gap_only_once_reading_again_from_it_confirms_it() -> None:
    guard: OffsetGuard[str] = OffsetGuard()
    guard.seek(TP, 7)
    assert guard.check(TP, 8) is Verdict.REWIND  # offset 7 is a transaction marker
    guard.seek(TP, guard.rewind_to(TP))
    assert guard.check(TP, 8) is Verdict.GAP
    assert guard.gap(TP, 8) == (7, 7)  # the gap ends before the record: it is not acknowledged
    guard.delivered(TP, 8)
    assert guard.check(TP, 9) is Verdict.DELIVER


def test_a_hole_after_an_unrelated_seek_is_not_taken_for_a_gap() -> None:
    guard: OffsetGuard[str] = OffsetGuard()
    guard.seek(TP, 3)
    assert guard.check(TP, 5) is Verdict.REWIND
    guard.seek(TP, guard.rewind_to(TP))
    guard.seek(TP, 3)  # a rebalance sought it to the committed offset again
    assert guard.check(TP, 3) is Verdict.DELIVER
    guard.delivered(TP, 3)
    assert guard.check(TP, 5) is Verdict.REWIND  # a new hole at 4: re-read, not a gap


def test_a_partition_without_a_known_position_takes_its_first_record() -> None:
    guard: OffsetGuard[str] = OffsetGuard()
    assert guard.check(TP, 42) is Verdict.DELIVER
    guard.delivered(TP, 42)
    assert guard.check(TP, 44) is Verdict.REWIND


@settings(max_examples=300, deadline=None)
@given(
    markers=st.sets(st.integers(0, 59), max_size=12),
    fetch=st.integers(1, 8),
    cuts=st.lists(st.integers(0, 8), min_size=30, max_size=30),
    seeks=st.lists(st.booleans(), min_size=30, max_size=30),
)
def test_every_record_is_delivered_and_gaps_hold_no_records(
    markers: set[int], fetch: int, cuts: list[int], seeks: list[bool]
) -> None:
    """A simulated consumer over a log of 60 offsets, some of them transaction markers. Each
    fetch moves its position past what it returns; the loop stops looking at some fetches part
    way (``cuts``: a rebalance, which then seeks back to the committed offset) and some rounds
    seek back to it anyway (``seeks``). Every record gets delivered; gaps cover markers only."""
    records = [o for o in range(60) if o not in markers]
    guard: OffsetGuard[str] = OffsetGuard()
    guard.seek(TP, 0)
    position = 0
    delivered: set[int] = set()
    gaps: set[int] = set()
    rebalance = False

    def committed() -> int:  # what acknowledgements in order would have committed
        return min((o for o in records if o not in delivered), default=60)

    for round_ in range(1000):
        if rebalance or (round_ < len(seeks) and seeks[round_]):
            position = committed()
            guard.seek(TP, position)
            rebalance = False
        batch = [o for o in records if o >= position][:fetch]
        if not batch:
            break
        position = batch[-1] + 1
        cut = cuts[round_] if round_ < len(cuts) else fetch
        rewind = False
        for i, offset in enumerate(batch):
            if i >= cut:
                rebalance = True  # the rest of this fetch is never looked at
                break
            verdict = guard.check(TP, offset)
            if verdict is Verdict.REWIND:
                rewind = True
            if verdict in (Verdict.REWIND, Verdict.SKIP):
                continue
            if verdict is Verdict.GAP:
                first, last = guard.gap(TP, offset)
                gaps.update(range(first, last + 1))
            delivered.add(offset)
            guard.delivered(TP, offset)
        if rewind:
            position = guard.rewind_to(TP)
            guard.seek(TP, position)
    assert gaps <= markers
    assert set(records) <= delivered


def _consumer(committed: int | None, acked: list[int]) -> Any:
    return SimpleNamespace(
        _acked={TP: list(acked)},
        _acked_index={TP: set(acked)},
        _gap={TP: IntervalTree()},
        _committed_offset={TP: committed},
    )


@pytest.mark.parametrize(
    ("committed", "acked", "gap", "expected"),
    [
        (10, [10, 11, 12], None, 13),
        (10, [11, 12], None, None),  # record 10 not done: faust itself would commit 13
        (10, [12, 13], (10, 11), 14),  # 10 and 11 hold no records
        (10, [10, 11, 13], None, 12),  # stops at the first record not done
        (None, [0, 1, 2], None, 3),
        (10, [], None, None),
    ],
)
def test_the_commit_moves_over_acknowledged_records_and_gaps_only(
    committed: int | None, acked: list[int], gap: tuple[int, int] | None, expected: int | None
) -> None:
    consumer = _consumer(committed, acked)
    if gap is not None:
        add_gap(consumer, TP, *gap)
    assert _new_offset(consumer, TP) == expected


def test_the_commit_keeps_what_it_did_not_reach() -> None:
    consumer = _consumer(10, [10, 11, 13, 14])
    assert _new_offset(consumer, TP) == 12
    consumer._committed_offset[TP] = 12
    consumer._acked[TP].append(12)
    assert _new_offset(consumer, TP) == 15
