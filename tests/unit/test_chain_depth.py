"""Delegation chain depth: the shortest chain to the initiator, in time linear in the delegations.

A compromised agent chooses the shape of its workflow's delegations. Searching every chain was
exponential in a lattice of them and overflowed the stack on a long one; the breadth-first
search must give the same answers as that search did (checked against it as a reference) while
visiting each delegation once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from builders import delegate, parse, started, wl
from tether.core import Context, DetectionConfig, Outbox
from tether.core.fold import fire_due, fold
from tether.core.handoff import CHAIN_SEARCH_LEVELS, chain_depth
from tether.models.session import DelegationRec, Session, StartInfo

INITIATOR = "w0"
WORKLOADS = ["w0", "w1", "w2", "w3", "w4"]


def _session(delegations: Iterable[DelegationRec], *, started: bool = True) -> Session:
    s = Session("wf")
    if started:
        s.started = StartInfo.build(
            INITIATOR,
            0.0,
            "e-start",
            scopes=["crm:read"],
            tools=[],
            destinations=[],
            max_level=3,
            not_after=1e9,
            policy_facts=("t", "p", "low", 3),
        )
    for d in delegations:
        s.add_delegation(d)
    return s


def _rec(did: str, frm: str, to: str, granted: float, expires: float) -> DelegationRec:
    return DelegationRec(did, frm, to, frozenset({"crm:read"}), granted, expires, f"e-{did}")


def _reference(session: Session, last: Sequence[DelegationRec]) -> tuple[int, bool]:
    """The search of every chain that ``chain_depth`` replaced (exponential; small inputs only)."""

    def depth(d: DelegationRec, path: frozenset[str]) -> tuple[int, bool]:
        start = session.started
        if start is not None and d.delegator == start.initiator:
            return 1, True
        path = path | {d.delegation_id}
        upstream = [
            u
            for u in session.delegations_of(d.delegator)
            if u.covers(d.granted_at) and u.delegation_id not in path
        ]
        if not upstream:
            return 1, False
        sub, rooted = shortest(depth(u, path) for u in upstream)
        return sub + 1, rooted

    def shortest(chains: Iterable[tuple[int, bool]]) -> tuple[int, bool]:
        known = list(chains)
        rooted = [n for n, ok in known if ok]
        if rooted:
            return min(rooted), True
        return min(n for n, _ in known), False

    return shortest(depth(d, frozenset()) for d in last)


def _acyclic(session: Session) -> bool:
    """No delegation reaches itself by following the delegations that cover it upward."""
    recs = session.delegations or []

    def reaches(d: DelegationRec, target: str, seen: set[str]) -> bool:
        for u in session.delegations_of(d.delegator):
            if not u.covers(d.granted_at) or u.delegation_id in seen:
                continue
            if u.delegation_id == target:
                return True
            seen.add(u.delegation_id)
            if reaches(u, target, seen):
                return True
        return False

    return not any(reaches(d, d.delegation_id, set()) for d in recs)


delegation = st.tuples(
    st.sampled_from(WORKLOADS),
    st.sampled_from(WORKLOADS[1:]),
    st.integers(0, 3),  # few distinct instants: ties, and so cycles, are common
    st.integers(0, 4),
)


@settings(max_examples=400, deadline=None)
@example(  # found by this test: two self-delegations, each taken to go on above the other
    spec=[("w1", "w3", 2, 0), ("w3", "w1", 1, 1), ("w3", "w3", 1, 1), ("w3", "w3", 1, 1)],
    actor="w3",
    t=2,
    started=False,
)
@example(  # the same with a started workflow whose initiator is on no chain
    spec=[("w1", "w3", 2, 0), ("w3", "w1", 1, 1), ("w3", "w3", 1, 1), ("w3", "w3", 1, 1)],
    actor="w3",
    t=2,
    started=True,
)
@given(
    st.lists(delegation, min_size=1, max_size=9),
    st.sampled_from(WORKLOADS[1:]),
    st.integers(0, 6),
    st.booleans(),
)
def test_the_same_answers_as_searching_every_chain(
    spec: list[tuple[str, str, int, int]], actor: str, t: int, started: bool
) -> None:
    recs = [_rec(f"d{i}", frm, to, g, g + x) for i, (frm, to, g, x) in enumerate(spec)]
    s = _session(recs, started=started)
    covering = [d for d in s.delegations_of(actor) if d.covers(t)]
    if not covering:
        return
    got, want = chain_depth(s, covering), _reference(s, covering)
    assert got[1] == want[1]  # rooted: exactly when some chain reaches the initiator
    if got[1] or _acyclic(s):
        assert got == want  # the shortest chain; without cycles also the shortest guess
    else:
        assert 1 <= got[0] <= want[0]  # through a cycle: still a lower bound


@pytest.mark.parametrize(
    ("spec", "actor", "want"),
    [
        ([("w0", "w1", 0)], "w1", (1, True)),
        ([("w0", "w1", 0), ("w1", "w2", 1), ("w2", "w3", 2)], "w3", (3, True)),
        ([("w1", "w2", 1), ("w2", "w3", 2)], "w3", (2, False)),  # w1's own delegation: not yet
        # the shortest of two chains to the initiator
        ([("w0", "w1", 0), ("w1", "w2", 1), ("w2", "w3", 2), ("w0", "w3", 2)], "w3", (1, True)),
        # a rooted chain wins over a shorter guess
        ([("w4", "w3", 1), ("w0", "w1", 0), ("w1", "w2", 1), ("w2", "w3", 2)], "w3", (3, True)),
        ([("w1", "w2", 1), ("w2", "w1", 1)], "w2", (2, False)),  # a cycle and nothing above it
    ],
)
def test_chain_depths(spec: list[tuple[str, str, int]], actor: str, want: tuple[int, bool]) -> None:
    s = _session(_rec(f"d{i}", f, to, g, 100) for i, (f, to, g) in enumerate(spec))
    covering = [d for d in s.delegations_of(actor) if d.covers(50)]
    assert chain_depth(s, covering) == want


def test_a_chain_thousands_long_is_measured_without_recursion() -> None:
    n = 3000
    s = _session(_rec(f"d{i}", f"a{i}", f"a{i + 1}", i, 10_000) for i in range(n))
    s.started.initiator = "a0"  # type: ignore[union-attr]
    last = list(s.delegations_of(f"a{n}"))
    assert chain_depth(s, last, levels=n) == (n, True)
    # the search stops at CHAIN_SEARCH_LEVELS: at least one hop more, not known to be rooted
    assert chain_depth(s, last) == (CHAIN_SEARCH_LEVELS + 1, False)
    assert chain_depth(s, list(s.delegations_of("a20"))) == (20, True)


def test_a_chain_longer_than_the_search_is_still_too_long() -> None:
    """Every delegation past the maximum depth is reported, beyond the search's reach too."""
    n = CHAIN_SEARCH_LEVELS + 8
    events = [started("wf", "a0", "tok-0", t=0, not_after=5000)]
    events += [
        delegate("wf", f"a{i}", f"a{i + 1}", f"tok-{i}", t=1 + i, did=f"d{i}") for i in range(n)
    ]
    ctx = Context(DetectionConfig(max_chain_length=3))
    s: Session | None = None
    out = Outbox()
    for raw in events:
        s = fold(s, parse(raw), ctx, 0.0, out, [])
    assert s is not None
    fire_due(s, s.last_time + 2 * ctx.cfg.grace_s, ctx, 0.0, out, [])
    exceeded = {f.workload_id for f in out.findings if f.code == "delegation_depth_exceeded"}
    assert exceeded == {wl(f"a{i}") for i in range(3, n)}  # a3's delegation: a chain of 4 hops


def test_a_lattice_of_delegations_is_searched_once_per_delegation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two workloads per level, each delegating to both of the next: 2**40 chains."""
    levels = 40
    recs = []
    above = [INITIATOR]
    for level in range(levels):
        here = [f"l{level}a", f"l{level}b"]
        recs += [_rec(f"{a}>{b}", a, b, level, 1000) for a in above for b in here]
        above = here
    s = _session(recs)
    calls = 0
    scan = Session.delegations_of

    def counted(self: Session, delegatee: str) -> Sequence[DelegationRec]:
        nonlocal calls
        calls += 1
        return scan(self, delegatee)

    monkeypatch.setattr(Session, "delegations_of", counted)
    assert chain_depth(s, list(s.delegations_of("l39a")), levels=levels) == (levels, True)
    assert calls <= len(recs) + 1
