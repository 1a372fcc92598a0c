"""Shared tools for staging an attack inside an otherwise benign workflow."""

from __future__ import annotations

from dataclasses import dataclass

from tether.demo.catalog import PRIVILEGED_SCOPES, Task, Tool
from tether.demo.kinds import AttackKind
from tether.demo.script import Actor, Event, Script, Token
from tether.demo.workflow import Workflow

#: Share of in-workflow attacks acted out by a delegatee rather than the initiator.
DELEGATEE_SLOT_SHARE = 0.4


@dataclass(frozen=True, slots=True)
class Stage:
    """Where to stage an attack: the script, the task, the ids, the start and the disorder."""

    script: Script
    task: Task
    workflow_id: str
    start_ms: int
    disorder_ms: int
    victim: tuple[Task, str] | None = None


def strike(
    wf: Workflow,
    kind: AttackKind,
    actor: Actor,
    t: int,
    cred: Event,
    action: Event,
    delegation_id: str | None = None,
) -> Event:
    """Emit the attack's tool call exactly as given and label it with `kind`."""
    ev = wf.emit_call(actor, t, cred, action, delegation_id)
    wf.script.label(ev, kind)
    return ev


def slot(wf: Workflow) -> tuple[Actor, int, Token, str | None]:
    """An actor and a time, inside the workflow, where that actor is entitled and its token live."""
    rng = wf.script.rng
    done = wf.completion
    assert done is not None
    if wf.handoffs and rng.random() < DELEGATEE_SLOT_SHARE:
        handoff = rng.choice(wf.handoffs)
        use = rng.choice(handoff.uses)
        t = use.t + rng.randint(1, min(3000, done.t - use.t - 1))
        assert use.token is not None
        return handoff.delegatee, t, use.token, handoff.delegation["delegation_id"]
    use = rng.choice([u for u in wf.uses if u is not done])
    t = use.t + rng.randint(1, min(5000, done.t - use.t - 1))
    assert use.token is not None
    return wf.initiator, t, use.token, None


def pick(wf: Workflow, actor: Actor, operations: tuple[str, ...]) -> Tool:
    """One of the actor's tools, preferring those with one of `operations`."""
    tools = [t for t in actor.tools if t.operation in operations] or list(actor.tools)
    return wf.script.rng.choice(tools)


def renew_after(wf: Workflow, token: Token, t: int) -> None:
    """From `t` on, the initiator presents a refreshed copy of `token` instead of `token`."""
    renewed = wf.script.twin(token, token.scopes, t)
    for use in wf.uses:
        if use.t > t and use.token is token:
            use.event["credential"], use.token = renewed.cred, renewed


def privileged(wf: Workflow, held: list[str]) -> str:
    """A privileged scope that neither `held` nor the workflow's grant contains."""
    avoid = set(held) | set(wf.grant["scopes"])
    return wf.script.rng.choice([s for s in PRIVILEGED_SCOPES if s not in avoid])
