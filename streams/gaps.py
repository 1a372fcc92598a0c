"""Holds back records behind a hole in a partition's offsets until the hole is read again.

faust-streaming can lose records between its consumer loop and the agent (for example events of
an earlier consumer generation are dropped after a rebalance, although their offsets were already
read). The guard sees the offsets each partition's records reach the agent with. At a hole it
keeps the records behind it back (not applied, not acknowledged) and asks the consumer loop to
read the partition again from the hole, so events are applied in order and nothing is skipped.
A hole that is still there after a re-read (a transaction marker occupies an offset too) is
accepted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar


class Positioned(Protocol):
    """A record's position."""

    partition: int
    offset: int


R = TypeVar("R", bound=Positioned)


@dataclass(slots=True)
class _Partition:
    next: int | None = None
    reread_from: int | None = None
    reread_at: float = 0.0


@dataclass(slots=True)
class GapGuard:
    """Splits each batch into records to apply now and re-reads to request."""

    settle_s: float = 2.0  # records fetched before the re-read may still arrive for this long
    clock: Callable[[], float] = time.monotonic
    _parts: dict[int, _Partition] = field(default_factory=dict)
    holes: int = 0

    def reset(self) -> None:
        """Forget positions (after a rebalance faust seeks to the committed offsets)."""
        self._parts.clear()

    def admit(self, records: Sequence[R]) -> tuple[list[R], dict[int, int]]:
        """Records to apply now, in arrival order, and ``{partition: offset}`` to read again."""
        keep: list[R] = []
        rereads: dict[int, int] = {}
        now = self.clock()
        for rec in records:
            part = self._parts.setdefault(rec.partition, _Partition())
            expected = part.next
            if expected is None or rec.offset <= expected:
                keep.append(rec)
                if expected is None or rec.offset == expected:
                    part.next = rec.offset + 1
                    part.reread_from = None
                continue
            if rec.partition in rereads:
                continue  # behind a hole found in this batch
            if part.reread_from == expected and now - part.reread_at < self.settle_s:
                continue  # fetched before the re-read took effect: it will come again
            if part.reread_from == expected:  # still missing after a re-read: a real gap
                part.next, part.reread_from = rec.offset + 1, None
                keep.append(rec)
                continue
            self.holes += 1
            part.reread_from, part.reread_at = expected, now
            rereads[rec.partition] = expected
        return keep, rereads
