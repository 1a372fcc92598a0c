"""The gateway's local revocation set: applies verified feed records, answers ``is_revoked`` in ~1 µs."""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple, Protocol

from tether.adapters.registry import Clock, RevocationLookup
from tether.models.outputs import Heartbeat, Reinstatement, Revocation, TargetKind
from tether.sdk.freshness import FeedFreshness
from tether.security.sets import FeedRecord, SetRejected
from tether.settings import RISK_TIERS

_log = logging.getLogger(__name__)

DEFAULT_FAIL_CLOSED_TIERS: Final = frozenset({"default", "high"})
TARGET_KINDS: Final[tuple[TargetKind, ...]] = ("token", "workflow", "workload", "delegation")
HOLD_MAX: Final = 100_000
"""Records held at most while their signing key is unknown; beyond it (or ``HOLD_MAX_BYTES``)
:meth:`RevocationSet.apply` raises :class:`HoldFull` and the record stays in the topic."""
HOLD_MAX_BYTES: Final = 64 * 1024 * 1024
HOLD_S: Final = 60.0
"""The least time a record signed by an unknown key waits for the JWKS to learn that key (a
JWKS publication may take a while to reach every copy); it is given up only after that AND a
JWKS read that succeeded afterwards still lacks the key. Never while the JWKS cannot be read."""
_LOG_EVERY_S: Final = 10.0

Headers = Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None
"""Kafka record headers as confluent-kafka returns them."""


class RecordVerifier(Protocol):
    """Checks that a feed record is authentic and reads it (:class:`~tether.security.SetVerifier`)."""

    def verify(self, data: bytes) -> FeedRecord:
        """The record inside ``data``; raises :class:`~tether.security.SetRejected` if not authentic."""
        ...

    @property
    def key_generation(self) -> int | None:
        """How many times the keys were read successfully (None: keys that never change)."""
        ...


def check_tiers(tiers: Collection[str]) -> frozenset[str]:
    """``tiers`` as a frozenset, or ValueError naming the unknown ones (``HIGH``, ``critical``:
    a misspelt tier would otherwise fail open without a word)."""
    unknown = sorted(set(tiers) - RISK_TIERS)
    if unknown:
        raise ValueError(
            f"unknown risk tier(s) {unknown} in the fail-closed tiers; the tiers are "
            f"{sorted(RISK_TIERS)} (lower case)"
        )
    return frozenset(tiers)


class HoldFull(Exception):  # a signal to the feed reader, not an error
    """The record needs holding (its key is unknown) but the hold is full: it was NOT applied.

    The reader must leave it in the topic and read it again later (the watcher pauses the
    partition at this record and seeks back to it once the hold has drained).
    """


