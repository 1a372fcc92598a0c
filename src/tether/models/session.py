"""Session state: what tether remembers per workflow and per token between events.

Plain slotted dataclasses (not pydantic) because the fold mutates them on every event. Times are
POSIX seconds (float) so that comparisons on the hot path are cheap.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from tether.models.common import SENSITIVITY_LEVEL
from tether.models.events import DelegationGranted, Grant, InputEvent


@dataclass(slots=True)
class StartInfo:
    """The workflow's initiator and baseline grant, precomputed for fast checks."""

    initiator: str
    started_at: float
    event_id: str
    grant: Grant
    scopes: frozenset[str]
    tools: frozenset[str]
    destinations: frozenset[str]
    max_level: int
    not_after: float
    policy_facts: tuple[str, str, str, int]  # (task_type, purpose, autonomy, max level)
    standing: object = None  # the initiator's standing, cached by the core (not serialized)

    @classmethod
    def of(cls, initiator: str, started_at: float, event_id: str, grant: Grant) -> StartInfo:
        """Precompute the grant's sets and levels."""
        return cls(
            initiator=initiator,
            started_at=started_at,
            event_id=event_id,
            grant=grant,
            scopes=frozenset(grant.scopes),
            tools=frozenset(grant.tools),
            destinations=frozenset(grant.destinations),
            max_level=SENSITIVITY_LEVEL[grant.max_sensitivity],
            not_after=grant.not_after.timestamp(),
            policy_facts=(
                grant.task_type,
                grant.purpose,
                grant.autonomy,
                SENSITIVITY_LEVEL[grant.max_sensitivity],
            ),
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
            delegator=event.agent.workload_id,
            delegatee=d.to_workload_id,
            scopes=frozenset(d.scopes),
            granted_at=event.occurred_at.timestamp(),
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


class ActRef(NamedTuple):
    """A recent credentialed act, kept for a grace period to judge late completions."""

    t: float
    event_id: str
    workload_id: str
    token_id: str
    token_expires: float


@dataclass(slots=True)
class Session:
    """One workflow's correlated state."""

    workflow_id: str
    started: StartInfo | None = None
    completed_at: float | None = None
    completed_event: str | None = None
    delegations: dict[str, DelegationRec] = field(default_factory=dict)
    delegations_to: dict[str, list[DelegationRec]] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)
    fired: set[str] = field(default_factory=set)
    uses: dict[tuple[str, str], UseRec] = field(default_factory=dict)
    unsettled: int = 0  # uses not yet reported to the token index
    tokens: dict[str, TokenSeen] = field(default_factory=dict)
    completion_revoked: set[str] = field(default_factory=set)
    pending: list[Pending] = field(default_factory=list)
    recent: deque[ActRef] = field(default_factory=deque)  # roughly time-ordered
    unknown: ActRef | None = None  # earliest call dated before any known start
    unknown_done: bool = False
    compacted: bool = False
    last_time: float = 0.0
    seq: int = 0
    partition: int = -1  # the input partition this workflow lives on (streaming only)
    rewake: bool = True  # a deadline was added since the driver last scheduled this session


@dataclass(slots=True)
class UseRec:
    """A workload's earliest use of a token in this workflow, reported once it has settled."""

    t: float
    event_id: str
    inherited: bool
    expires_at: float
    reported: bool = False


@dataclass(slots=True)
class TokenSeen:
    """A token used in this workflow: its earliest use and its expiry."""

    first_use: float
    expires_at: float
    event_id: str


@dataclass(slots=True)
class PairUse:
    """The earliest use of a token by one workload in one workflow."""

    t: float
    event_id: str
    inherited: bool


@dataclass(slots=True)
class TokenState:
    """Cross-workflow memory of one token, for credential_reuse (partitioned by ``token_id``)."""

    token_id: str
    expires_at: float = 0.0
    pairs: dict[tuple[str, str], PairUse] = field(default_factory=dict)
    fired: set[str] = field(default_factory=set)
    partition: int = -1  # the credential-uses partition this token lives on (streaming only)
