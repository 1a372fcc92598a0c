"""The hole guard the streaming worker runs on every batch."""

from __future__ import annotations

from dataclasses import dataclass

from streams.gaps import GapGuard


@dataclass
class Rec:
    partition: int
    offset: int


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_contiguous_offsets_pass_through() -> None:
    guard = GapGuard()
    batch = [Rec(0, 5), Rec(0, 6), Rec(1, 9), Rec(0, 7)]
    assert guard.admit(batch) == (batch, {})
    assert guard.holes == 0


def test_records_behind_a_hole_are_held_and_the_hole_read_again() -> None:
    clock = Clock()
    guard = GapGuard(clock=clock)
    guard.admit([Rec(0, 5)])
    kept, rereads = guard.admit([Rec(0, 8), Rec(0, 9), Rec(1, 3)])
    assert kept == [Rec(1, 3)]
    assert rereads == {0: 6}
    clock.now = 0.5  # stale records fetched before the re-read are still held back
    assert guard.admit([Rec(0, 10)]) == ([], {})
    kept, _ = guard.admit([Rec(0, 6), Rec(0, 7), Rec(0, 8)])  # the re-read arrives in order
    assert kept == [Rec(0, 6), Rec(0, 7), Rec(0, 8)]


def test_a_hole_that_survives_a_reread_is_a_real_gap() -> None:
    clock = Clock()
    guard = GapGuard(clock=clock, settle_s=1.0)
    guard.admit([Rec(0, 5)])
    assert guard.admit([Rec(0, 7)]) == ([], {0: 6})
    clock.now = 2.0
    assert guard.admit([Rec(0, 7)]) == ([Rec(0, 7)], {})


def test_redelivery_is_not_a_hole() -> None:
    guard = GapGuard()
    guard.admit([Rec(0, 5), Rec(0, 6)])
    assert guard.admit([Rec(0, 3), Rec(0, 4), Rec(0, 7)]) == ([Rec(0, 3), Rec(0, 4), Rec(0, 7)], {})
