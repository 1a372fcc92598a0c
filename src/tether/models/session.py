"""Session state: what tether remembers per workflow and per token between events.

Plain slotted dataclasses (not pydantic) because the fold mutates them on every event. Times are
POSIX seconds (float) so that comparisons on the hot path are cheap.

Memory: a monitor holds one session per active workflow, so state keeps only what the checks and
the state codec read. Values that repeat across a fleet (workload ids, scope/tool/destination
sets, a grant's policy facts) enter state through ``shared`` and ``sys.intern``, so that sessions
share one copy; containers that most sessions never fill start as ``None``. A workflow's tokens
and delegations are short lists, scanned (a dict costs more than a handful of comparisons), and
indexed only once a workflow has more than a few; a token holds the uses recorded of it.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple, TypeVar

from tether.models.common import SENSITIVITY_LEVEL
from tether.models.events import DelegationGranted, Grant, InputEvent

_H = TypeVar("_H", bound=Hashable)

SHARED_MAX: Final = 2048  # distinct values the canonicalizing cache holds before it starts over
SHARED_MAX_ITEMS: Final = 16  # larger sets are not shared (rare, and they would pin memory)
DELEGATION_INDEX_AT: Final = 8  # delegations in a workflow before they are indexed
TOKEN_INDEX_AT: Final = 8  # tokens used in a workflow before they are indexed by id
_shared: dict[object, object] = {}


def shared(value: _H) -> _H:
    """One canonical instance of an immutable value that repeats across sessions.

    A plain dict bounded by ``SHARED_MAX``: when it is full it starts over, so a flood of
    distinct values (all attacker-chosen, say) costs at most that many entries, and values that
    keep repeating are shared again from then on. Sessions holding an earlier instance keep it.
    """
    hit = _shared.get(value)
    if hit is not None:
        return hit  # type: ignore[return-value]  # keyed by the value itself: same type
    if len(_shared) >= SHARED_MAX:
        _shared.clear()
    _shared[value] = value
    return value


def shared_set(items: Collection[str]) -> frozenset[str]:
    """``items`` as a frozenset, shared with every equal set that came before (small sets)."""
    value = frozenset(items)
    return shared(value) if len(value) <= SHARED_MAX_ITEMS else value


PolicyFacts = tuple[str, str, str, int]  # (task_type, purpose, autonomy, max sensitivity level)


@dataclass(slots=True)
class StartInfo:
    """The workflow's initiator and what the checks need of its baseline grant.

    Only the grant's derived facts are kept, not the validated ``Grant`` (a pydantic model with
    its lists, strings and datetimes costs more than the rest of a session).
    """

    initiator: str
    started_at: float
    event_id: str
    scopes: frozenset[str]
    tools: frozenset[str]  # empty: any tool
    destinations: frozenset[str]  # empty: any destination
    max_level: int  # the grant's max_sensitivity as SENSITIVITY_LEVEL
    not_after: float
    policy_facts: PolicyFacts  # what per-call policy reads of the grant
    # the initiator's standing, cached by the core (not serialized, not part of equality)
    standing: object = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, initiator: str, started_at: float, event_id: str, grant: Grant) -> StartInfo:
        """From the ``workflow.started`` event's agent, time, id and grant."""
        level = SENSITIVITY_LEVEL[grant.max_sensitivity]
        return cls.build(
            initiator,
            started_at,
            event_id,
            scopes=grant.scopes,
            tools=grant.tools,
            destinations=grant.destinations,
            max_level=level,
            not_after=grant.not_after.timestamp(),
            policy_facts=(grant.task_type, grant.purpose, grant.autonomy, level),
        )

    @classmethod
    def build(  # noqa: PLR0913  # one keyword per fact, as the state codec stores them
        cls,
        initiator: str,
        started_at: float,
        event_id: str,
        *,
        scopes: Collection[str],
        tools: Collection[str],
        destinations: Collection[str],
        max_level: int,
        not_after: float,
        policy_facts: PolicyFacts,
    ) -> StartInfo:
        """From the facts themselves, sharing the values that repeat across a fleet."""
        return cls(
            initiator=sys.intern(initiator),
            started_at=started_at,
            event_id=event_id,
            scopes=shared_set(scopes),
            tools=shared_set(tools),
            destinations=shared_set(destinations),
            max_level=max_level,
            not_after=not_after,
            policy_facts=shared(policy_facts),
        )


