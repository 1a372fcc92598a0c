"""One workflow's benign life: start, tool calls, a delegation chain, token refreshes, completion."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache

from tether.demo.catalog import MAX_BENIGN_HOPS, RANK, Task, Tool
from tether.demo.encoding import stamp
from tether.demo.script import Actor, Event, Script, Token

#: A holder refreshes its token once less than this much of its life is left.
REFRESH_MARGIN_MS = 60_000
_INITIATOR_LIFETIMES_S = (120, 180, 300, 300, 600, 600, 900)
_DELEGATEE_LIFETIMES_S = (300, 600)
_OUTCOMES = ("success",) * 18 + ("failure", "cancelled")
#: Shares of: initiators whose SDK rotates the token early; completions that present a credential
#: (it is optional there); batch jobs that clean up staging; delegatees whose token carries all
#: of the delegation's scopes rather than just those their own tools need.
_ROTATE_SHARE = 0.2
_COMPLETION_CREDENTIAL_SHARE = 0.85
_CLEANUP_SHARE = 0.5
_FULL_DELEGATION_TOKEN_SHARE = 0.3
_HOUR_MS, _DAY_MS = 3_600_000, 86_400_000
_SATURDAY, _OPENS, _CLOSES = 5, 6, 20
#: Relative odds of a benign delegation chain 0, 1, 2 and 3 hops deep.
_HOP_WEIGHTS = (20, 35, 35, 10)


@lru_cache(maxsize=256)
def permitted(tool: Tool, max_sensitivity: str) -> tuple[str, ...]:
    """The tool's data sensitivities that stay within `max_sensitivity`."""
    ok = tuple(s for s in tool.sensitivities if RANK[s] <= RANK[max_sensitivity])
    return ok or ("public",)


def _draw(rng: random.Random, options: tuple[str, ...]) -> str:
    """`rng.choice` for the hot path (one float instead of several bit draws)."""
    return options[int(rng.random() * len(options))]


