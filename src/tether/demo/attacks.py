"""Stage each attack kind: grant, lifecycle and credential attacks, and the dispatch table."""

from __future__ import annotations

from collections.abc import Callable

from tether.demo.catalog import EXFIL_DESTINATIONS, RANK, SENSITIVITY
from tether.demo.handoffs import HANDOFF_STAGERS
from tether.demo.kinds import AttackKind
from tether.demo.script import Token
from tether.demo.staging import Stage, pick, privileged, renew_after, slot, strike
from tether.demo.workflow import Workflow, benign, play

_K = AttackKind


def stage(kind: AttackKind, st: Stage) -> None:
    """Stage one attack of `kind` (plus the benign traffic around it) into `st.script`."""
    _STAGERS[kind](kind, st)


# -- grant attacks ---------------------------------------------------------------------------


def _tool_not_granted(kind: AttackKind, st: Stage) -> None:
    wf = benign(st.script, st.task, st.workflow_id, st.start_ms, restrict_tools=True)
    actor, t, token, dlg = slot(wf)
    base = st.script.rng.choice(actor.tools)
    name = f"{base.name.split('.')[0]}.bulk_export"
    strike(wf, kind, actor, t, token.cred, wf.action(base, tool=name, operation="read"), dlg)


def _sensitivity_exceeded(kind: AttackKind, st: Stage) -> None:
    wf = benign(st.script, st.task, st.workflow_id, st.start_ms)
    actor, t, token, dlg = slot(wf)
    above = SENSITIVITY[RANK[st.task.max_sensitivity] + 1]
    action = wf.action(pick(wf, actor, ("read",)), operation="read", data_sensitivity=above)
    strike(wf, kind, actor, t, token.cred, action, dlg)


def _exfiltration(kind: AttackKind, st: Stage) -> None:
    wf = benign(st.script, st.task, st.workflow_id, st.start_ms, restrict_destinations=True)
    actor, t, token, dlg = slot(wf)
    rng = st.script.rng
    action = wf.action(
        pick(wf, actor, ("transfer", "write")),
        operation="transfer",
        destination=rng.choice(EXFIL_DESTINATIONS),
        data_sensitivity=rng.choice(SENSITIVITY[:2]),
    )
    strike(wf, kind, actor, t, token.cred, action, dlg)


def _task_window_exceeded(kind: AttackKind, st: Stage) -> None:
    wf = benign(st.script, st.task, st.workflow_id, st.start_ms)
    uses = list(wf.uses) + [u for h in wf.handoffs for u in h.uses]
    acts = sorted(
        (u for u in uses if u.event["event_type"] != "workflow.started" and u is not wf.completion),
        key=lambda u: u.t,
    )
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
    assert done is not None
    assert token is not None
    latest = min(20_000, token.expires_ms - 1000 - done.t)
    t = done.t + st.script.rng.randint(1, latest)
    action = wf.action(st.script.rng.choice(wf.initiator.tools))
    strike(wf, kind, wf.initiator, t, token.cred, action)


def _unknown_workflow(kind: AttackKind, st: Stage) -> None:
    rng = st.script.rng
    wf = Workflow(st.script, st.task, st.workflow_id, st.start_ms)
    rogue = wf.initiator
    scopes = sorted({tool.scope for tool in rogue.tools})
    token = st.script.token(rogue.workload_id, scopes, st.start_ms - rng.randint(200, 5000), 600)
    t = st.start_ms
    for _ in range(rng.randint(1, 3)):
        strike(wf, kind, rogue, t, token.cred, wf.action(rng.choice(rogue.tools)))
        t += wf.gap()


# -- credential attacks ----------------------------------------------------------------------


def _scope_escalation(kind: AttackKind, st: Stage) -> None:
    wf = benign(st.script, st.task, st.workflow_id, st.start_ms)
    rng = st.script.rng
    calls = [i for i, u in enumerate(wf.uses) if u.event["event_type"] == "tool_call.intent"]
    first = rng.choice(calls[1:] or calls)
    extra = privileged(wf, [])
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

    room = [i for i in range(len(before)) if bounds[i] - lapse(i) > 1]
    if not room:
        wf.push_completion(lapse(len(before) - 1) + 1000)
        bounds[-1] = done.t
        room = [len(before) - 1]
    i = st.script.rng.choice(room)
    token, lapsed = before[i].token, lapse(i)
    assert token is not None
    t = lapsed + st.script.rng.randint(1, min(3000, bounds[i] - lapsed - 1))
    renew_after(wf, token, t)
    token.set_expiry(lapsed)
    action = wf.action(st.script.rng.choice(wf.initiator.tools))
    strike(wf, kind, wf.initiator, t, token.cred, action)


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
    strike(thief, kind, thief.initiator, t, stolen.cred, action)


_STAGERS: dict[AttackKind, Callable[[AttackKind, Stage], None]] = {
    _K.STOLEN_TOKEN_REPLAY: _stolen_token_replay,
    _K.SCOPE_ESCALATION: _scope_escalation,
    _K.EXFILTRATION: _exfiltration,
    _K.ACTIVITY_AFTER_COMPLETION: _activity_after_completion,
    _K.TOOL_NOT_GRANTED: _tool_not_granted,
    _K.SENSITIVITY_EXCEEDED: _sensitivity_exceeded,
    _K.EXPIRED_CREDENTIAL: _expired_credential,
    _K.UNKNOWN_WORKFLOW: _unknown_workflow,
    _K.TASK_WINDOW_EXCEEDED: _task_window_exceeded,
    **HANDOFF_STAGERS,
}
