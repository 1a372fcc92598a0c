"""The attack catalogue: each kind injects one attack into an otherwise benign workflow."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from tether.demo.catalog import (
    EXFIL_DESTINATIONS,
    MAX_BENIGN_HOPS,
    PRIVILEGED_SCOPES,
    RANK,
    ROLES,
    SENSITIVITY,
    Task,
    Tool,
)
from tether.demo.script import Actor, Event, Script, Token
from tether.demo.workflow import Handoff, Workflow, benign, play


class AttackKind(StrEnum):
    """The kinds of attack the fleet injects; each value is also the events' label."""

    STOLEN_TOKEN_REPLAY = "stolen_token_replay"
    SCOPE_ESCALATION = "scope_escalation"
    UNDELEGATED_ACTOR = "undelegated_actor"
    EXFILTRATION = "exfiltration"
    ACTIVITY_AFTER_COMPLETION = "activity_after_completion"
    TOOL_NOT_GRANTED = "tool_not_granted"
    SENSITIVITY_EXCEEDED = "sensitivity_exceeded"
    EXPIRED_CREDENTIAL = "expired_credential"
    DELEGATION_AMPLIFICATION = "delegation_amplification"
    INHERITED_CREDENTIAL = "inherited_credential"
    DELEGATION_EXPIRED = "delegation_expired"
    UNKNOWN_WORKFLOW = "unknown_workflow"
    TASK_WINDOW_EXCEEDED = "task_window_exceeded"
    DELEGATION_DEPTH_EXCEEDED = "delegation_depth_exceeded"


_K = AttackKind

#: The finding codes DESIGN.md says each attack raises, on the attacked workflow, and no others.
CODES: Mapping[AttackKind, frozenset[str]] = MappingProxyType({
    _K.STOLEN_TOKEN_REPLAY: frozenset({"credential_reuse", "identity_mismatch"}),
    _K.SCOPE_ESCALATION: frozenset({"scope_escalation"}),
    _K.UNDELEGATED_ACTOR: frozenset({"undelegated_actor"}),
    _K.EXFILTRATION: frozenset({"destination_not_granted"}),
    _K.ACTIVITY_AFTER_COMPLETION: frozenset({"activity_after_completion"}),
    _K.TOOL_NOT_GRANTED: frozenset({"tool_not_granted"}),
    _K.SENSITIVITY_EXCEEDED: frozenset({"sensitivity_exceeded"}),
    _K.EXPIRED_CREDENTIAL: frozenset({"credential_expired"}),
    _K.DELEGATION_AMPLIFICATION: frozenset({"delegation_amplification"}),
    _K.INHERITED_CREDENTIAL: frozenset({"inherited_credential"}),
    _K.DELEGATION_EXPIRED: frozenset({"delegation_expired"}),
    _K.UNKNOWN_WORKFLOW: frozenset({"unknown_workflow"}),
    _K.TASK_WINDOW_EXCEEDED: frozenset({"task_window_exceeded"}),
    _K.DELEGATION_DEPTH_EXCEEDED: frozenset({"delegation_depth_exceeded"}),
})

_NEEDS_CHAIN = {_K.DELEGATION_AMPLIFICATION, _K.INHERITED_CREDENTIAL, _K.DELEGATION_EXPIRED}


def fits(kind: AttackKind, task: Task) -> bool:
    """Whether an attack of `kind` can be staged in a workflow of `task`."""
    if kind in _NEEDS_CHAIN:
        return bool(task.chain)
    if kind is _K.DELEGATION_DEPTH_EXCEEDED:
        return len(task.chain) > MAX_BENIGN_HOPS
    if kind is _K.SENSITIVITY_EXCEEDED:
        return task.max_sensitivity != SENSITIVITY[-1]
    if kind is _K.STOLEN_TOKEN_REPLAY:
        return task.cleanup is None
    return True


def fits_victim(task: Task, thief: Task) -> bool:
    """Whether `task` can be the victim whose token the initiator of `thief` replays."""
    return task.cleanup is None and task.initiator != thief.initiator


@dataclass(frozen=True, slots=True)
class Stage:
    """Where to stage an attack: the script, the task, the ids, the start and the disorder."""

    script: Script
    task: Task
    workflow_id: str
    start_ms: int
    disorder_ms: int
    victim: tuple[Task, str] | None = None


