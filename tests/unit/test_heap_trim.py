"""The worker's heap trimmer: glibc's malloc_trim every few seconds, off when asked or absent."""

from __future__ import annotations

import threading
import time

from streams.heap_trim import HeapTrimmer, libc_malloc_trim


def test_it_trims_on_its_interval_until_stopped() -> None:
    calls: list[int] = []
    done = threading.Event()

    def trim(pad: int) -> int:
        calls.append(pad)
        if len(calls) >= 3:
            done.set()
        return 1

    trimmer = HeapTrimmer(0.01, trim)
    assert trimmer.start()
    try:
        assert done.wait(5)
    finally:
        trimmer.stop()
    stopped_at = len(calls)
    time.sleep(0.05)
    assert len(calls) == stopped_at  # no more after stop()
    assert set(calls) == {0}  # malloc_trim(0): every free page, keeping no pad
    assert trimmer.trims == stopped_at


def test_it_is_off_with_interval_zero_or_without_malloc_trim() -> None:
    assert not HeapTrimmer(0, lambda _: 1).start()
    assert not HeapTrimmer(10, None, find=False).start()


def test_a_failing_trim_stops_the_trimmer_without_raising() -> None:
    def trim(_: int) -> int:
        raise OSError("boom")

    trimmer = HeapTrimmer(0.01, trim)
    assert trimmer.start()
    time.sleep(0.1)
    trimmer.stop()
    assert trimmer.trims == 0


def test_glibc_malloc_trim_is_found_and_callable_here() -> None:
    trim = libc_malloc_trim()
    assert trim is not None  # this project's machines and images run glibc
    assert trim(0) in (0, 1)
