"""When a gateway may trust "not revoked": every partition heard from recently, no worker lagging.

Workers write a signed heartbeat to every partition of the revocations topic, each naming its
partition (``Heartbeat.partition``) and carrying the worker's input lag (``input_lag_s``). A
watcher that cannot read one partition, or a worker that applies its input minutes late, must
not look fresh: the feed is fresh only while *every* partition carried a verified heartbeat
within ``staleness_s`` and no worker heard from within ``staleness_s`` reports a lag above
``max_input_lag_s``.

Older workers write heartbeats without a partition (on one partition per worker). Until the
first heartbeat naming a partition has been verified, freshness follows the older, global rule
(any heartbeat within ``staleness_s``); from then on every partition counts. A fleet that
mixes both kinds during an upgrade therefore goes by the strict rule as soon as one new worker
is up, which is safe: the new workers heartbeat on every partition.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from tether.models.outputs import Heartbeat


class FeedFreshness:
    """The freshness bookkeeping of one revocation set (one writer thread; O(partitions +
    workers) per heartbeat, never on the read path)."""

    def __init__(self, *, staleness_s: float, max_input_lag_s: float = math.inf) -> None:
        """Trust the feed while heartbeats are at most ``staleness_s`` old and lags at most
        ``max_input_lag_s`` (``math.inf`` disables either check)."""
        self.staleness_s = staleness_s
        self.max_input_lag_s = max_input_lag_s
        self.expected: frozenset[int] = frozenset()
        self.partitioned = False
        self.alive: dict[int, float] = {}
        self.lags: dict[str, tuple[float, float]] = {}  # source -> (heard at, input lag)
        self.last: float | None = None
        self.last_source: str | None = None

    def expect(self, partitions: Iterable[int]) -> None:
        """The partitions of the topic: each must be heard from once heartbeats name them."""
        self.expected = frozenset(partitions)

    def note(self, hb: Heartbeat, partition: int | None, now: float) -> bool:
        """Count a verified heartbeat read from ``partition``; False if it counts for nothing.

        It was alive at ``min(emitted_at, now)``: an old heartbeat read during bootstrap, or one
        from a clock running ahead, never makes the feed look fresher than it is. A heartbeat
        naming another partition than the one it was read from (a copy) counts for nothing.
        """
        named = hb.partition
        if named is not None and partition is not None and named != partition:
            return False
        alive_at = min(hb.emitted_at.timestamp(), now)
        if hb.input_lag_s is not None:
            heard = self.lags.get(hb.source)
            if heard is None or alive_at >= heard[0]:
                self.lags[hb.source] = (alive_at, hb.input_lag_s)
        if named is not None:
            self.partitioned = True
            if alive_at > self.alive.get(named, -math.inf):
                self.alive[named] = alive_at
        if self.last is None or alive_at > self.last:
            self.last = alive_at
            self.last_source = hb.source
        return True

    def stale_after(self, now: float) -> float:
        """The epoch second after which "not revoked" is in doubt (``-inf``: already)."""
        if self._lagging(now):
            return -math.inf
        if math.isinf(self.staleness_s):
            return math.inf
        if self.partitioned:
            required = self.expected | self.alive.keys()
            if any(p not in self.alive for p in required):
                return -math.inf
            return min(self.alive[p] for p in required) + self.staleness_s
        if self.last is None:
            return -math.inf
        return self.last + self.staleness_s

    def _lagging(self, now: float) -> bool:
        """Whether a worker heard from within ``staleness_s`` reports too much input lag
        (reports older than that are forgotten: the worker is gone or was replaced)."""
        horizon = now - self.staleness_s
        for source, (heard, _lag) in list(self.lags.items()):
            if heard < horizon:
                del self.lags[source]
        return any(lag > self.max_input_lag_s for _heard, lag in self.lags.values())
