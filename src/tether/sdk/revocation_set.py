"""The gateway's local revocation set: applies feed records, answers ``is_revoked`` in ~1 µs."""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Final, Protocol

from pydantic import Discriminator, Tag, TypeAdapter, ValidationError

from tether.adapters.registry import Clock, RevocationLookup
from tether.models.outputs import Heartbeat, Revocation, TargetKind

DEFAULT_FAIL_CLOSED_TIERS: Final = frozenset({"default", "high"})
TARGET_KINDS: Final[tuple[TargetKind, ...]] = ("token", "workflow", "workload", "delegation")
HEARTBEAT_KEY_PREFIX: Final = b"heartbeat:"

Headers = Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None
"""Kafka record headers as confluent-kafka returns them."""


class RecordVerifier(Protocol):
    """Decides whether a feed record is authentic (e.g. checks a signature header)."""

    def __call__(self, key: bytes | None, value: bytes, headers: Headers) -> bool:
        """True to apply the record; False to count it as unverified and skip it."""
        ...


def _record_kind(value: object) -> str:
    if isinstance(value, dict):
        return "heartbeat" if value.get("kind") == "heartbeat" else "revocation"
    return str(getattr(value, "kind", "revocation"))


# A revocation record may omit "kind" (DESIGN.md lists it only for heartbeats).
_feed_record: TypeAdapter[Revocation | Heartbeat] = TypeAdapter(
    Annotated[
        Annotated[Revocation, Tag("revocation")] | Annotated[Heartbeat, Tag("heartbeat")],
        Discriminator(_record_kind),
    ]
)


@dataclass
class WatcherStats:
    """Counters of a revocation set and the feed that fills it (read them any time).

    Attributes:
        records: feed records seen (including bad ones and tombstones).
        revocations: valid revocation records (including those expired on arrival).
        expired_on_arrival: revocation records whose ``not_after`` had already passed.
        heartbeats: heartbeat records applied.
        bad_records: records that are neither a valid revocation nor a valid heartbeat.
        unverified: records the verifier rejected.
        tombstones: records with no value (ignored: a revocation ends only at ``not_after``).
        fail_open: ``is_revoked`` answers of "not revoked" given only because the tier fails open.
        fail_closed: ``is_revoked`` answers of "revoked" given only because the feed was stale.
        registry_lookups: fallback lookups made while the feed was stale.
        errors: consumer errors reported by the Kafka client.
        lag: records between the consumer's position and the end of the topic (None: unknown).
    """

    records: int = 0
    revocations: int = 0
    expired_on_arrival: int = 0
    heartbeats: int = 0
    bad_records: int = 0
    unverified: int = 0
    tombstones: int = 0
    fail_open: int = 0
    fail_closed: int = 0
    registry_lookups: int = 0
    errors: int = 0
    lag: int | None = None


