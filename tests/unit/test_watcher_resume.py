"""Where a ``Watcher`` reads from on its first start and on a restart (no broker: the planning
step alone; ``tests/fault/test_watcher_restart.py`` runs the real thing against Kafka).

A restart must resume after the last record taken, never at the end: a tailing watcher that
restarted at the end lost every revocation published while it was stopped (962 of 1,500).
"""

from __future__ import annotations

import pytest
from confluent_kafka import OFFSET_BEGINNING

from tether.sdk.watcher import Watcher
from tether.settings import Settings

MARKS = {0: (0, 10), 1: (4, 4), 2: (2, 7)}  # partition -> (low, high) water marks


def watcher(*, from_beginning: bool) -> Watcher:
    return Watcher(Settings(kafka_bootstrap="127.0.0.1:1"), from_beginning=from_beginning)


def offsets(w: Watcher, marks: dict[int, tuple[int, int]]) -> dict[int, int]:
    return {tp.partition: tp.offset for tp in w._resume_at(marks)}


def test_first_start_reads_from_the_beginning_and_waits_for_the_marks() -> None:
    w = watcher(from_beginning=True)
    assert offsets(w, MARKS) == dict.fromkeys(MARKS, OFFSET_BEGINNING)
    assert w._pending == {0, 2}  # partition 1 is empty


def test_first_tailing_start_begins_at_the_marks_and_has_nothing_to_wait_for() -> None:
    w = watcher(from_beginning=False)
    assert offsets(w, MARKS) == {0: 10, 1: 4, 2: 7}
    assert w._pending == set()


@pytest.mark.parametrize("from_beginning", [True, False])
def test_a_restart_resumes_after_the_last_record_taken_and_is_not_ready_until_caught_up(
    from_beginning: bool,
) -> None:
    w = watcher(from_beginning=from_beginning)
    offsets(w, MARKS)
    w._positions.update({0: 6, 2: 7})  # as _handle records them: the offset after the last
    w._mark_ready()
    assert w.ready.is_set()
    later = {0: (0, 15), 1: (4, 9), 2: (2, 7)}  # published while it was stopped
    got = offsets(w, later)
    assert got[0] == 6
    assert got[2] == 7
    # partition 1: nothing taken before; the first start's own start again (never the end)
    assert got[1] == (OFFSET_BEGINNING if from_beginning else 4)
    assert w._pending == {0, 1}
    assert not w.ready.is_set()
