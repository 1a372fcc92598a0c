"""The Cedar request for one tool call: what tether's policy sees of a `tool_call.intent`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

OPERATIONS: Final = frozenset({"read", "write", "delete", "execute", "transfer", "admin"})
"""The `action.operation` values; each is a Cedar action `Tether::Action::"<operation>"`."""

SENSITIVITY_LEVELS: Final = {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}
"""`data_sensitivity` names and their order, as the Cedar context's `sensitivity_level`."""

AUTONOMY_LEVELS: Final = frozenset({"low", "medium", "high"})
"""A grant's `autonomy` tiers; the empty string stands for "no grant known"."""

UNKNOWN_MAX_SENSITIVITY: Final = -1
"""`max_sensitivity_level` when no grant is known: nothing is granted, not even public data."""

# RFC 3986 scheme, the part of a URI before the first ':'.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One tool call mapped to Cedar's principal, action, resource and context.

    Principal is `Tether::Workload::"<workload_id>"`, action `Tether::Action::"<operation>"`,
    resource `Tether::Tool::"<tool>"`; every other field is a context attribute of the same name
    (see `policy/default/tether.cedarschema`).

    The request deliberately leaves out the full resource URI and the timestamp. It carries
    coarse facts instead (`resource_scheme`, `hour_utc`, `weekday`), so that the many calls of a
    workflow map to few distinct requests and the evaluator's decision cache stays effective.
    A policy that needs finer facts needs a new context field, not a bigger key.

    Build one with `PolicyRequest.for_call`, which derives the computed fields; the plain
    constructor takes them as given.

    Attributes:
        workload_id: The acting workload (`agent.workload_id`).
        operation: `action.operation`, one of `OPERATIONS`.
        tool: `action.tool`.
        task_type: The grant's `task_type`, or "" when no grant is known.
        purpose: The grant's `purpose`, or "".
        autonomy: The grant's `autonomy` (low|medium|high), or "".
        data_sensitivity: `action.data_sensitivity` by name.
        sensitivity_level: `data_sensitivity` as 0..3 (public..restricted).
        max_sensitivity_level: The grant's `max_sensitivity` as 0..3, or -1 when no grant is known.
        destination: `action.destination`.
        destination_granted: Whether the grant allows the destination (an empty
            `grant.destinations` allows any); False when no grant is known.
        resource_scheme: The lower-cased URI scheme of `action.resource` ("crm" for
            "crm://accounts/1"), or "" when it has none.
        hour_utc: Hour of the event time in UTC, 0..23.
        weekday: Day of the event time in UTC, 0 (Monday) .. 6 (Sunday).
        delegation_depth: Delegation hops from the initiator to the actor (0 for the initiator).
        is_initiator: Whether the actor started the workflow.
        delegated: Whether the actor acts under a delegation (`delegation_depth > 0`).
    """

    workload_id: str
    operation: str
    tool: str
    task_type: str
    purpose: str
    autonomy: str
    data_sensitivity: str
    sensitivity_level: int
    max_sensitivity_level: int
    destination: str
    destination_granted: bool
    resource_scheme: str
    hour_utc: int
    weekday: int
    delegation_depth: int
    is_initiator: bool
    delegated: bool

    @property
    def cache_key(self) -> tuple[str | int | bool, ...]:
        """Every field, in order: two requests with equal keys get the same decision."""
        return (
            self.workload_id,
            self.operation,
            self.tool,
            self.task_type,
            self.purpose,
            self.autonomy,
            self.data_sensitivity,
            self.sensitivity_level,
            self.max_sensitivity_level,
            self.destination,
            self.destination_granted,
            self.resource_scheme,
            self.hour_utc,
            self.weekday,
            self.delegation_depth,
            self.is_initiator,
            self.delegated,
        )

    def context(self) -> dict[str, str | int | bool]:
        """Return the Cedar context record (every field but principal, action and resource)."""
        return {
            "task_type": self.task_type,
            "purpose": self.purpose,
            "autonomy": self.autonomy,
            "data_sensitivity": self.data_sensitivity,
            "sensitivity_level": self.sensitivity_level,
            "max_sensitivity_level": self.max_sensitivity_level,
            "destination": self.destination,
            "destination_granted": self.destination_granted,
            "resource_scheme": self.resource_scheme,
            "hour_utc": self.hour_utc,
            "weekday": self.weekday,
            "delegation_depth": self.delegation_depth,
            "is_initiator": self.is_initiator,
            "delegated": self.delegated,
        }

    @classmethod
    def for_call(  # noqa: PLR0913 -- one keyword per fact of the call; a bundle would hide them
        cls,
        *,
        workload_id: str,
        operation: str,
        tool: str,
        resource: str,
        destination: str,
        data_sensitivity: str,
        occurred_at: datetime,
        is_initiator: bool,
        delegation_depth: int = 0,
        task_type: str = "",
        purpose: str = "",
        autonomy: str = "",
        max_sensitivity: str | None = None,
        granted_destinations: tuple[str, ...] | list[str] | None = None,
    ) -> PolicyRequest:
        """Map a tool call and its workflow's grant to a request, deriving the computed fields.

        The grant arguments default to "no grant known" (the call's `workflow.started` has not
        arrived): empty strings, `max_sensitivity_level` -1 and `destination_granted` False.

        Args:
            workload_id: `agent.workload_id`.
            operation: `action.operation`.
            tool: `action.tool`.
            resource: `action.resource`; only its scheme is kept.
            destination: `action.destination`.
            data_sensitivity: `action.data_sensitivity`.
            occurred_at: The event time; must carry an offset. Only hour and weekday are kept.
            is_initiator: Whether the actor started the workflow.
            delegation_depth: Delegation hops from the initiator (0 for the initiator, and for an
                actor with no delegation).
            task_type: `grant.task_type`.
            purpose: `grant.purpose`.
            autonomy: `grant.autonomy`.
            max_sensitivity: `grant.max_sensitivity`, or None when no grant is known.
            granted_destinations: `grant.destinations` (empty allows any), or None when no grant
                is known.

        Returns:
            The request.

        Raises:
            ValueError: An unknown operation, sensitivity or autonomy, a naive `occurred_at`, a
                negative depth, or an initiator with a non-zero depth.
        """
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}")
        if autonomy and autonomy not in AUTONOMY_LEVELS:
            raise ValueError(f"unknown autonomy {autonomy!r}")
        if occurred_at.utcoffset() is None:
            raise ValueError("occurred_at must carry a UTC offset")
        if delegation_depth < 0 or (is_initiator and delegation_depth):
            raise ValueError(f"delegation_depth {delegation_depth} for is_initiator={is_initiator}")
        at = occurred_at.astimezone(UTC)
        match = _SCHEME.match(resource)
        return cls(
            workload_id=workload_id,
            operation=operation,
            tool=tool,
            task_type=task_type,
            purpose=purpose,
            autonomy=autonomy,
            data_sensitivity=data_sensitivity,
            sensitivity_level=_level(data_sensitivity),
            max_sensitivity_level=(
                UNKNOWN_MAX_SENSITIVITY if max_sensitivity is None else _level(max_sensitivity)
            ),
            destination=destination,
            destination_granted=(
                granted_destinations is not None
                and (not granted_destinations or destination in granted_destinations)
            ),
            resource_scheme=match.group(1).lower() if match else "",
            hour_utc=at.hour,
            weekday=at.weekday(),
            delegation_depth=delegation_depth,
            is_initiator=is_initiator,
            delegated=delegation_depth > 0,
        )


def _level(sensitivity: str) -> int:
    try:
        return SENSITIVITY_LEVELS[sensitivity]
    except KeyError:
        raise ValueError(f"unknown sensitivity {sensitivity!r}") from None