def stage(kind: AttackKind, st: Stage) -> None:
    """Stage one attack of `kind` (plus the benign traffic around it) into `st.script`."""
    _STAGERS[kind](kind, st)


# -- helpers ---------------------------------------------------------------------------------


def _strike(  # noqa: PLR0913 - one tool-call intent, spelled out
    wf: Workflow, kind: AttackKind, actor: Actor, t: int, cred: Event, action: Event,
    delegation_id: str | None = None,
) -> Event:
    ev = wf.emit_call(actor, t, cred, action, delegation_id)
    wf.script.label(ev, kind)
    return ev


def _slot(wf: Workflow) -> tuple[Actor, int, Token, str | None]:
    """An actor and a time, inside the workflow, where that actor is entitled and its token live."""
    rng = wf.script.rng
    done = wf.completion
    assert done is not None
    if wf.handoffs and rng.random() < 0.4:
        handoff = rng.choice(wf.handoffs)
        use = rng.choice(handoff.uses)
        t = use.t + rng.randint(1, min(3000, done.t - use.t - 1))
        assert use.token is not None
        return handoff.delegatee, t, use.token, handoff.delegation["delegation_id"]
    use = rng.choice([u for u in wf.uses if u is not done])
    t = use.t + rng.randint(1, min(5000, done.t - use.t - 1))
    assert use.token is not None
    return wf.initiator, t, use.token, None


def _pick(wf: Workflow, actor: Actor, operations: tuple[str, ...]) -> Tool:
    """One of the actor's tools, preferring those with one of `operations`."""
    tools = [t for t in actor.tools if t.operation in operations] or list(actor.tools)
    return wf.script.rng.choice(tools)


def _renew_after(wf: Workflow, token: Token, t: int) -> None:
    """From `t` on, the initiator presents a refreshed copy of `token` instead of `token`."""
    renewed = wf.script.twin(token, token.scopes, t)
    for use in wf.uses:
        if use.t > t and use.token is token:
            use.event["credential"], use.token = renewed.cred, renewed


def _privileged(wf: Workflow, held: list[str]) -> str:
    avoid = set(held) | set(wf.grant["scopes"])
    return wf.script.rng.choice([s for s in PRIVILEGED_SCOPES if s not in avoid])


# -- grant attacks ---------------------------------------------------------------------------


def _tool_not_granted(kind: AttackKind, st: Stage) -> None:
    wf = benign(st.script, st.task, st.workflow_id, st.start_ms, restrict_tools=True)
    actor, t, token, dlg = _slot(wf)
    base = st.script.rng.choice(actor.tools)
    name = f"{base.name.split('.')[0]}.bulk_export"
    _strike(wf, kind, actor, t, token.cred, wf.action(base, tool=name, operation="read"), dlg)


def _sensitivity_exceeded(kind: AttackKind, st: Stage) -> None:
    wf = benign(st.script, st.task, st.workflow_id, st.start_ms)
    actor, t, token, dlg = _slot(wf)
    above = SENSITIVITY[RANK[st.task.max_sensitivity] + 1]
    action = wf.action(_pick(wf, actor, ("read",)), operation="read", data_sensitivity=above)
    _strike(wf, kind, actor, t, token.cred, action, dlg)


def _exfiltration(kind: AttackKind, st: Stage) -> None:
    wf = benign(st.script, st.task, st.workflow_id, st.start_ms, restrict_destinations=True)
    actor, t, token, dlg = _slot(wf)
    rng = st.script.rng
    action = wf.action(_pick(wf, actor, ("transfer", "write")), operation="transfer",
                       destination=rng.choice(EXFIL_DESTINATIONS),
                       data_sensitivity=rng.choice(SENSITIVITY[:2]))
    _strike(wf, kind, actor, t, token.cred, action, dlg)


