"""Stage the delegation attacks: broken, amplified, inherited, expired and too-deep handoffs."""

from __future__ import annotations

from collections.abc import Callable

from tether.demo.catalog import MAX_BENIGN_HOPS, ROLES
from tether.demo.kinds import AttackKind
from tether.demo.staging import Stage, privileged, renew_after, slot, strike
from tether.demo.workflow import Handoff, Workflow, benign, play

_K = AttackKind
#: Share of undelegated-actor attacks where a delegatee acts just before its delegation.
_EARLY_ACT_SHARE = 0.5


def _undelegated_actor(kind: AttackKind, st: Stage) -> None:
    wf = benign(st.script, st.task, st.workflow_id, st.start_ms)
    rng = st.script.rng
    if wf.handoffs and rng.random() < _EARLY_ACT_SHARE:
        _act_before_handoff(kind, wf, rng.choice(wf.handoffs))
        return
    taken = {wf.initiator.role} | {h.delegatee.role for h in wf.handoffs}
    role = rng.choice(sorted(set(ROLES) - taken))
    tool = rng.choice([t for t in st.task.all_tools() if t.operation in ("read", "write")])
    outsider = st.script.actor(role, (tool,))
    _, t, _, _ = slot(wf)
    token = st.script.token(outsider.workload_id, [tool.scope], t - rng.randint(500, 20_000), 300)
    strike(wf, kind, outsider, t, token.cred, wf.action(tool))


def _act_before_handoff(kind: AttackKind, wf: Workflow, handoff: Handoff) -> None:
    """The delegatee acts before its delegation is granted: nothing covers that act."""
    rng = wf.script.rng
    t = max(wf.start_ms + 1, handoff.granted_t - rng.randint(1000, 3000))
    token = handoff.uses[0].token
    assert token is not None
    token.set_issued(min(token.issued_ms, t - 500))
    actor = handoff.delegatee
    strike(wf, kind, actor, t, token.cred, wf.action(rng.choice(actor.tools)))


def _delegation_amplification(kind: AttackKind, st: Stage) -> None:
    wf = benign(st.script, st.task, st.workflow_id, st.start_ms, min_hops=1)
    handoff = st.script.rng.choice(wf.handoffs)
    parent = handoff.parent
    held = wf.grant["scopes"] if parent is None else parent.delegation["scopes"]
    scopes = handoff.delegation["scopes"]
    handoff.delegation["scopes"] = sorted([*scopes, privileged(wf, held)])
    st.script.label(handoff.event, kind)


def _inherited_credential(kind: AttackKind, st: Stage) -> None:
    wf = benign(st.script, st.task, st.workflow_id, st.start_ms, min_hops=1)
    rng = st.script.rng
    handoff = rng.choice(wf.handoffs)
    root = handoff
    path = [handoff]
    while root.parent is not None:
        root = root.parent
        path.append(root)
    inherited = next(u.token for u in wf.uses if u.event is root.event)
    assert inherited is not None
    t = handoff.uses[0].t + rng.randint(1, 800)
    if t >= inherited.expires_ms:
        handoff, path = root, [root]
        t = root.uses[0].t + rng.randint(1, 800)
    for link in path:
        link.delegation["scopes"] = list(wf.grant["scopes"])
    renew_after(wf, inherited, t)
    actor = handoff.delegatee
    strike(
        wf,
        kind,
        actor,
        t,
        inherited.cred,
        wf.action(rng.choice(actor.tools)),
        handoff.delegation["delegation_id"],
    )


def _delegation_expired(kind: AttackKind, st: Stage) -> None:
    wf = benign(st.script, st.task, st.workflow_id, st.start_ms, min_hops=1)
    rng = st.script.rng
    handoff = rng.choice(wf.handoffs)
    last = handoff.uses[-1]
    assert last.token is not None
    t = last.t + rng.randint(1500, 20_000)
    wf.push_completion(t)
    wf.set_delegation_expiry(handoff, last.t + (t - last.t) // 2)
    actor = handoff.delegatee
    strike(
        wf,
        kind,
        actor,
        t,
        last.token.cred,
        wf.action(rng.choice(actor.tools)),
        handoff.delegation["delegation_id"],
    )


def _delegation_depth_exceeded(kind: AttackKind, st: Stage) -> None:
    wf = Workflow(st.script, st.task, st.workflow_id, st.start_ms)
    play(wf, calls=st.script.rng.randint(*st.task.calls), hops=MAX_BENIGN_HOPS + 1)
    deepest = next(h for h in wf.handoffs if h.hop == MAX_BENIGN_HOPS)
    st.script.label(deepest.event, kind)


HANDOFF_STAGERS: dict[AttackKind, Callable[[AttackKind, Stage], None]] = {
    _K.UNDELEGATED_ACTOR: _undelegated_actor,
    _K.DELEGATION_AMPLIFICATION: _delegation_amplification,
    _K.INHERITED_CREDENTIAL: _inherited_credential,
    _K.DELEGATION_EXPIRED: _delegation_expired,
    _K.DELEGATION_DEPTH_EXCEEDED: _delegation_depth_exceeded,
}
