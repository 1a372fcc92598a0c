"""The longest ``not_after`` published per revocation target: a revocation is never shorter.

A revocation topic is compacted by target key, so a consumer that bootstraps later (a gateway,
a Redis rebuilt from the topic) sees only the last record of each key. If an agent could make
tether publish a later, shorter revocation for a target already revoked (by presenting the
same token id again with an earlier claimed expiry, say), compaction would lift the longer one
early. ``NotAfterFloor`` raises each revocation's ``not_after`` to the longest one already
published for its key. ``tether replay`` and the in-process monitor use it as it is; the
streaming worker keeps the same rule across workers with its revocation ledger, which also
corrects what another worker published meanwhile.

Pure: time comes in as an argument (the caller's event time or wall clock); an entry leaves
once that time has passed its ``not_after`` (a later revocation of the key is then longer
anyway, or the key is free again).
"""

from __future__ import annotations

import heapq
from datetime import UTC, datetime

from tether.models.outputs import Revocation


class NotAfterFloor:
    """Per revocation key, the longest ``not_after`` seen (POSIX seconds)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._until)

    def at_least(self, rev: Revocation, now: float) -> Revocation:
        """``rev`` with its ``not_after`` raised to the longest published for its key."""
        self._forget(now)
        key = rev.target.key
        until = rev.not_after.timestamp()
        current = self._until.get(key)
        if current is None or until > current:
            self._until[key] = until
            heapq.heappush(self._expiry, (until, key))
            return rev
        if current == until:
            return rev
        return rev.model_copy(update={"not_after": datetime.fromtimestamp(current, UTC)})

    def _forget(self, now: float) -> None:
        heap = self._expiry
        while heap and heap[0][0] < now:
            t, key = heapq.heappop(heap)
            if self._until.get(key) == t:
                del self._until[key]

    def revoked_until(self, key: str, now: float) -> float | None:
        """The ``not_after`` of ``key``'s revocation if it is still in force at ``now``
        (``<kind>:<id>``; the revocation view of :mod:`tether.core.decisions`)."""
        until = self._until.get(key)
        return until if until is not None and now < until else None
