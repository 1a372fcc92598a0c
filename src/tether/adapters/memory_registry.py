"""The in-memory revocation registry: the fake with Redis's semantics, expiring by an injected clock."""

from __future__ import annotations

import time
from collections.abc import Sequence

from tether.adapters.registry import Clock, RegistryUnavailableError, epoch_ms
from tether.models.outputs import Reinstatement, Revocation, TargetKind


class MemoryRegistry:
    """A :class:`~tether.adapters.registry.RevocationRegistry` kept in a dict.

    Expiry follows Redis to the millisecond: an entry is live while ``now_ms <= not_after_ms``.
    Set :attr:`available` to False to simulate an outage (``lookup`` then answers None and
    ``put`` raises), the way the real registry behaves when Redis is down.
    """

    def __init__(self, *, clock: Clock = time.time) -> None:
        """Create an empty registry reading time from ``clock`` (epoch seconds)."""
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[int, Revocation]] = {}
        self._lifts: dict[tuple[str, str], tuple[int, int]] = {}  # (lifted up to ms, until ms)
        self.available = True

    async def put(self, rev: Revocation) -> None:
        """Record ``rev`` until its ``not_after``; a later ``not_after`` already recorded wins."""
        self.put_sync(rev)

    def put_many_sync(self, revs: Sequence[Revocation]) -> None:
        """:meth:`put_sync` for each of ``revs``."""
        for rev in revs:
            self.put_sync(rev)

    def put_sync(self, rev: Revocation) -> None:
        """Synchronous :meth:`put`."""
        if not self.available:
            raise RegistryUnavailableError("memory registry marked unavailable")
        until = epoch_ms(rev.not_after)
        key = (rev.target.kind, rev.target.id)
        if until <= self._now_ms():
            return
        lift = self._lifts.get(key)
        if lift is not None and self._live(lift[1]) and epoch_ms(rev.issued_at) <= lift[0]:
            return  # an operator's reinstatement lifts it
        current = self._entries.get(key)
        if current is None or current[0] < until or not self._live(current[0]):
            self._entries[key] = (until, rev)

    def reinstate_sync(self, item: Reinstatement) -> bool:
        """An operator's reinstatement, as :meth:`RedisRegistry.reinstate_sync
        <tether.adapters.redis_registry.RedisRegistry.reinstate_sync>` applies it."""
        if not self.available:
            raise RegistryUnavailableError("memory registry marked unavailable")
        key = (item.target.kind, item.target.id)
        at, until = epoch_ms(item.issued_at), epoch_ms(item.not_after)
        lift = self._lifts.get(key)
        if lift is not None and self._live(lift[1]):
            at, until = max(at, lift[0]), max(until, lift[1])
        self._lifts[key] = (at, until)
        current = self._entries.get(key)
        if current is not None and epoch_ms(current[1].issued_at) <= at:
            del self._entries[key]
            return True
        return False

    async def lookup(self, kind: TargetKind, id: str) -> bool | None:
        """True while revoked, False otherwise, None when "unavailable"."""
        return self.lookup_sync(kind, id)

    def lookup_sync(self, kind: TargetKind, id: str) -> bool | None:
        """Synchronous :meth:`lookup`."""
        if not self.available:
            return None
        return self.get(kind, id) is not None

    def get(self, kind: TargetKind, id: str) -> Revocation | None:
        """The live revocation recorded for a target, if any."""
        entry = self._entries.get((kind, id))
        if entry is None:
            return None
        if not self._live(entry[0]):
            del self._entries[(kind, id)]
            return None
        return entry[1]

    async def close(self) -> None:
        """Nothing to release."""

    def __len__(self) -> int:
        """Live entries."""
        return sum(1 for until, _ in self._entries.values() if self._live(until))

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _live(self, until_ms: int) -> bool:
        return self._now_ms() <= until_ms