def business_hours(ms: int) -> bool:
    """Monday to Friday, 06:00 to 19:59 UTC (1970-01-01, day 0, was a Thursday)."""
    weekday = (ms // _DAY_MS + 3) % 7
    return weekday < _SATURDAY and _OPENS <= (ms // _HOUR_MS) % 24 < _CLOSES


@dataclass(slots=True, eq=False)
class Use:
    """One event an actor emitted, and the token it presented (None when it presented none)."""

    t: int
    event: Event
    token: Token | None


@dataclass(slots=True, eq=False)
class Handoff:
    """A delegation: the granting event, both parties and what the delegatee then did."""

    event: Event
    delegator: Actor
    delegatee: Actor
    hop: int
    granted_t: int
    parent: Handoff | None
    uses: list[Use] = field(default_factory=list)

    @property
    def delegation(self) -> Event:
        """The event's `delegation` object."""
        d: Event = self.event["delegation"]
        return d


class Workflow:
    """Emits one workflow's events into a script and remembers enough to inject attacks."""

    def __init__(
        self,
        script: Script,
        task: Task,
        workflow_id: str,
        start_ms: int,
        *,
        restrict_tools: bool = False,
        restrict_destinations: bool = False,
    ) -> None:
        rng = script.rng
        self.script, self.task, self.workflow_id = script, task, workflow_id
        self.start_ms = start_ms
        self.trace_id = script.ids.trace_id()
        self.initiator = script.actor(task.initiator, task.tools)
        open_tools = not restrict_tools and rng.random() < task.unrestricted_tools
        open_dest = not restrict_destinations and rng.random() < task.unrestricted_destinations
        tools = task.all_tools()
        self.grant: Event = {
            "task_type": task.name,
            "purpose": task.purpose,
            "scopes": task.scopes(),
            "tools": [] if open_tools else sorted({t.name for t in tools}),
            "max_sensitivity": task.max_sensitivity,
            "destinations": [] if open_dest else sorted({t.destination for t in tools}),
            "not_after": "",
            "autonomy": task.autonomy,
        }
        self.uses: list[Use] = []
        self.handoffs: list[Handoff] = []
        self.completion: Use | None = None
        self.not_after_ms = 0

    # -- emitting ---------------------------------------------------------------------------

    def _envelope(self, event_type: str, actor: Actor, t: int, cred: Event | None) -> Event:
        inst = actor.instance
        ev: Event = {
            "schema_version": 1,
            "event_type": event_type,
            "event_id": self.script.ids.event_id(t),
            "occurred_at": stamp(t, inst.offset, inst.suffix),
            "workflow_id": self.workflow_id,
            "agent": inst.agent,
        }
        if cred is not None:
            ev["credential"] = cred
        return ev

    def action(self, spec: Tool, /, **override: str) -> Event:
        """An `action` object for tool `spec`, drawing a resource and a permitted sensitivity."""
        rng = self.script.rng
        act: Event = {
            "tool": spec.name,
            "operation": spec.operation,
            "resource": f"{spec.resource}{rng.getrandbits(17) + 1}",
            "destination": spec.destination,
            "data_sensitivity": _draw(rng, permitted(spec, self.task.max_sensitivity)),
        }
        act.update(override)
        return act

    def emit_call(
        self,
        actor: Actor,
        t: int,
        cred: Event | None,
        action: Event,
        delegation_id: str | None = None,
    ) -> Event:
        """Emit a `tool_call.intent` as given: no refresh, no bookkeeping.

        A high-autonomy workflow touches restricted data only in business hours (the default
        Cedar pack's `tether.data.restricted-after-hours`); outside them it works on
        confidential data instead, so no call of the fleet is denied by policy.
        """
        ev = self._envelope("tool_call.intent", actor, t, cred)
        high = self.grant["autonomy"] == "high"
        if high and action["data_sensitivity"] == "restricted" and not business_hours(t):
            action["data_sensitivity"] = "confidential"
        ev["action"] = action
        if delegation_id is not None:
            ev["delegation_id"] = delegation_id
        if self.script.extra_fields:
            ev["trace_id"] = self.trace_id
        return self.script.add(t, ev)

    def refresh(self, actor: Actor, t: int, lifetimes: tuple[int, ...]) -> Token:
        """Give `actor` a fresh token (new jti, same scopes) unless its current one is good."""
        held = actor.token
        if held is not None and t + REFRESH_MARGIN_MS <= held.expires_ms:
            return held
        scopes = held.scopes if held is not None else []
        issued = t - self.script.rng.randint(0, 1500)
        actor.token = self.script.token(
            actor.workload_id, scopes, issued, self.script.rng.choice(lifetimes)
        )
        return actor.token

    def rotate(self, actor: Actor, t: int) -> None:
        """Proactively replace `actor`'s token (SDKs rotate early): new jti, same scopes."""
        held = actor.token
        assert held is not None
        actor.token = self.script.token(
            actor.workload_id,
            held.scopes,
            t - self.script.rng.randint(0, 1500),
            self.script.rng.choice(self._lifetimes(actor)),
        )

    def _lifetimes(self, actor: Actor) -> tuple[int, ...]:
        return _INITIATOR_LIFETIMES_S if actor is self.initiator else _DELEGATEE_LIFETIMES_S

    def start(self, t: int) -> None:
        """Emit `workflow.started`: the initiator's first token and the grant."""
        rng = self.script.rng
        init = self.initiator
        init.token = self.script.token(
            init.workload_id,
            self.grant["scopes"],
            t - rng.randint(200, 5000),
            rng.choice(_INITIATOR_LIFETIMES_S),
        )
        ev = self._envelope("workflow.started", init, t, init.token.cred)
        ev["grant"] = self.grant
        self.uses.append(Use(t, self.script.add(t, ev), init.token))

    def call(
        self, actor: Actor, t: int, handoff: Handoff | None = None, tool: Tool | None = None
    ) -> Event:
        """Emit a benign tool call by `actor` with its (refreshed) own token."""
        token = self.refresh(actor, t, self._lifetimes(actor))
        chosen = tool or self.script.rng.choice(actor.tools)
        dlg = handoff.delegation["delegation_id"] if handoff else None
        ev = self.emit_call(actor, t, token.cred, self.action(chosen), dlg)
        (handoff.uses if handoff else self.uses).append(Use(t, ev, token))
        return ev

    def delegate(
        self,
        delegator: Actor,
        delegatee: Actor,
        scopes: list[str],
        t: int,
        parent: Handoff | None,
    ) -> Handoff:
        """Emit `delegation.granted`; `set_delegation_expiry` settles `expires_at`."""
        token = self.refresh(delegator, t, self._lifetimes(delegator))
        ev = self._envelope("delegation.granted", delegator, t, token.cred)
        ev["delegation"] = {
            "delegation_id": self.script.ids.delegation_id(),
            "to_workload_id": delegatee.workload_id,
            "scopes": list(scopes),
            "expires_at": "",
        }
        self.script.add(t, ev)
        hop = parent.hop + 1 if parent else 0
        handoff = Handoff(ev, delegator, delegatee, hop, t, parent)
        (parent.uses if parent else self.uses).append(Use(t, ev, token))
        self.handoffs.append(handoff)
        return handoff

    def set_delegation_expiry(self, handoff: Handoff, ms: int) -> None:
        """Set when `handoff`'s delegation expires (written in the delegator's offset)."""
        inst = handoff.delegator.instance
        handoff.delegation["expires_at"] = stamp(ms, inst.offset, inst.suffix)

    def complete(self, t: int) -> None:
        """Emit `workflow.completed`, usually presenting the initiator's token."""
        rng = self.script.rng
        init = self.initiator
        token = (
            self.refresh(init, t, _INITIATOR_LIFETIMES_S)
            if rng.random() < _COMPLETION_CREDENTIAL_SHARE
            else None
        )
        ev = self._envelope("workflow.completed", init, t, token.cred if token else None)
        ev["outcome"] = rng.choice(_OUTCOMES)
        self.completion = Use(t, self.script.add(t, ev), token)
        if token is not None:
            self.uses.append(self.completion)

    def seal(self) -> None:
        """Fix the grant's `not_after` comfortably after completion, on a whole minute."""
        assert self.completion is not None
        end = self.completion.t + self.script.rng.randint(5, 30) * 60_000
        self.set_not_after(end - end % 60_000 + 60_000)

    def set_not_after(self, ms: int) -> None:
        """Set the grant's task window end (written in the initiator's offset)."""
        inst = self.initiator.instance
        self.grant["not_after"] = stamp(ms, inst.offset, inst.suffix)
        self.not_after_ms = ms

    def push_completion(self, after_ms: int) -> None:
        """Move `workflow.completed` (the workflow's last event) to later than `after_ms`."""
        done = self.completion
        assert done is not None
        if done.t > after_ms:
            return
        t = after_ms + self.script.rng.randint(300, 2000)
        inst = self.initiator.instance
        done.event["occurred_at"] = stamp(t, inst.offset, inst.suffix)
        self.script.retime(done.event, t)
        done.t = t
        if done.token is not None and t > done.token.expires_ms:
            del done.event["credential"]
            self.uses.remove(done)
            done.token = None
        if t + 5 * 60_000 > self.not_after_ms:
            self.seal()

    def gap(self) -> int:
        """Think time between two of the initiator's steps."""
        lo, hi = self.task.gap_ms
        return self.script.rng.randint(lo, hi)


def play(wf: Workflow, *, calls: int, hops: int) -> None:
    """Run a benign workflow: `calls` initiator calls, one delegation phase `hops` deep."""
    rng = wf.script.rng
    t = wf.start_ms
    wf.start(t)
    phase_at = rng.randrange(calls - 1) if hops else -1
    rotate_at = rng.randrange(1, calls) if rng.random() < _ROTATE_SHARE else -1
    for i in range(calls):
        t += wf.gap()
        if i == rotate_at:
            wf.rotate(wf.initiator, t)
        wf.call(wf.initiator, t)
        if i == phase_at:
            t = _hand_off(wf, wf.initiator, None, hops, t)
    cleanup = wf.task.cleanup
    if cleanup is not None and rng.random() < _CLEANUP_SHARE:
        t += wf.gap()
        wf.call(wf.initiator, t, tool=cleanup)
    wf.complete(t + wf.gap())
    wf.seal()


def _hand_off(wf: Workflow, delegator: Actor, parent: Handoff | None, hops: int, t: int) -> int:
    """Delegate to the next hop of the chain, let it work (and maybe delegate); return the time."""
    rng = wf.script.rng
    hop = parent.hop + 1 if parent else 0
    spec = wf.task.chain[hop]
    delegatee = wf.script.actor(spec.role, spec.tools)
    t += rng.randint(100, 2000)
    handoff = wf.delegate(delegator, delegatee, wf.task.hop_scopes(hop, hops), t, parent)
    own = sorted({tool.scope for tool in spec.tools})
    scopes = handoff.delegation["scopes"] if rng.random() < _FULL_DELEGATION_TOKEN_SHARE else own
    delegatee.token = wf.script.token(
        delegatee.workload_id, scopes, t + rng.randint(5, 400), rng.choice(_DELEGATEE_LIFETIMES_S)
    )
    acts = rng.randint(1, 4)
    deeper = rng.randrange(acts) if hop + 1 < hops else -1
    t += rng.randint(20, 1500)
    for j in range(acts):
        if j:
            t += rng.randint(200, 2500)
        wf.call(delegatee, t, handoff)
        if j == deeper:
            t = _hand_off(wf, delegatee, handoff, hops, t)
    wf.set_delegation_expiry(handoff, t + rng.randint(60, 600) * 1000)
    return t


def benign(
    script: Script,
    task: Task,
    workflow_id: str,
    start_ms: int,
    *,
    min_hops: int = 0,
    restrict_tools: bool = False,
    restrict_destinations: bool = False,
) -> Workflow:
    """Build and play one benign workflow of `task` starting at `start_ms`."""
    rng = script.rng
    wf = Workflow(
        script,
        task,
        workflow_id,
        start_ms,
        restrict_tools=restrict_tools,
        restrict_destinations=restrict_destinations,
    )
    deepest = min(len(task.chain), MAX_BENIGN_HOPS)
    options = [h for h in range(deepest + 1) if h >= min_hops]
    hops = rng.choices(options, [_HOP_WEIGHTS[h] for h in options])[0]
    play(wf, calls=rng.randint(*task.calls), hops=hops)
    return wf