def same_grant(a: StartInfo, b: StartInfo) -> bool:
    """Whether two starts grant the same thing to the same initiator (their times and ids
    aside): a start re-emitted with the same grant is a duplicate, not a conflict."""
    return (
        a.initiator == b.initiator
        and a.scopes == b.scopes
        and a.tools == b.tools
        and a.destinations == b.destinations
        and a.max_level == b.max_level
        and a.not_after == b.not_after
        and a.policy_facts == b.policy_facts
    )


@dataclass(slots=True)
class DelegationRec:
    """A delegation as the session knows it."""

    delegation_id: str
    delegator: str
    delegatee: str
    scopes: frozenset[str]
    granted_at: float
    expires_at: float
    event_id: str

    @classmethod
    def of(cls, event: DelegationGranted) -> DelegationRec:
        """From the ``delegation.granted`` event."""
        d = event.delegation
        return cls(
            delegation_id=d.delegation_id,
            delegator=sys.intern(event.agent.workload_id),
            delegatee=sys.intern(d.to_workload_id),
            scopes=shared_set(d.scopes),
            granted_at=event.t,
            expires_at=d.expires_at.timestamp(),
            event_id=event.event_id,
        )

    def covers(self, t: float) -> bool:
        """A delegation covers an act when ``granted_at <= t <= expires_at``."""
        return self.granted_at <= t <= self.expires_at


@dataclass(slots=True)
class Pending:
    """An event whose checks wait for events that may still arrive (until ``deadline``)."""

    deadline: float
    seq: int
    event: InputEvent
    size: int = field(default=0, compare=False)  # its bytes in the session record (state_size)
    quiet: bool = False  # a re-judgment (see fold._rejudge): its decision was already made


class ActRef(NamedTuple):
    """A recent credentialed act, kept for a grace period to judge late completions."""

    t: float
    event_id: str
    workload_id: str
    token_id: str
    token_expires: float
    token_issuer: str | None = None  # the credential's iss (named in a token revocation's SET)


