"""The worker's garbage-collection pauses, timed and logged.

CPython's cyclic collector holds the GIL while it walks the generation it collects: every thread
of the worker (the event loop, faust's consumer thread, the producer's delivery reports) waits
until it ends, so a long collection is a latency spike on every detection in flight. The worker
freezes its startup heap, its recovered state and what survives each full collection out of
the collector (``tether.streaming``, ``streams.recovery``, ``streams.gc_freeze``); this records
what remains, and logs each collection that took at least
``TETHER_GC_LOG_MS`` as ``gc pause <ms> ms (generation <g>, ...)`` so that operators, and the
benchmark harness, can tell a collection from other causes of a slow detection.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from time import perf_counter
from typing import Final, Self

_log = logging.getLogger("tether.gc")

GENERATIONS: Final = 3


class GcCallback:
    """A ``gc.callbacks`` hook that installs and removes itself."""

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        """Called by the interpreter at the ``start`` and ``stop`` of every collection."""
        raise NotImplementedError

    def install(self) -> Self:
        """Start receiving the interpreter's collection callbacks (idempotent)."""
        if self not in gc.callbacks:
            gc.callbacks.append(self)
        return self

    def uninstall(self) -> None:
        """Stop receiving them."""
        if self in gc.callbacks:
            gc.callbacks.remove(self)


class GcPauses(GcCallback):
    """A ``gc.callbacks`` hook: per-generation counts and totals, and a log of long pauses."""

    def __init__(
        self,
        log_threshold_s: float,
        *,
        clock: Callable[[], float] = perf_counter,
        log: logging.Logger = _log,
    ) -> None:
        self.log_threshold_s = log_threshold_s
        self._clock = clock
        self._log = log
        self._started = 0.0
        self.collections = [0] * GENERATIONS
        self.total_s = [0.0] * GENERATIONS
        self.longest_s = [0.0] * GENERATIONS

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        """Called by the interpreter at the ``start`` and ``stop`` of every collection."""
        if phase == "start":
            self._started = self._clock()
            return
        took = self._clock() - self._started
        gen = info.get("generation", GENERATIONS - 1)
        self.collections[gen] += 1
        self.total_s[gen] += took
        self.longest_s[gen] = max(self.longest_s[gen], took)
        if self.log_threshold_s > 0 and took >= self.log_threshold_s:
            # Nothing here may walk the heap: ``gc.get_freeze_count()``, for one, counts the
            # frozen objects one by one (70 ms for 2 million), holding the GIL, so logging a
            # long pause would have lengthened it.
            self._log.warning(
                "gc pause %.1f ms (generation %d, %d collected)",
                took * 1000,
                gen,
                info.get("collected", 0),
            )