class RevocationSet:
    """Live revocations by target, plus the feed's freshness, with a lock-free read path.

    One writer (the watcher's thread) applies records; any number of threads call
    :meth:`is_revoked`, which reads the clock once and does at most four ``dict.get`` calls
    (atomic under the GIL, so no lock). A known revocation always answers True. "Not revoked"
    is trusted only while the feed is fresh: bootstrap complete and a heartbeat emitted within
    ``staleness_s``. Otherwise the optional registry decides, and if it cannot, the tier does:
    tiers in ``fail_closed_tiers`` deny, others allow and are counted in ``stats.fail_open``.
    """

    def __init__(
        self,
        *,
        staleness_s: float = 5.0,
        fail_closed_tiers: Collection[str] = DEFAULT_FAIL_CLOSED_TIERS,
        registry: RevocationLookup | None = None,
        clock: Clock = time.time,
        verifier: RecordVerifier | None = None,
    ) -> None:
        """Create an empty, not-yet-ready set.

        Args:
            staleness_s: how old the last heartbeat may be before "not revoked" is in doubt;
                ``math.inf`` trusts the set once bootstrapped, heartbeat or not.
            fail_closed_tiers: risk tiers that deny when in doubt.
            registry: shared fallback asked only when the feed is stale (e.g. Redis).
            clock: epoch seconds; tests inject a fake.
            verifier: checks each record before it is applied (signatures).
        """
        self._staleness_s = staleness_s
        self._fail_closed = frozenset(fail_closed_tiers)
        self._registry = registry
        self._clock = clock
        self._verifier = verifier
        self._tables: dict[str, dict[str, float]] = {kind: {} for kind in TARGET_KINDS}
        self._token = self._tables["token"]
        self._workflow = self._tables["workflow"]
        self._workload = self._tables["workload"]
        self._delegation = self._tables["delegation"]
        self._expiry: list[tuple[float, str, str]] = []  # min-heap; stale entries skipped
        self._stale_after = -math.inf  # "not revoked" is trusted while now <= this
        self._ready = False
        self._count_lock = threading.Lock()
        self.last_heartbeat: float | None = None
        self.last_heartbeat_source: str | None = None
        self.stats = WatcherStats()

    # -- read path (any thread) ------------------------------------------------------------

    def is_revoked(
        self,
        token_id: str | None = None,
        workflow_id: str | None = None,
        workload_id: str | None = None,
        delegation_id: str | None = None,
        *,
        tier: str = "default",
    ) -> bool:
        """Whether a call presenting these identities must be denied now.

        Args:
            token_id: the credential's ``jti``.
            workflow_id: the workflow the call belongs to.
            workload_id: the calling workload (SPIFFE ID).
            delegation_id: the delegation the caller acts under.
            tier: the call's risk tier; decides the answer when the feed is stale.

        Returns:
            True when any given identity is revoked, or when freshness is in doubt and the tier
            fails closed; False otherwise.
        """
        now = self._clock()
        if token_id is not None:
            until = self._token.get(token_id)
            if until is not None and now < until:
                return True
        if workflow_id is not None:
            until = self._workflow.get(workflow_id)
            if until is not None and now < until:
                return True
        if workload_id is not None:
            until = self._workload.get(workload_id)
            if until is not None and now < until:
                return True
        if delegation_id is not None:
            until = self._delegation.get(delegation_id)
            if until is not None and now < until:
                return True
        if now <= self._stale_after:
            return False
        return self._in_doubt(token_id, workflow_id, workload_id, delegation_id, tier)

    def revoked_until(self, kind: TargetKind, id: str) -> float | None:
        """The epoch second until which a target is revoked, or None if it is not (now)."""
        until = self._tables[kind].get(id)
        if until is None or self._clock() >= until:
            return None
        return until

    def is_fresh(self) -> bool:
        """Whether "not revoked" answers are trusted right now (bootstrapped, recent heartbeat)."""
        return self._clock() <= self._stale_after

    @property
    def ready(self) -> bool:
        """Whether bootstrap has completed."""
        return self._ready

    def __len__(self) -> int:
        """Targets held (expired ones linger until the next :meth:`prune`)."""
        return sum(len(table) for table in self._tables.values())

    # -- write path (one thread) -----------------------------------------------------------

    def apply(
        self, key: bytes | None, value: bytes | None, headers: Headers = None
    ) -> Revocation | Heartbeat | None:
        """Apply one record of the revocations topic; never raises on bad input.

        Returns:
            The record applied, or None when it was skipped (and counted) as a tombstone,
            unverified, or bad.
        """
        self.stats.records += 1
        if value is None:
            self.stats.tombstones += 1
            return None
        if self._verifier is not None and not self._verifier(key, value, headers):
            self.stats.unverified += 1
            return None
        record = self._parse(key, value)
        if record is None:
            self.stats.bad_records += 1
        elif isinstance(record, Heartbeat):
            self.heartbeat(record)
        else:
            self.add(record)
        return record

    def add(self, rev: Revocation) -> bool:
        """Hold ``rev`` until its ``not_after``; False when that has already passed."""
        self.stats.revocations += 1
        return self.revoke(rev.target.kind, rev.target.id, rev.not_after.timestamp())

    def revoke(self, kind: TargetKind, id: str, until: float) -> bool:
        """Hold a target as revoked until epoch second ``until`` (a later ``until`` wins)."""
        if until <= self._clock():
            self.stats.expired_on_arrival += 1
            return False
        table = self._tables[kind]
        current = table.get(id)
        if current is None or current < until:
            table[id] = until
            heapq.heappush(self._expiry, (until, kind, id))
        return True

    def heartbeat(self, hb: Heartbeat) -> None:
        """Note a heartbeat: the feed was alive at ``min(emitted_at, now)``.

        Taking the earlier of the two means an old heartbeat read during bootstrap, or one from
        a producer whose clock runs behind, never makes the feed look fresher than it is.
        """
        self.stats.heartbeats += 1
        alive_at = min(hb.emitted_at.timestamp(), self._clock())
        if self.last_heartbeat is None or alive_at > self.last_heartbeat:
            self.last_heartbeat = alive_at
            self.last_heartbeat_source = hb.source
            self._refresh()

    def mark_ready(self) -> None:
        """Bootstrap is complete: the set now holds every live revocation of the feed."""
        self._ready = True
        self._refresh()

    def prune(self) -> int:
        """Drop targets whose revocation has expired; return how many were dropped."""
        now = self._clock()
        dropped = 0
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            until, kind, ident = heapq.heappop(expiry)
            table = self._tables[kind]
            if table.get(ident) == until:
                del table[ident]
                dropped += 1
        return dropped

    # -- internals -------------------------------------------------------------------------

    def _parse(self, key: bytes | None, value: bytes) -> Revocation | Heartbeat | None:
        try:
            if key is None or not key.startswith(HEARTBEAT_KEY_PREFIX):
                return Revocation.model_validate_json(value)  # the common case, parsed directly
        except ValidationError:
            pass
        try:
            return _feed_record.validate_json(value)
        except ValidationError:
            return None

    def _refresh(self) -> None:
        if not self._ready:
            self._stale_after = -math.inf
        elif math.isinf(self._staleness_s):
            self._stale_after = math.inf
        elif self.last_heartbeat is None:
            self._stale_after = -math.inf
        else:
            self._stale_after = self.last_heartbeat + self._staleness_s

    def _in_doubt(
        self,
        token_id: str | None,
        workflow_id: str | None,
        workload_id: str | None,
        delegation_id: str | None,
        tier: str,
    ) -> bool:
        """Decide a call the local set cannot vouch for: registry first, then the tier."""
        registry = self._registry
        targets: list[tuple[TargetKind, str]] = []
        if token_id is not None:
            targets.append(("token", token_id))
        if workflow_id is not None:
            targets.append(("workflow", workflow_id))
        if workload_id is not None:
            targets.append(("workload", workload_id))
        if delegation_id is not None:
            targets.append(("delegation", delegation_id))
        if registry is not None and targets:
            unknown = False
            for kind, ident in targets:
                with self._count_lock:
                    self.stats.registry_lookups += 1
                answer = registry.lookup_sync(kind, ident)
                if answer is True:
                    return True
                if answer is None:
                    unknown = True
            if not unknown:
                return False
        # Counted under a lock: readers run on many threads (and this path is the rare one).
        if tier in self._fail_closed:
            with self._count_lock:
                self.stats.fail_closed += 1
            return True
        with self._count_lock:
            self.stats.fail_open += 1
        return False