@dataclass(slots=True)
class Session:
    """One workflow's correlated state.

    The containers most workflows never fill (delegations, findings fired, completion
    revocations, pending checks, recent calls) are ``None`` until first written.
    """

    workflow_id: str
    started: StartInfo | None = None  # the earliest start in event time: the workflow's grant
    other_starts: list[StartInfo] | None = None  # any later ones (grant_conflict if they differ)
    completed_at: float | None = None
    completed_event: str | None = None
    delegations: list[DelegationRec] | None = None  # in the order they became known
    # by delegatee, built once the workflow has more than DELEGATION_INDEX_AT delegations
    delegations_to: dict[str, list[DelegationRec]] | None = None
    delegation_ids: set[str] | None = None  # the same: every delegation id known
    seen: dict[str, float] = field(default_factory=dict)  # event id -> event time
    fired: set[str] | None = None  # finding ids
    unsettled: int = 0  # recorded uses not yet reported to the token index
    tokens: list[TokenSeen] = field(default_factory=list)  # in the order first used
    token_index: dict[str, TokenSeen] | None = None  # by id, past TOKEN_INDEX_AT tokens
    completion_revoked: set[str] | None = None  # token ids
    pending: list[Pending] | None = None
    recent: list[ActRef] | deque[ActRef] | None = None  # roughly time-ordered; None once drained
    unknown: ActRef | None = None  # earliest call dated before any known start
    unknown_done: bool = False
    compacted: bool = False
    # events a start arriving late could still judge differently (see fold._rejudge), until
    # the grace period after the start has passed
    early: list[InputEvent] | None = None
    last_time: float = 0.0
    tokens_until: float = 0.0  # the latest expiry of a credential used in the workflow
    seq: int = 0
    partition: int = -1  # the input partition this workflow lives on (streaming only)
    rewake: bool = True  # a deadline was added since the driver last scheduled this session
    limited: bool = False  # workflow_limits_exceeded was raised: a cap is being enforced
    # Derived bookkeeping, rebuilt by ``state_size.measure`` when a record is loaded (not
    # serialized, not part of equality): the record bytes of the capped containers and of the
    # event ids, and the earliest unreported use (when ``unsettled``).
    state_bytes: int = field(default=0, compare=False, repr=False)
    seen_bytes: int = field(default=0, compare=False, repr=False)
    settle_at: float = field(default=float("inf"), compare=False, repr=False)
    early_bytes: int = field(
        default=0, compare=False, repr=False
    )  # of ``early``, within state_bytes

    def token(self, token_id: str) -> TokenSeen | None:
        """The token with this id, if it was used in this workflow.

        A workflow's few tokens are a list, scanned; past ``TOKEN_INDEX_AT`` (a long job that
        refreshes its token often) they are also indexed by id.
        """
        index = self.token_index
        if index is not None:
            return index.get(token_id)
        for seen in self.tokens:
            if seen.token_id == token_id:
                return seen
        return None

    def add_token(self, seen: TokenSeen) -> TokenSeen:
        """Remember a token first used in this workflow (the caller checked ``token``)."""
        tokens = self.tokens
        tokens.append(seen)
        index = self.token_index
        if index is not None:
            index[seen.token_id] = seen
        elif len(tokens) > TOKEN_INDEX_AT:
            self.token_index = {t.token_id: t for t in tokens}
        return seen

    def forget_tokens(self) -> None:
        """Drop every token (a compacted session)."""
        self.tokens = []
        self.token_index = None

    def has_delegation(self, delegation_id: str) -> bool:
        """Whether a delegation with this id is known."""
        ids = self.delegation_ids
        if ids is not None:
            return delegation_id in ids
        return any(d.delegation_id == delegation_id for d in self.delegations or ())

    def add_delegation(self, rec: DelegationRec) -> bool:
        """Remember a delegation; False if one with its id is already known (the first stays).

        A workflow's few delegations are a list, scanned to find a delegatee's or an id; past
        ``DELEGATION_INDEX_AT`` they are also indexed by delegatee and by id, so that a workflow
        with thousands of delegations does not slow down every one of its events.
        """
        if self.has_delegation(rec.delegation_id):
            return False
        known = self.delegations
        if known is None:
            self.delegations = known = []
        known.append(rec)
        index, ids = self.delegations_to, self.delegation_ids
        if index is not None and ids is not None:
            index.setdefault(rec.delegatee, []).append(rec)
            ids.add(rec.delegation_id)
        elif len(known) > DELEGATION_INDEX_AT:
            self.delegations_to = index = {}
            for d in known:
                index.setdefault(d.delegatee, []).append(d)
            self.delegation_ids = {d.delegation_id for d in known}
        return True

    def delegations_of(self, delegatee: str) -> Sequence[DelegationRec]:
        """The delegations to ``delegatee``, in the order they became known."""
        index = self.delegations_to
        if index is not None:
            return index.get(delegatee, ())
        known = self.delegations
        if not known:
            return ()
        return [d for d in known if d.delegatee == delegatee]


@dataclass(slots=True)
class UseRec:
    """A workload's earliest use of a token in this workflow, reported once it has settled."""

    workload_id: str
    t: float
    event_id: str
    inherited: bool
    expires_at: float
    reported: bool = False
    owner: bool = False  # the workload is the token's subject (credential_reuse attribution)


