"""Identity handoffs: who may act in a workflow at a time, with which entitlement, how deep."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from enum import Enum
from typing import Final, NamedTuple

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


CHAIN_SEARCH_LEVELS: Final = 32  # hops chain_depth searches (more if max_chain_length asks)
_NO_START = Standing(Role.UNKNOWN, False)
_UNCOVERED = Standing(Role.UNCOVERED, False)
_EXPIRED = Standing(Role.EXPIRED, False)


def standing(  # noqa: PLR0911  # one exit per role
    session: Session, workload: str, t: float, max_chain: int
) -> Standing:
    """The actor's standing at event time ``t`` from what the session knows now.

    Entitlement is the grant's scopes for the initiator and the union of the covering
    delegations' scopes for a delegatee. Depth counts delegation hops from the initiator along
    the shortest known chain, searched to ``max(CHAIN_SEARCH_LEVELS, max_chain + 1)`` hops.
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
    depth, rooted = chain_depth(session, covering, max(CHAIN_SEARCH_LEVELS, max_chain + 1))
    if len(covering) == 1:
        d = covering[0]
        return Standing(Role.DELEGATEE, True, d.scopes, depth, (d.delegation_id,), rooted)
    scopes: set[str] = set()
    for d in covering:
        scopes |= d.scopes
    via = tuple(sorted(d.delegation_id for d in covering))
    return Standing(Role.DELEGATEE, True, frozenset(scopes), depth, via, rooted)


def _by_id(d: DelegationRec) -> str:
    return d.delegation_id


def chain_depth(
    session: Session, last: Sequence[DelegationRec], levels: int = CHAIN_SEARCH_LEVELS
) -> tuple[int, bool]:
    """Hops from the initiator along the shortest chain of delegations that ends in one of
    ``last``, and whether that chain reaches the initiator.

    Delegation ``u`` continues the chain above ``d`` when ``u``'s delegatee is ``d``'s delegator
    and ``u`` covers the instant ``d`` was granted. A chain reaches the initiator when its top
    delegation was granted by the initiator. Failing that, the depth is the shortest guess: the
    hops to a delegator that holds no covering delegation (yet), or only ones already on the
    chain (a cycle). The guess is a lower bound, and ``rooted`` is False so that callers wait
    for the upstream delegation that may still arrive. A chain that meets a delegation another
    chain reached first goes on from there, unless the two lie on a cycle (``_components``,
    computed only for delegations granted at the same instant): then it may end there too.

    Breadth-first, in delegation-id order: every delegation is visited once, so the cost is
    linear in the workflow's delegations whatever shape a compromised agent gives them (a
    search of every chain would be exponential in a lattice of them, and recursion would
    overflow on a long one). On delegations without cycles (any whose grant times differ) the
    guess is exactly the shortest such chain.

    The search stops after ``levels`` hops: a chain that has not reached the initiator by then
    is reported as ``levels + 1`` hops (a lower bound), not rooted. This bounds the cost of every
    act in a workflow whose delegations form one long chain (a storm of them would otherwise
    cost time quadratic in their number).
    """
    start = session.started
    initiator = start.initiator if start is not None else None
    for d in last:
        if d.delegator == initiator:
            return 1, True  # most delegations: granted by the initiator itself
    above: dict[str, DelegationRec | None] = {d.delegation_id: None for d in last}
    level = sorted(last, key=_by_id)
    depth = 1
    guess = 0
    cycles: dict[str, int] = {}  # strongly connected components, once needed
    # The delegations to each delegator met, in id order, sorted once per search: many
    # delegations on one level often share their delegator (a fan-in), and sorting its
    # incoming delegations for each of them would multiply the search's cost by their number.
    incoming: dict[str, list[DelegationRec]] = {}

    def upward(d: DelegationRec) -> list[DelegationRec]:
        ups = incoming.get(d.delegator)
        if ups is None:
            ups = incoming[d.delegator] = sorted(session.delegations_of(d.delegator), key=_by_id)
        at = d.granted_at
        return [u for u in ups if u.granted_at <= at <= u.expires_at]  # u.covers(at)

    def on_a_cycle(u: DelegationRec, d: DelegationRec) -> bool:
        # Grants only go back in time up a chain, so a cycle holds delegations granted at
        # one instant: only then are the components worth computing.
        if u.granted_at != d.granted_at:
            return False
        if not cycles:
            cycles.update(_components(session, last))
        return cycles.get(u.delegation_id) == cycles.get(d.delegation_id)

    while level:
        if any(d.delegator == initiator for d in level):
            return depth, True
        if depth == levels:
            return depth + 1, False  # longer than the search goes: at least this long
        found: list[DelegationRec] = []
        for d in level:
            ends = True
            for u in upward(d):
                uid = u.delegation_id
                if uid not in above:
                    above[uid] = d
                    found.append(u)
                    ends = False
                elif ends and not _on_chain(above, d, uid):
                    # reached by another chain, which goes on from there: unless it can lead
                    # back here (a cycle), and so may end right here for a chain through d
                    ends = on_a_cycle(u, d)
            if ends and not guess:
                guess = depth
        level = found
        depth += 1
    return (guess or depth), False  # every chain ran into a cycle: at least the hops explored


def _upward(session: Session, d: DelegationRec) -> Iterator[DelegationRec]:
    """The delegations that continue a chain above ``d``: to its delegator, covering the
    instant ``d`` was granted."""
    return (u for u in session.delegations_of(d.delegator) if u.covers(d.granted_at))


def _components(session: Session, last: Sequence[DelegationRec]) -> dict[str, int]:
    """The strongly connected components (a number per delegation id) of the delegations
    reachable from ``last`` by continuing chains upward (iterative Tarjan: linear, no
    recursion). Two delegations share a component when each continues a chain above the
    other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    comp: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(d: DelegationRec) -> None:
        index[d.delegation_id] = low[d.delegation_id] = len(index)
        stack.append(d.delegation_id)
        on_stack.add(d.delegation_id)

    for root in last:
        if root.delegation_id in index:
            continue
        visit(root)
        work: list[tuple[DelegationRec, Iterator[DelegationRec]]] = [(root, _upward(session, root))]
        while work:
            d, ups = work[-1]
            did = d.delegation_id
            for u in ups:
                uid = u.delegation_id
                if uid not in index:
                    visit(u)
                    work.append((u, _upward(session, u)))
                    break
                if uid in on_stack:
                    low[did] = min(low[did], index[uid])
            else:
                work.pop()
                if work:
                    parent = work[-1][0].delegation_id
                    low[parent] = min(low[parent], low[did])
                if low[did] == index[did]:
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        comp[member] = index[did]
                        if member == did:
                            break
    return comp


def _on_chain(above: dict[str, DelegationRec | None], d: DelegationRec | None, uid: str) -> bool:
    """Whether delegation ``uid`` is ``d`` or on the chain the search followed above ``d``."""
    while d is not None:
        if d.delegation_id == uid:
            return True
        d = above[d.delegation_id]
    return False


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
