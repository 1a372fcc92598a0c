"""Identity handoffs: who may act in a workflow at a time, with which entitlement, how deep."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import NamedTuple

from tether.models.session import DelegationRec, Session, shared


class Role(Enum):
    """How an actor stands in its workflow at the time of an act."""

    UNKNOWN = "unknown"  # the workflow had not started by the time of the act
    INITIATOR = "initiator"
    DELEGATEE = "delegatee"  # covered by at least one known delegation
    EXPIRED = "expired"  # only expired delegations are known
    UNCOVERED = "uncovered"  # no delegation known at all


class Standing(NamedTuple):
    """An actor's role, entitlement and chain depth at one instant (a tuple: built per event)."""

    role: Role
    covered: bool  # the actor holds authority in the workflow at that instant
    entitlement: frozenset[str] = frozenset()
    depth: int = 0
    via: tuple[str, ...] = ()  # covering delegation ids
    rooted: bool = True  # the shortest known chain reaches the initiator (depth is not a guess)


_NO_START = Standing(Role.UNKNOWN, False)
_UNCOVERED = Standing(Role.UNCOVERED, False)
_EXPIRED = Standing(Role.EXPIRED, False)


def standing(session: Session, workload: str, t: float) -> Standing:  # noqa: PLR0911  # one exit per role
    """The actor's standing at event time ``t`` from what the session knows now.

    Entitlement is the grant's scopes for the initiator and the union of the covering
    delegations' scopes for a delegatee. Depth counts delegation hops from the initiator along
    the shortest known chain.
    """
    start = session.started
    if start is None or start.started_at > t:
        return _NO_START  # acts dated before the workflow's start are not part of it
    if workload == start.initiator:
        cached = start.standing
        if cached is None:  # one per distinct grant scope set, shared like the set itself
            start.standing = cached = shared(Standing(Role.INITIATOR, True, start.scopes, 0))
        return cached  # type: ignore[return-value]  # only ever a Standing
    incoming = session.delegations_of(workload)
    if not incoming:
        return _UNCOVERED
    covering = [d for d in incoming if d.granted_at <= t <= d.expires_at]
    if not covering:
        if any(d.granted_at <= t for d in incoming):
            return _EXPIRED
        return _UNCOVERED
    if len(covering) == 1:
        d = covering[0]
        depth, rooted = delegation_depth(session, d)
        return Standing(Role.DELEGATEE, True, d.scopes, depth, (d.delegation_id,), rooted)
    scopes: set[str] = set()
    for d in covering:
        scopes |= d.scopes
    depth, rooted = _shortest(delegation_depth(session, d) for d in covering)
    via = tuple(sorted(d.delegation_id for d in covering))
    return Standing(Role.DELEGATEE, True, frozenset(scopes), depth, via, rooted)


def _shortest(chains: Iterable[tuple[int, bool]]) -> tuple[int, bool]:
    """The shortest chain that reaches the initiator; failing that, the shortest guess."""
    known = list(chains)
    rooted = [depth for depth, ok in known if ok]
    if rooted:
        return min(rooted), True
    return min(depth for depth, _ in known), False


def delegation_depth(
    session: Session, d: DelegationRec, _seen: frozenset[str] = frozenset()
) -> tuple[int, bool]:
    """Hops from the initiator to ``d``'s delegatee along the shortest covering chain, and
    whether that chain reaches the initiator.

    A delegator with no covering delegation (yet) ends the chain as if it were a root: the
    depth is then a lower bound, and ``rooted`` is False so that callers wait for the upstream
    delegation that may still arrive. Cycles are cut.
    """
    start = session.started
    if start is not None and d.delegator == start.initiator:
        return 1, True
    seen = _seen | {d.delegation_id}
    upstream = [
        u
        for u in session.delegations_of(d.delegator)
        if u.covers(d.granted_at) and u.delegation_id not in seen
    ]
    if not upstream:
        return 1, False
    depth, rooted = _shortest(delegation_depth(session, u, seen) for u in upstream)
    return depth + 1, rooted


def is_upstream_delegator(session: Session, workload: str, candidate: str, t: float) -> bool:
    """Whether ``candidate`` delegated (directly or transitively) to ``workload`` by time ``t``."""
    if not session.delegations:
        return False
    frontier = [workload]
    visited = {workload}
    while frontier:
        current = frontier.pop()
        for d in session.delegations_of(current):
            if d.granted_at > t or d.delegator in visited:
                continue
            if d.delegator == candidate:
                return True
            visited.add(d.delegator)
            frontier.append(d.delegator)
    return False
