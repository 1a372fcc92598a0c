"""Survivors of full collections are frozen out of later ones, and thawed now and then."""

from __future__ import annotations

import gc

from streams.gc_freeze import GcFreezer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _freezer(thaw_s: float, clock: Clock, calls: list[str]) -> GcFreezer:
    return GcFreezer(
        thaw_s,
        clock=clock,
        freeze=lambda: calls.append("freeze"),
        unfreeze=lambda: calls.append("unfreeze"),
    )


def test_only_full_collections_freeze_their_survivors() -> None:
    calls: list[str] = []
    f = _freezer(0, Clock(), calls)
    for gen in (0, 1):
        f("stop", {"generation": gen})
    f("start", {"generation": 2})
    assert calls == []
    f("stop", {"generation": 2})
    assert calls == ["freeze"]


def test_frozen_objects_are_thawed_every_thaw_s_for_one_full_collection() -> None:
    calls: list[str] = []
    clock = Clock()
    f = _freezer(600, clock, calls)
    for t in (10, 300, 599):
        clock.now = t
        f("stop", {"generation": 2})
    assert calls == ["freeze"] * 3
    clock.now = 600
    f("stop", {"generation": 2})  # thaw: the next full collection walks everything
    clock.now = 601
    f("stop", {"generation": 2})  # ... and its survivors are frozen again
    assert calls[3:] == ["unfreeze", "freeze"]
    clock.now = 1100
    f("stop", {"generation": 2})
    clock.now = 1200
    f("stop", {"generation": 2})
    assert calls[5:] == ["freeze", "unfreeze"]  # 600 s after the last thaw
    assert (f.freezes, f.thaws) == (5, 2)


def test_installed_a_full_collection_freezes_its_survivors() -> None:
    f = GcFreezer(0).install()
    try:
        kept = [[i] for i in range(1000)]
        gc.collect()
        assert gc.get_freeze_count() >= len(kept)
        assert f.freezes >= 1
    finally:
        f.uninstall()
        gc.unfreeze()
    assert f not in gc.callbacks