@dataclass(slots=True)
class TokenSeen:
    """A token used in this workflow: its earliest use, its expiry, and the uses recorded of it.

    ``uses`` holds one ``UseRec`` per workload whose use has been recorded: the record itself
    while there is one (nearly every token: one workload presents it), a list from the second
    workload on. ``recorded`` reads both.
    """

    token_id: str
    first_use: float
    expires_at: float
    event_id: str
    uses: UseRec | list[UseRec] | None = None
    issuer: str | None = None  # the credential's iss (interned: one string per STS)

    def recorded(self) -> Sequence[UseRec]:
        """The recorded uses, one per workload, in the order they were first recorded."""
        uses = self.uses
        if uses is None:
            return ()
        if isinstance(uses, UseRec):
            return (uses,)
        return uses

    def use_by(self, workload_id: str) -> UseRec | None:
        """The recorded use by ``workload_id``, if any."""
        uses = self.uses
        if isinstance(uses, UseRec):
            return uses if uses.workload_id == workload_id else None
        for rec in uses or ():
            if rec.workload_id == workload_id:
                return rec
        return None

    def record(self, rec: UseRec) -> None:
        """Add the first recorded use by ``rec.workload_id`` (the caller checked ``use_by``)."""
        uses = self.uses
        if uses is None:
            self.uses = rec
        elif isinstance(uses, UseRec):
            self.uses = [uses, rec]
        else:
            uses.append(rec)


class PairUse(NamedTuple):
    """The earliest use of a token by one workload in one workflow."""

    workload_id: str
    workflow_id: str
    t: float
    event_id: str
    inherited: bool
    owner: bool = False  # the workload is the token's subject


WAITING: Final = 0  # a ``WorkflowShare``'s completion, not decided yet
DEFERRED: Final = 1  # decided: another workflow was live with the token, not revoked
REVOKED: Final = 2  # decided: revoked (task_completed)


@dataclass(slots=True)
class WorkflowShare:
    """One workflow's part in a token shared across workflows (sharing allowed): when the
    token's subject first presented it there, and when the workflow completed
    (``tether.core.sharing``)."""

    first: float = float("inf")  # the earliest trusted, non-inherited use by the subject
    done: float | None = None  # the workflow's completion (the earliest one reported)
    evidence: str = ""  # the completion's event id
    state: int = WAITING


@dataclass(slots=True)
class TokenState:
    """Cross-workflow memory of one token, for credential_reuse (partitioned by ``token_id``).

    ``pairs`` is a list, not a dict keyed by (workload, workflow): nearly every token is used by
    one workload in one workflow, and a list of one tuple costs well under half of a dict with a
    key tuple and a record. Lookups scan it; it holds at most ``limits.token_pairs`` entries.
    """

    token_id: str
    expires_at: float = 0.0
    pairs: list[PairUse] = field(default_factory=list)
    fired: set[str] | None = None  # finding ids raised (None until the first: most never do)
    partition: int = -1  # the credential-uses partition this token lives on (streaming only)
    # (code, workload, workflow) of the findings raised, learnt as they are met: spares
    # deriving a finding id to know it was raised (not serialized, not part of equality)
    flagged: set[tuple[str, str, str]] | None = field(default=None, compare=False, repr=False)
    issuer: str | None = None  # the token's iss, from the first use that named it
    # processing time of its last use, for the streaming worker's hold (0: not yet known);
    # not serialized, not part of equality
    used_at: float = field(default=0.0, compare=False, repr=False)
    # sharing allowed: each workflow's part in the token (at most ``limits.token_workflows``)
    shares: dict[str, WorkflowShare] | None = None
    crowded: bool = False  # a workflow did not fit in ``shares``: every completion revokes
    # the earliest completion deferred and not yet followed by a revocation:
    # (completed at, workflow id, evidence); revoked idle_timeout_s after it at the latest
    backstop: tuple[float, str, str] | None = None
