"""The hole detector the streaming worker runs on every batch."""

from __future__ import annotations

from dataclasses import dataclass

from streams.gaps import GapGuard


@dataclass
class Rec:
    partition: int
    offset: int


def test_contiguous_offsets_have_no_holes() -> None:
    guard = GapGuard()
    assert guard.observe([Rec(0, 5), Rec(0, 6), Rec(1, 9), Rec(0, 7)]) == {}
    assert guard.observe([Rec(1, 10)]) == {}
    assert guard.holes == 0


def test_a_hole_is_reported_once_with_its_first_missing_offset() -> None:
    guard = GapGuard()
    guard.observe([Rec(0, 5)])
    assert guard.observe([Rec(0, 8), Rec(0, 9)]) == {0: 6}
    assert guard.observe([Rec(0, 10)]) == {}


def test_redelivery_after_a_seek_is_not_a_hole() -> None:
    guard = GapGuard()
    guard.observe([Rec(0, 5), Rec(0, 6)])
    assert guard.observe([Rec(0, 3), Rec(0, 4), Rec(0, 7)]) == {}
