"""Identity handoffs: who may act in a workflow at a time, with which entitlement, how deep."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from tether.models.session import DelegationRec, Session


class Role(Enum):
    """How an actor stands in its workflow at the time of an act."""

    UNKNOWN = "unknown"  # the workflow had not started by the time of the act
    INITIATOR = "initiator"
    DELEGATEE = "delegatee"  # covered by at least one known delegation
    EXPIRED = "expired"  # only expired delegations are known
    UNCOVERED = "uncovered"  # no delegation known at all


@dataclass(frozen=True, slots=True)
class Standing:
    """An actor's role, entitlement and chain depth at one instant."""

    role: Role
    entitlement: frozenset[str] = frozenset()
    depth: int = 0
    via: tuple[str, ...] = ()  # covering delegation ids

    @property
    def covered(self) -> bool:
        """Whether the actor holds authority in the workflow at that instant."""
        return self.role in (Role.INITIATOR, Role.DELEGATEE)


_NO_START = Standing(Role.UNKNOWN)


def standing(session: Session, workload: str, t: float) -> Standing:
    """The actor's standing at event time ``t`` from what the session knows now.

    Entitlement is the grant's scopes for the initiator and the union of the covering
    delegations' scopes for a delegatee. Depth counts delegation hops from the initiator along
    the shortest known chain.
    """
    start = session.started
    if start is None or start.started_at > t:
        return _NO_START  # acts dated before the workflow's start are not part of it
    if workload == start.initiator:
        return Standing(Role.INITIATOR, start.scopes, 0)
    incoming = session.delegations_to.get(workload)
    if not incoming:
        return Standing(Role.UNCOVERED)
    covering = [d for d in incoming if d.covers(t)]
    if not covering:
        if any(d.granted_at <= t for d in incoming):
            return Standing(Role.EXPIRED)
        return Standing(Role.UNCOVERED)
    if len(covering) == 1:
        d = covering[0]
        return Standing(Role.DELEGATEE, d.scopes, delegation_depth(session, d), (d.delegation_id,))
    scopes: set[str] = set()
    for d in covering:
        scopes |= d.scopes
    depth = min(delegation_depth(session, d) for d in covering)
    return Standing(
        Role.DELEGATEE, frozenset(scopes), depth, tuple(sorted(d.delegation_id for d in covering))
    )


def delegation_depth(session: Session, d: DelegationRec, _seen: frozenset[str] = frozenset()) -> int:
    """Hops from the initiator to ``d``'s delegatee along the shortest covering chain.

    A delegator with no covering delegation of its own counts as a root (it raises its own
    ``undelegated_actor``); cycles are cut.
    """
    start = session.started
    if start is not None and d.delegator == start.initiator:
        return 1
    seen = _seen | {d.delegation_id}
    upstream = [
        u
        for u in session.delegations_to.get(d.delegator, ())
        if u.covers(d.granted_at) and u.delegation_id not in seen
    ]
    if not upstream:
        return 1
    return 1 + min(delegation_depth(session, u, seen) for u in upstream)


def is_upstream_delegator(session: Session, workload: str, candidate: str, t: float) -> bool:
    """Whether ``candidate`` delegated (directly or transitively) to ``workload`` by time ``t``."""
    frontier = [workload]
    visited = {workload}
    while frontier:
        current = frontier.pop()
        for d in session.delegations_to.get(current, ()):
            if d.granted_at > t or d.delegator in visited:
                continue
            if d.delegator == candidate:
                return True
            visited.add(d.delegator)
            frontier.append(d.delegator)
    return False
