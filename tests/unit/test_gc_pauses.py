"""The worker's collection timing: counts and totals per generation, and a log of long pauses."""

from __future__ import annotations

import gc
import logging

import pytest

from streams.gc_pauses import GcPauses


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def collect(pauses: GcPauses, clock: Clock, generation: int, took_s: float) -> None:
    pauses("start", {"generation": generation})
    clock.now += took_s
    pauses("stop", {"generation": generation, "collected": 3, "uncollectable": 0})


def test_collections_are_counted_and_timed_per_generation() -> None:
    clock = Clock()
    pauses = GcPauses(0.05, clock=clock)
    collect(pauses, clock, 0, 0.001)
    collect(pauses, clock, 0, 0.002)
    collect(pauses, clock, 2, 0.120)
    assert pauses.collections == [2, 0, 1]
    assert pauses.total_s == pytest.approx([0.003, 0.0, 0.120])
    assert pauses.longest_s == pytest.approx([0.002, 0.0, 0.120])


@pytest.mark.parametrize(
    ("threshold_s", "took_s", "logged"),
    [
        (0.05, 0.049, False),
        (0.05, 0.050, True),
        (0.05, 0.300, True),
        (0.0, 5.0, False),  # 0: log none
    ],
)
def test_a_collection_is_logged_when_it_reaches_the_threshold(
    caplog: pytest.LogCaptureFixture, threshold_s: float, took_s: float, logged: bool
) -> None:
    clock = Clock()
    pauses = GcPauses(threshold_s, clock=clock)
    with caplog.at_level(logging.WARNING, logger="tether.gc"):
        collect(pauses, clock, 2, took_s)
    lines = [r.getMessage() for r in caplog.records if r.name == "tether.gc"]
    if logged:
        assert lines == [lines[0]]
        assert lines[0].startswith(f"gc pause {took_s * 1000:.1f} ms (generation 2, 3 collected")
    else:
        assert lines == []


def test_installed_it_times_the_interpreter_s_own_collections() -> None:
    pauses = GcPauses(10.0).install()
    try:
        pauses.install()  # idempotent
        assert gc.callbacks.count(pauses) == 1
        gc.collect()
    finally:
        pauses.uninstall()
    assert pauses not in gc.callbacks
    assert pauses.collections[2] >= 1
    assert pauses.total_s[2] > 0


def test_logging_a_long_pause_does_not_walk_the_frozen_heap(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # gc.get_freeze_count() counts the frozen objects one by one, holding the GIL: 70 ms for
    # two million. A worker freezes its whole state, so the log line of a long pause must not
    # ask for it, or logging the pause would lengthen it.
    def walks_the_heap() -> int:
        raise AssertionError("the pause log walked the frozen heap")

    monkeypatch.setattr(gc, "get_freeze_count", walks_the_heap)
    clock = Clock()
    pauses = GcPauses(0.01, clock=clock)
    with caplog.at_level(logging.WARNING, logger="tether.gc"):
        collect(pauses, clock, 2, 0.5)
    assert [r.getMessage() for r in caplog.records if r.name == "tether.gc"] == [
        "gc pause 500.0 ms (generation 2, 3 collected)"
    ]