def _task_window_exceeded(kind: AttackKind, st: Stage) -> None:
    wf = benign(st.script, st.task, st.workflow_id, st.start_ms)
    uses = list(wf.uses) + [u for h in wf.handoffs for u in h.uses]
    acts = sorted((u for u in uses if u.event["event_type"] != "workflow.started"
                   and u is not wf.completion), key=lambda u: u.t)
    late = st.script.rng.randint(1, min(3, len(acts) - 1))
    before, first_late = acts[-late - 1], acts[-late]
    wf.set_not_after(before.t + (first_late.t - before.t) // 2)
    for use in acts[-late:]:
        st.script.label(use.event, kind)


# -- lifecycle attacks -----------------------------------------------------------------------


def _activity_after_completion(kind: AttackKind, st: Stage) -> None:
    wf = benign(st.script, st.task, st.workflow_id, st.start_ms)
    done = wf.completion
    token = wf.uses[-1].token
    assert done is not None and token is not None
    latest = min(20_000, token.expires_ms - 1000 - done.t)
    t = done.t + st.script.rng.randint(1, latest)
    action = wf.action(st.script.rng.choice(wf.initiator.tools))
    _strike(wf, kind, wf.initiator, t, token.cred, action)


def _unknown_workflow(kind: AttackKind, st: Stage) -> None:
    rng = st.script.rng
    wf = Workflow(st.script, st.task, st.workflow_id, st.start_ms)
    rogue = wf.initiator
    scopes = sorted({tool.scope for tool in rogue.tools})
    token = st.script.token(rogue.workload_id, scopes, st.start_ms - rng.randint(200, 5000), 600)
    t = st.start_ms
    for _ in range(rng.randint(1, 3)):
        _strike(wf, kind, rogue, t, token.cred, wf.action(rng.choice(rogue.tools)))
        t += wf.gap()


# -- credential attacks ----------------------------------------------------------------------


def _scope_escalation(kind: AttackKind, st: Stage) -> None:
    wf = benign(st.script, st.task, st.workflow_id, st.start_ms)
    rng = st.script.rng
    calls = [i for i, u in enumerate(wf.uses) if u.event["event_type"] == "tool_call.intent"]
    first = rng.choice(calls[1:] or calls)
    extra = _privileged(wf, [])
    twins: dict[int, Token] = {}
    for use in wf.uses[first:]:
        assert use.token is not None
        twin = twins.get(id(use.token))
        if twin is None:
            issued = use.t - rng.randint(0, 1500) if not twins else None
            twin = st.script.twin(use.token, sorted([*use.token.scopes, extra]), issued)
            twins[id(use.token)] = twin
        use.event["credential"], use.token = twin.cred, twin
        st.script.label(use.event, kind)


def _expired_credential(kind: AttackKind, st: Stage) -> None:
    wf = benign(st.script, st.task, st.workflow_id, st.start_ms)
    done = wf.completion
    assert done is not None
    before = [u for u in wf.uses if u is not done]
    bounds = [u.t for u in before[1:]] + [done.t]

    def lapse(i: int) -> int:
        return (before[i].t // 1000 + 1) * 1000

    room = [i for i in range(len(before)) if bounds[i] - lapse(i) >= 2]
    if not room:
        wf.push_completion(lapse(len(before) - 1) + 1000)
        bounds[-1] = done.t
        room = [len(before) - 1]
    i = st.script.rng.choice(room)
    token, lapsed = before[i].token, lapse(i)
    assert token is not None
    t = lapsed + st.script.rng.randint(1, min(3000, bounds[i] - lapsed - 1))
    _renew_after(wf, token, t)
    token.set_expiry(lapsed)
    action = wf.action(st.script.rng.choice(wf.initiator.tools))
    _strike(wf, kind, wf.initiator, t, token.cred, action)


def _stolen_token_replay(kind: AttackKind, st: Stage) -> None:
    assert st.victim is not None
    rng = st.script.rng
    victim_task, victim_id = st.victim
    victim = Workflow(st.script, victim_task, victim_id, st.start_ms)
    play(victim, calls=rng.randint(2, 4), hops=0)
    thief = benign(st.script, st.task, st.workflow_id, st.start_ms + rng.randint(500, 5000))
    last = victim.uses[-1]
    stolen = last.token
    assert stolen is not None
    t = max(last.t + st.disorder_ms + rng.randint(1000, 15_000), thief.start_ms + 1000)
    assert t < stolen.expires_ms
    thief.push_completion(t)
    thief.grant["scopes"] = sorted({*thief.grant["scopes"], *stolen.scopes})
    action = thief.action(rng.choice(thief.initiator.tools))
    _strike(thief, kind, thief.initiator, t, stolen.cred, action)


# -- delegation attacks ----------------------------------------------------------------------


def _undelegated_actor(kind: AttackKind, st: Stage) -> None:
    wf = benign(st.script, st.task, st.workflow_id, st.start_ms)
    rng = st.script.rng
    if wf.handoffs and rng.random() < 0.5:
        _act_before_handoff(kind, wf, rng.choice(wf.handoffs))
        return
    taken = {wf.initiator.role} | {h.delegatee.role for h in wf.handoffs}
    role = rng.choice(sorted(set(ROLES) - taken))
    tool = rng.choice([t for t in st.task.all_tools() if t.operation in ("read", "write")])
    outsider = st.script.actor(role, (tool,))
    _, t, _, _ = _slot(wf)
    token = st.script.token(outsider.workload_id, [tool.scope], t - rng.randint(500, 20_000), 300)
    _strike(wf, kind, outsider, t, token.cred, wf.action(tool))


def _act_before_handoff(kind: AttackKind, wf: Workflow, handoff: Handoff) -> None:
    """The delegatee acts before its delegation is granted: nothing covers that act."""
    rng = wf.script.rng
    t = max(wf.start_ms + 1, handoff.granted_t - rng.randint(1000, 3000))
    token = handoff.uses[0].token
    assert token is not None
    token.set_issued(min(token.issued_ms, t - 500))
    actor = handoff.delegatee
    _strike(wf, kind, actor, t, token.cred, wf.action(rng.choice(actor.tools)))


def _delegation_amplification(kind: AttackKind, st: Stage) -> None:
    wf = benign(st.script, st.task, st.workflow_id, st.start_ms, min_hops=1)
    handoff = st.script.rng.choice(wf.handoffs)
    parent = handoff.parent
    held = wf.grant["scopes"] if parent is None else parent.delegation["scopes"]
    scopes = handoff.delegation["scopes"]
    handoff.delegation["scopes"] = sorted([*scopes, _privileged(wf, held)])
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
    _renew_after(wf, inherited, t)
    actor = handoff.delegatee
    _strike(wf, kind, actor, t, inherited.cred, wf.action(rng.choice(actor.tools)),
            handoff.delegation["delegation_id"])


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
    _strike(wf, kind, actor, t, last.token.cred, wf.action(rng.choice(actor.tools)),
            handoff.delegation["delegation_id"])


def _delegation_depth_exceeded(kind: AttackKind, st: Stage) -> None:
    wf = Workflow(st.script, st.task, st.workflow_id, st.start_ms)
    play(wf, calls=st.script.rng.randint(*st.task.calls), hops=MAX_BENIGN_HOPS + 1)
    deepest = next(h for h in wf.handoffs if h.hop == MAX_BENIGN_HOPS)
    st.script.label(deepest.event, kind)


_STAGERS: dict[AttackKind, Callable[[AttackKind, Stage], None]] = {
    _K.STOLEN_TOKEN_REPLAY: _stolen_token_replay,
    _K.SCOPE_ESCALATION: _scope_escalation,
    _K.UNDELEGATED_ACTOR: _undelegated_actor,
    _K.EXFILTRATION: _exfiltration,
    _K.ACTIVITY_AFTER_COMPLETION: _activity_after_completion,
    _K.TOOL_NOT_GRANTED: _tool_not_granted,
    _K.SENSITIVITY_EXCEEDED: _sensitivity_exceeded,
    _K.EXPIRED_CREDENTIAL: _expired_credential,
    _K.DELEGATION_AMPLIFICATION: _delegation_amplification,
    _K.INHERITED_CREDENTIAL: _inherited_credential,
    _K.DELEGATION_EXPIRED: _delegation_expired,
    _K.UNKNOWN_WORKFLOW: _unknown_workflow,
    _K.TASK_WINDOW_EXCEEDED: _task_window_exceeded,
    _K.DELEGATION_DEPTH_EXCEEDED: _delegation_depth_exceeded,
}
