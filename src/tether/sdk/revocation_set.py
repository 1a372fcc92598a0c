"""The gateway's local revocation set: applies verified feed records, answers ``is_revoked`` in ~1 µs."""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from tether.adapters.registry import Clock, RevocationLookup
from tether.models.outputs import Heartbeat, Revocation, TargetKind
from tether.security.sets import SetRejected

_log = logging.getLogger(__name__)

DEFAULT_FAIL_CLOSED_TIERS: Final = frozenset({"default", "high"})
TARGET_KINDS: Final[tuple[TargetKind, ...]] = ("token", "workflow", "workload", "delegation")
HOLD_MAX: Final = 10_000
"""Records held at most while their signing key is unknown (the oldest give way)."""
HOLD_S: Final = 600.0
"""How long a record signed by an unknown key waits for the JWKS to learn that key."""
_LOG_EVERY_S: Final = 10.0

Headers = Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None
"""Kafka record headers as confluent-kafka returns them."""


class RecordVerifier(Protocol):
    """Checks that a feed record is authentic and reads it (:class:`~tether.security.SetVerifier`)."""

    def verify(self, data: bytes) -> Revocation | Heartbeat:
        """The record inside ``data``; raises :class:`~tether.security.SetRejected` if not authentic."""
        ...


@dataclass
class WatcherStats:
    """Counters of a revocation set and the feed that fills it (read them any time).

    Attributes:
        records: feed records seen (including rejected ones and tombstones).
        revocations: verified revocation records applied (including those expired on arrival).
        expired_on_arrival: revocation records whose ``not_after`` had already passed.
        heartbeats: verified heartbeat records applied.
        rejected: records not applied, by :data:`~tether.security.sets.RejectReason`
            (``unsigned``, ``bad_signature``, ``alg_not_allowed``, ``unknown_kid``,
            ``wrong_issuer``, ``wrong_typ``, ``malformed``, ``replayed``). ``replayed`` counts
            duplicates of a record already applied (normal under at-least-once delivery);
            ``unknown_kid`` counts records given up after waiting ``HOLD_S`` for their key.
        held: records waiting now for their signing key to appear in the JWKS.
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
    rejected: dict[str, int] = field(default_factory=dict)
    held: int = 0
    tombstones: int = 0
    fail_open: int = 0
    fail_closed: int = 0
    registry_lookups: int = 0
    errors: int = 0
    lag: int | None = None

    @property
    def bad_records(self) -> int:
        """Records rejected as not authentic or unreadable (every reason but ``replayed``)."""
        return sum(n for reason, n in self.rejected.items() if reason != "replayed")


class _RejectionLog:
    """Logs rejected records, at most once per reason every ``_LOG_EVERY_S``, with a count."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, exc: SetRejected) -> None:
        now = time.monotonic()
        last = self._last.get(exc.reason)
        if last is not None and now - last < _LOG_EVERY_S:
            self._suppressed[exc.reason] = self._suppressed.get(exc.reason, 0) + 1
            return
        self._last[exc.reason] = now
        more = self._suppressed.pop(exc.reason, 0)
        # A duplicate is routine under at-least-once delivery; anything else may be an attack.
        level = logging.DEBUG if exc.reason == "replayed" else logging.WARNING
        _log.log(
            level,
            "revocation feed: rejected a record (%s)%s",
            exc,
            f"; {more} more {exc.reason} since the last report" if more else "",
        )


class RevocationSet:
    """Live revocations by target, plus the feed's freshness, with a lock-free read path.

    Feed records are applied only once the verifier has accepted them (signed SETs, see
    :mod:`tether.security`); verification happens here, on ingest, never on lookup. A
    tombstone never lifts a revocation: a revocation leaves only at its signed ``not_after``.
    A record signed by a key the JWKS does not know yet is held (up to ``HOLD_S``) and retried
    by :meth:`retry_held`, so a key rotation loses nothing while the JWKS refetch is rate-limited.

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
        verifier: RecordVerifier,
    ) -> None:
        """Create an empty, not-yet-ready set.

        Args:
            staleness_s: how old the last heartbeat may be before "not revoked" is in doubt;
                ``math.inf`` trusts the set once bootstrapped, heartbeat or not.
            fail_closed_tiers: risk tiers that deny when in doubt.
            registry: shared fallback asked only when the feed is stale (e.g. Redis).
            clock: epoch seconds; tests inject a fake.
            verifier: authenticates and reads each record of :meth:`apply` (e.g.
                :func:`tether.security.verifier_from_settings`).
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
        self._held: deque[tuple[float, bytes]] = deque()
        self._log_rejection = _RejectionLog()
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
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Headers = None,
    ) -> Revocation | Heartbeat | None:
        """Verify and apply one record of the revocations topic; never raises on bad input.

        ``key`` and ``headers`` are not signed, so they decide nothing: the SET names its target.

        Returns:
            The record applied, or None when it was a tombstone (ignored), rejected by the
            verifier (counted in ``stats.rejected`` and logged, rate-limited), or held because
            its signing key is not known yet.
        """
        self.stats.records += 1
        if value is None:
            self.stats.tombstones += 1
            return None
        try:
            record = self._verifier.verify(value)
        except SetRejected as exc:
            if exc.reason == "unknown_kid":
                self._hold(value)
            else:
                self._reject(exc)
            return None
        self._apply_verified(record)
        return record

    def retry_held(self) -> list[Revocation | Heartbeat]:
        """Verify the held records again (their key may be known now); return those applied.

        A record still unknown after ``HOLD_S`` is given up and counted as ``unknown_kid``.
        """
        if not self._held:
            return []
        now = self._clock()
        pending, self._held = self._held, deque()
        applied: list[Revocation | Heartbeat] = []
        for since, value in pending:
            try:
                record = self._verifier.verify(value)
            except SetRejected as exc:
                if exc.reason == "unknown_kid" and now - since < HOLD_S:
                    self._held.append((since, value))
                else:
                    self._reject(exc)
                continue
            self._apply_verified(record)
            applied.append(record)
        self.stats.held = len(self._held)
        return applied

    def add(self, rev: Revocation) -> bool:
        """Hold ``rev`` (already verified) until its ``not_after``; False when that has passed."""
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
        """Note a heartbeat (already verified): the feed was alive at ``min(emitted_at, now)``.

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

    def _apply_verified(self, record: Revocation | Heartbeat) -> None:
        if isinstance(record, Heartbeat):
            self.heartbeat(record)
        else:
            self.add(record)

    def _hold(self, value: bytes) -> None:
        if len(self._held) >= HOLD_MAX:
            self._held.popleft()
            self._reject(SetRejected("unknown_kid", f"more than {HOLD_MAX} records held"))
        self._held.append((self._clock(), value))
        self.stats.held = len(self._held)
        self._log_rejection(SetRejected("unknown_kid", "held until the JWKS knows its key"))

    def _reject(self, exc: SetRejected) -> None:
        rejected = self.stats.rejected
        rejected[exc.reason] = rejected.get(exc.reason, 0) + 1
        self._log_rejection(exc)

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