class _Held(NamedTuple):
    since: float  # wall clock when first held
    generation: int | None  # the key source's generation before it was first verified
    after_wait: int | None  # the generation once it had waited HOLD_S (set then)
    value: bytes
    partition: int | None  # where it was read


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
        held: records waiting now for their signing key to appear in the JWKS (while any is
            held, the set is neither ready nor fresh).
        hold_full: records refused because the hold was full (left in the topic, read again).
        tombstones: records with no value (ignored: a revocation ends only at ``not_after``).
        fail_open: ``is_revoked`` answers of "not revoked" given only because the tier fails open.
        reinstatements: operators' reinstatements applied (each lifts the revocations of its
            target issued at or before it; docs/operators.md).
        lifted: revocations not applied because a reinstatement read earlier lifts them.
        fail_closed: ``is_revoked`` answers of "revoked" given only because the feed was stale.
        registry_lookups: fallback lookups made while the feed was stale.
        errors: consumer errors reported by the Kafka client.
        lag: records between the consumer's position and the end of the topic (None: unknown).
    """

    records: int = 0
    revocations: int = 0
    reinstatements: int = 0
    lifted: int = 0
    expired_on_arrival: int = 0
    heartbeats: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    held: int = 0
    hold_full: int = 0
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
    A record signed by a key the JWKS does not know yet is held and retried by
    :meth:`retry_held`, so a key rotation or an unreachable JWKS loses nothing. Holding is
    bounded by ``hold_max`` records and ``hold_max_bytes``; beyond that :meth:`apply` raises
    :class:`HoldFull` and the reader leaves the record in the topic (backpressure, never
    discarding). A held record is given up (``unknown_kid``) only once it has waited
    ``hold_s`` and a JWKS read that succeeded after that still lacks its key.

    One writer (the watcher's thread) applies records; any number of threads call
    :meth:`is_revoked`, which reads the clock once and does at most four ``dict.get`` calls
    (atomic under the GIL, so no lock). A known revocation always answers True. "Not revoked"
    is trusted only while the feed is fresh: bootstrap complete, nothing held, the reader not
    behind (:meth:`set_behind`), and heartbeats recent on every partition with no worker
    lagging (:class:`~tether.sdk.freshness.FeedFreshness`). Otherwise the optional registry
    decides, and if it cannot, the tier does: tiers in ``fail_closed_tiers`` deny, an unknown
    tier name denies too, other known tiers allow and are counted in ``stats.fail_open``.
    """

    def __init__(  # noqa: PLR0913  # keyword-only options, each with a sensible default
        self,
        *,
        staleness_s: float = 5.0,
        fail_closed_tiers: Collection[str] = DEFAULT_FAIL_CLOSED_TIERS,
        registry: RevocationLookup | None = None,
        clock: Clock = time.time,
        verifier: RecordVerifier,
        max_input_lag_s: float = math.inf,
        hold_max: int = HOLD_MAX,
        hold_max_bytes: int = HOLD_MAX_BYTES,
        hold_s: float = HOLD_S,
    ) -> None:
        """Create an empty, not-yet-ready set.

        Args:
            staleness_s: how old the last heartbeat (of each partition) may be before "not
                revoked" is in doubt; ``math.inf`` trusts the set once bootstrapped.
            fail_closed_tiers: risk tiers that deny when in doubt (a subset of
                :data:`RISK_TIERS`; anything else is a ValueError).
            registry: shared fallback asked only when the feed is stale (e.g. Redis).
            clock: epoch seconds; tests inject a fake.
            verifier: authenticates and reads each record of :meth:`apply` (e.g.
                :func:`tether.security.verifier_from_settings`).
            max_input_lag_s: the feed is stale while a worker reports more input lag.
            hold_max: records held at most while their key is unknown.
            hold_max_bytes: bytes held at most while their key is unknown.
            hold_s: the least time a held record waits for its key before being given up.
        """
        self._staleness_s = staleness_s
        self._fail_closed = check_tiers(fail_closed_tiers)
        self._fail_open = RISK_TIERS - self._fail_closed
        self._registry = registry
        self._clock = clock
        self._verifier = verifier
        self._tables: dict[str, dict[str, float]] = {kind: {} for kind in TARGET_KINDS}
        self._token = self._tables["token"]
        self._workflow = self._tables["workflow"]
        self._workload = self._tables["workload"]
        self._delegation = self._tables["delegation"]
        self._expiry: list[tuple[float, str, str]] = []  # min-heap; stale entries skipped
        # Per kind and id, the (issued_at, not_after) of the target's live revocations that no
        # other one outlasts while being as recent: what a reinstatement leaves standing is
        # decided here. Mostly one revocation per target: then only its issued_at is stored
        # (its not_after is the table's), which keeps a revoked target at ~2x the bytes.
        self._issued: dict[str, dict[str, float | list[tuple[float, float]]]] = {
            kind: {} for kind in TARGET_KINDS
        }
        # Per target, the latest reinstatement read: (issued_at it lifts up to, remembered until).
        self._lifts: dict[tuple[str, str], tuple[float, float]] = {}
        self._lift_expiry: list[tuple[float, str, str]] = []
        self._stale_after = -math.inf  # "not revoked" is trusted while now <= this
        self._ready = False
        self._behind = False
        self._freshness = FeedFreshness(staleness_s=staleness_s, max_input_lag_s=max_input_lag_s)
        self._held: deque[_Held] = deque()
        self._held_bytes = 0
        self._hold_max = hold_max
        self._hold_max_bytes = hold_max_bytes
        self._hold_s = hold_s
        self._pass_generation: int | None = None  # key generation at the last full pass
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
        """Whether "not revoked" answers are trusted right now (see the class docstring)."""
        return self._clock() <= self._stale_after

    @property
    def ready(self) -> bool:
        """Whether bootstrap has completed, nothing is held and the reader is not behind."""
        return self._ready and not self._held and not self._behind

    @property
    def held(self) -> int:
        """Records waiting for their signing key."""
        return len(self._held)

    def __len__(self) -> int:
        """Targets held (expired ones linger until the next :meth:`prune`)."""
        return sum(len(table) for table in self._tables.values())

    # -- write path (one thread) -----------------------------------------------------------

    def apply(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Headers = None,
        *,
        partition: int | None = None,
    ) -> FeedRecord | None:
        """Verify and apply one record of the revocations topic; never raises on bad input.

        ``key`` and ``headers`` are not signed, so they decide nothing: the SET names its target.
        ``partition`` is where the record was read (a heartbeat counts for that partition).

        Returns:
            The record applied, or None when it was a tombstone (ignored), rejected by the
            verifier (counted in ``stats.rejected`` and logged, rate-limited), or held because
            its signing key is not known yet.

        Raises:
            HoldFull: the record's key is unknown and the hold is full; it was not applied and
                must be read again later (not counted in ``stats.records``).
        """
        if value is None:
            self.stats.records += 1
            self.stats.tombstones += 1
            return None
        generation = self._verifier.key_generation
        try:
            record = self._verifier.verify(value)
        except SetRejected as exc:
            if exc.reason == "unknown_kid":
                self._hold(value, generation, partition)
            else:
                self.stats.records += 1
                self._reject(exc)
            return None
        self.stats.records += 1
        self._apply_verified(record, partition)
        return record

    def retry_held(self) -> list[FeedRecord]:
        """Verify the held records again (their key may be known now); return those applied.

        A record still unknown is given up (``unknown_kid``) only once it has waited ``hold_s``
        and a JWKS read that succeeded after that still lacks its key; with a key source that
        never changes (``key_generation`` None), after ``hold_s``.

        A flood of held records is not re-verified twice a second for nothing: the oldest is
        verified first as a probe (a miss may reread the JWKS), and the rest only when it
        verified, the keys were read since the last pass, or the oldest's wait is over.
        """
        if not self._held:
            return []
        now = self._clock()
        applied: list[FeedRecord] = []
        oldest = self._held[0]
        due = oldest.after_wait is None and now - oldest.since >= self._hold_s
        if not due:
            try:
                record = self._verifier.verify(oldest.value)
            except SetRejected as exc:
                after = self._verifier.key_generation
                if exc.reason == "unknown_kid" and after in (None, self._pass_generation):
                    return []  # no JWKS read since the last pass: nothing else can change
            else:
                self._held.popleft()
                self._held_bytes -= len(oldest.value)
                self._apply_verified(record, oldest.partition)
                applied.append(record)
        pending, self._held = self._held, deque()
        self._held_bytes = 0
        self._pass_generation = self._verifier.key_generation
        for held in pending:
            before = self._verifier.key_generation
            try:
                record = self._verifier.verify(held.value)
            except SetRejected as exc:
                if exc.reason == "unknown_kid":
                    waiting = self._still_waiting(held, before, now)
                    if waiting is not None:
                        self._held.append(waiting)
                        self._held_bytes += len(waiting.value)
                        continue
                self._reject(exc)
                continue
            self._apply_verified(record, held.partition)
            applied.append(record)
        self.stats.held = len(self._held)
        self._refresh()
        return applied

    def expect_partitions(self, partitions: Iterable[int]) -> None:
        """The partitions of the topic: once heartbeats name partitions, each must be heard."""
        self._freshness.expect(partitions)
        self._refresh()

    def set_behind(self, behind: bool) -> None:
        """The reader has records it must read again (a partition paused on :class:`HoldFull`):
        not ready and not fresh until it has caught up again."""
        if behind != self._behind:
            self._behind = behind
            self._refresh()

    def add(self, rev: Revocation) -> bool:
        """Hold ``rev`` (already verified) until its ``not_after``; False when that has passed,
        or when a reinstatement already read lifts it (issued at or before that one)."""
        self.stats.revocations += 1
        return self.revoke(
            rev.target.kind, rev.target.id, rev.not_after.timestamp(), rev.issued_at.timestamp()
        )

    def revoke(self, kind: TargetKind, id: str, until: float, issued_at: float = -math.inf) -> bool:
        """Hold a target as revoked until epoch second ``until`` (a later ``until`` wins),
        unless a reinstatement read already lifts what was issued at ``issued_at``."""
        if until <= self._clock():
            self.stats.expired_on_arrival += 1
            return False
        target = (kind, id)
        lift = self._lifts.get(target)
        if lift is not None and issued_at <= lift[0]:
            self.stats.lifted += 1
            return False
        issued = self._frontier(kind, id)
        if any(i >= issued_at and u >= until for i, u in issued):
            return True  # as recent and as long a revocation is held: this one changes nothing
        kept = [(i, u) for i, u in issued if i > issued_at or u > until]
        kept.append((issued_at, until))
        self._keep(kind, id, kept)
        heapq.heappush(self._expiry, (until, kind, id))
        return True

    def _frontier(self, kind: TargetKind, id: str) -> list[tuple[float, float]]:
        entry = self._issued[kind].get(id)
        if entry is None:
            return []
        if isinstance(entry, list):
            return entry
        until = self._tables[kind].get(id)
        return [] if until is None else [(entry, until)]

    def _keep(self, kind: TargetKind, id: str, frontier: list[tuple[float, float]]) -> None:
        """Hold exactly these revocations of a target (none: not revoked)."""
        table, issued = self._tables[kind], self._issued[kind]
        if not frontier:
            table.pop(id, None)
            issued.pop(id, None)
            return
        table[id] = max(u for _i, u in frontier)
        issued[id] = frontier[0][0] if len(frontier) == 1 else frontier

    def reinstate(self, item: Reinstatement) -> int:
        """Lift the revocations of ``item.target`` issued at or before ``item.issued_at``
        (already verified as an operator's); a revocation issued later stays. The lift is
        remembered until ``item.not_after``, so a lifted revocation read again meanwhile (a
        late copy, a republished one) is not applied. Returns how many revocations it lifted.

        An expired reinstatement still lifts: on a topic not yet compacted a bootstrap reads
        the revocation before it, and refusing the lift would resurrect that revocation.
        """
        self.stats.reinstatements += 1
        kind, ident = item.target.kind, item.target.id
        target = (kind, ident)
        at, until = item.issued_at.timestamp(), item.not_after.timestamp()
        lift = self._lifts.get(target)
        if lift is not None:
            at, until = max(at, lift[0]), max(until, lift[1])
        if until > self._clock():
            self._lifts[target] = (at, until)
            heapq.heappush(self._lift_expiry, (until, kind, ident))
        issued = self._frontier(kind, ident)
        standing = [(i, u) for i, u in issued if i > at]
        lifted = len(issued) - len(standing)
        self._keep(kind, ident, standing)
        _log.warning(
            "revocation feed: %s reinstated %s (%s); %d revocation(s) lifted, revoked now: %s",
            item.by,
            item.target.key,
            item.reason,
            lifted,
            bool(standing),
        )
        return lifted

    def heartbeat(self, hb: Heartbeat, partition: int | None = None) -> None:
        """Note a heartbeat (already verified) read from ``partition``; see
        :meth:`FeedFreshness.note <tether.sdk.freshness.FeedFreshness.note>`."""
        self.stats.heartbeats += 1
        if not self._freshness.note(hb, partition, self._clock()):
            self._reject(SetRejected("malformed", "a heartbeat read on another partition"))
            return
        self.last_heartbeat = self._freshness.last
        self.last_heartbeat_source = self._freshness.last_source
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
                self._issued[kind].pop(ident, None)
                dropped += 1
        lifts = self._lift_expiry
        while lifts and lifts[0][0] <= now:
            until, kind, ident = heapq.heappop(lifts)
            lift = self._lifts.get((kind, ident))
            if lift is not None and lift[1] == until:
                del self._lifts[(kind, ident)]
        return dropped

    # -- internals -------------------------------------------------------------------------

    def _apply_verified(self, record: FeedRecord, partition: int | None) -> None:
        if isinstance(record, Heartbeat):
            self.heartbeat(record, partition)
        elif isinstance(record, Reinstatement):
            self.reinstate(record)
        else:
            self.add(record)

    def _hold(self, value: bytes, generation: int | None, partition: int | None) -> None:
        if len(self._held) >= self._hold_max or (
            self._held and self._held_bytes + len(value) > self._hold_max_bytes
        ):
            self.stats.hold_full += 1
            raise HoldFull(f"{len(self._held)} records ({self._held_bytes} bytes) held already")
        self.stats.records += 1
        self._held.append(_Held(self._clock(), generation, None, value, partition))
        self._held_bytes += len(value)
        self.stats.held = len(self._held)
        self._log_rejection(SetRejected("unknown_kid", "held until the JWKS knows its key"))
        self._refresh()

    def _still_waiting(self, held: _Held, before: int | None, now: float) -> _Held | None:
        """``held`` as it goes on waiting, or None once it is to be given up (``before``: the
        key generation before this retry verified it, so a read this retry made counts)."""
        if now - held.since < self._hold_s:
            return held
        generation = self._verifier.key_generation
        if generation is None or before is None:  # keys that never change: the wait was all
            return None
        if held.after_wait is None:  # the wait is over: a successful read from now on decides
            held = held._replace(after_wait=before)
        return held if generation <= (held.after_wait or 0) else None

    def _reject(self, exc: SetRejected) -> None:
        rejected = self.stats.rejected
        rejected[exc.reason] = rejected.get(exc.reason, 0) + 1
        self._log_rejection(exc)

    def _refresh(self) -> None:
        if not self._ready or self._held or self._behind:
            self._stale_after = -math.inf
        else:
            self._stale_after = self._freshness.stale_after(self._clock())

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
        if tier not in self._fail_open:  # a fail-closed tier, or a name no tier has
            with self._count_lock:
                self.stats.fail_closed += 1
            return True
        with self._count_lock:
            self.stats.fail_open += 1
        return False
