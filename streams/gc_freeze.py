"""The worker's live state kept out of the cyclic collector's full collections.

A worker's sessions and tokens are long-lived objects, several tracked objects per session.
CPython runs a full collection whenever the objects that reached the oldest generation since
the last one exceed a quarter of it, and walks all of them while holding the GIL. Loading P5's
100,000 sessions, the worker logged 102 full collections of 10 ms or more, 22.9 s in all, the
longest 685 ms (`make bench`, `benchmarks/out/logs-<time>/state-w1.log`); at steady state such
pauses recur as new sessions accumulate, each one a latency spike on every detection in flight.

State holds no reference cycles, so reference counting frees it whether the collector sees it
or not. After each full collection this freezes its survivors (``gc.freeze``): later
collections walk only what is newer. Something frozen that later becomes cyclic garbage (a
transient object that happened to be alive at that instant) would never be reclaimed, so every
``thaw_s`` the frozen objects are handed back (``gc.unfreeze``): the next full collection walks
everything once, reclaims such cycles, and its survivors are frozen again.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from time import monotonic

from .gc_pauses import GcCallback

OLDEST = 2


class GcFreezer(GcCallback):
    """A ``gc.callbacks`` hook that freezes what survives each full collection."""

    def __init__(
        self,
        thaw_s: float,
        *,
        clock: Callable[[], float] = monotonic,
        freeze: Callable[[], None] = gc.freeze,
        unfreeze: Callable[[], None] = gc.unfreeze,
    ) -> None:
        self.thaw_s = thaw_s  # 0: never thaw
        self._clock = clock
        self._freeze = freeze
        self._unfreeze = unfreeze
        self._thawed_at = clock()
        self._thawed = False  # the next full collection walks everything
        self.freezes = 0
        self.thaws = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        """Called by the interpreter at the ``start`` and ``stop`` of every collection."""
        if phase != "stop" or info.get("generation") != OLDEST:
            return
        now = self._clock()
        if not self._thawed and self.thaw_s > 0 and now - self._thawed_at >= self.thaw_s:
            self._unfreeze()  # the next full collection reclaims cycles that died frozen
            self._thawed = True
            self._thawed_at = now
            self.thaws += 1
            return
        self._freeze()
        self._thawed = False
        self.freezes += 1
