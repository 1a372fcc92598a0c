"""Event time over several partitions: the watermark is the slowest active partition's.

Each partition's own watermark is the greatest event time read from it. The worker's watermark
is the least of those among its assigned partitions, so a fast partition cannot carry event time
past a check whose late event is still queued on a slow one. A partition that has delivered
nothing for ``idle_s`` of wall time stops holding the others back, unless it is known to have
unread records (``behind``: after a restart one partition may be read long after the others),
and then for at most ``behind_s``, so that a wrong answer cannot stall event time; a newly
assigned partition holds them back for ``idle_s`` even before its first record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

_NEG_INF = float("-inf")


class PartitionWatermarks:
    """Per-partition event time, merged into one watermark."""

    def __init__(
        self,
        idle_s: float,
        clock: Callable[[], float] = time.monotonic,
        behind: Callable[[int], bool] = lambda _partition: False,
        behind_s: float = 30.0,
    ) -> None:
        self.idle_s = idle_s
        self.behind_s = behind_s
        self._clock = clock
        self._behind = behind
        self._latest: dict[int, float] = {}
        self._seen_at: dict[int, float] = {}

    def assign(self, partitions: Iterable[int], seeds: Mapping[int, float] | None = None) -> None:
        """The partitions this worker owns now, with what recovered state says each has seen."""
        now = self._clock()
        owned = set(partitions)
        for p in list(self._latest):
            if p not in owned:
                del self._latest[p]
                del self._seen_at[p]
        for p in owned:
            seed = (seeds or {}).get(p, _NEG_INF)
            self._latest[p] = max(self._latest.get(p, _NEG_INF), seed)
            self._seen_at[p] = now

    def observe(self, partition: int, t: float) -> None:
        """An event of time ``t`` was read from ``partition``."""
        if t > self._latest.get(partition, _NEG_INF):
            self._latest[partition] = t
        self._seen_at[partition] = self._clock()

    def current(self) -> float:
        """The merged watermark (``-inf`` while an active partition has told nothing yet)."""
        if not self._latest:
            return _NEG_INF
        now = self._clock()
        behind = self._behind
        active = []
        for p, t in self._latest.items():
            quiet = now - self._seen_at[p]
            if quiet <= self.idle_s or (quiet <= self.behind_s and behind(p)):
                active.append(t)
        if active:
            return min(active)
        known = [t for t in self._latest.values() if t > _NEG_INF]
        return max(known) if known else _NEG_INF
