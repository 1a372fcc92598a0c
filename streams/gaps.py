"""Watches for holes in the offsets a partition's records reach the agent with.

faust-streaming can fail to deliver records it has fetched (see ``faust_fixes``). A hole means
that: the guard reports it so that operators see it in the worker's log and ``stats``.
Records are not held back; committing past a hole is prevented by the patched consumer loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


class Positioned(Protocol):
    """A record's position."""

    partition: int
    offset: int


@dataclass(slots=True)
class GapGuard:
    """Tracks the next expected offset of each partition."""

    _next: dict[int, int] = field(default_factory=dict)
    holes: int = 0

    def reset(self) -> None:
        """Forget positions (after a rebalance faust seeks to the committed offsets)."""
        self._next.clear()

    def observe(self, records: Sequence[Positioned]) -> dict[int, int]:
        """``{partition: first missing offset}`` for holes seen in this batch."""
        holes: dict[int, int] = {}
        for rec in records:
            expected = self._next.get(rec.partition)
            if expected is not None and rec.offset > expected:
                holes.setdefault(rec.partition, expected)
                self.holes += 1
            if expected is None or rec.offset >= expected:
                self._next[rec.partition] = rec.offset + 1
        return holes
