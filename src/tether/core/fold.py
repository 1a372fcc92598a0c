"""The workflow fold: ``(session, event) -> session`` plus what the event revealed.

Pure: time comes in as arguments (event time drives every decision; ``now`` only stamps
records), outputs go to an ``Outbox``, and credential uses bound for the token index are
returned for the caller to route (in streaming, through a repartition by ``token_id``).
"""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass, field

from tether.core import codes as C
from tether.core.checks import Identity, Verdict, check_event
from tether.core.config import DetectionConfig
from tether.core.context import context_of
from tether.core.credentials import CredentialUse
from tether.core.ports import AllowAll, CallPolicy, PolicyOutcome
from tether.core.violations import (
    Outbox,
    Stamp,
    Violation,
    as_datetime,
    completion_revocation,
    emit,
)
from tether.models.events import (
    DelegationGranted,
    InputEvent,
    ToolCallIntent,
    WorkflowCompleted,
    WorkflowStarted,
)
from tether.models.outputs import Decision
from tether.models.session import (
    ActRef,
    DelegationRec,
    Pending,
    Session,
    StartInfo,
    TokenSeen,
    UseRec,
)

_SEEN_PRUNE_AT = 4096  # event ids remembered per workflow before old ones are pruned
_SEEN_SLACK = 1.125  # see _expire_seen
_RECENT_LIST_MAX = 32  # see _remember
_INF = float("inf")


@dataclass(frozen=True, slots=True)
class Context:
    """What the fold needs besides state and event: tuning and the per-call policy."""

    cfg: DetectionConfig
    policy: CallPolicy = field(default_factory=AllowAll)


def fold(
    session: Session | None,
    event: InputEvent,
    ctx: Context,
    now: Stamp,
    out: Outbox,
    uses: list[CredentialUse],
) -> Session:
    """Apply one event to its workflow's session. Duplicate ``event_id``s are ignored."""
    s = session if session is not None else Session(event.workflow_id)
    seen = s.seen
    if event.event_id in seen:
        return s
    t = event.t
    seen[event.event_id] = t
    s.last_time = max(s.last_time, t)
    cfg = ctx.cfg
    if len(seen) > _SEEN_PRUNE_AT:
        _expire_seen(s, cfg.dedup_window_s)
    cred = event.credential
    trust = event.trust
    # A token id only an untrusted source vouches for is nobody's to revoke (docs/SECURITY.md):
    # it is not tracked for completion, not reported to the token index, not kept for late checks.
    token_ok = trust is None or trust.token_trusted
    if type(event) is WorkflowStarted:
        if s.started is None:
            s.started = StartInfo.of(event.agent.workload_id, t, event.event_id, event.grant)
    elif type(event) is DelegationGranted:
        _add_delegation(s, event)
    if cred is not None and token_ok:
        _track_token(s, cred.token_id, cred.expires_t, t, event.event_id, cfg, now, out)
    kind = type(event)
    if (kind is ToolCallIntent or kind is DelegationGranted) and cred is not None:
        token_id = cred.token_id if token_ok else ""
        act = ActRef(t, event.event_id, event.agent.workload_id, token_id, cred.expires_t)
        if kind is ToolCallIntent:
            _remember(s, act, cfg.grace_s)
        # a delegation in a workflow never started is as unknown as a call in one
        if (s.started is None or s.started.started_at > t) and (
            s.unknown is None or (t, act.event_id) < (s.unknown.t, s.unknown.event_id)
        ):
            s.unknown = act  # the earliest call not preceded by the workflow's start
    elif type(event) is WorkflowCompleted:
        _complete(s, event, t, cfg, now, out)
    _evaluate(s, event, t, ctx, now, out, uses, final=False)
    return s


def _add_delegation(s: Session, event: DelegationGranted) -> None:
    s.add_delegation(DelegationRec.of(event))  # a delegation id known before keeps the first


def _expire_seen(s: Session, window: float) -> None:
    """Bound a busy workflow's event ids by time even when nothing wakes its session.

    Prunes once the first id remembered is older than ``window`` by an eighth more, so that at
    least an eighth of a window of event time passes between two scans (amortized O(1) per
    event); ids are remembered for at least ``window`` of event time either way.
    """
    seen = s.seen
    if next(iter(seen.values())) < s.last_time - window * _SEEN_SLACK:
        _prune_seen(s, s.last_time - window)


def _prune_seen(s: Session, horizon: float) -> None:
    """Forget event ids dated before ``horizon`` (the dedup window's start)."""
    s.seen = {k: v for k, v in s.seen.items() if v >= horizon}


def _remember(s: Session, act: ActRef, grace: float) -> None:
    """Keep recent calls for one grace period, to judge a completion that arrives late.

    A short list (most workflows make a few calls per grace period); a deque once it grows,
    so that a burst of calls into one workflow trims in O(1) per call.
    """
    recent = s.recent
    if recent is None:
        s.recent = [act]
        return
    horizon = s.last_time - grace  # the watermark is at least last_time
    while recent and recent[0].t < horizon:
        del recent[0]
    recent.append(act)
    if len(recent) > _RECENT_LIST_MAX and type(recent) is list:
        s.recent = deque(recent)


def _track_token(
    s: Session,
    token_id: str,
    expires: float,
    t: float,
    event_id: str,
    cfg: DetectionConfig,
    now: Stamp,
    out: Outbox,
) -> None:
    seen = s.token(token_id)
    if seen is None:
        s.add_token(TokenSeen(token_id, t, expires, event_id))
    elif t < seen.first_use:
        seen.first_use, seen.event_id = t, event_id
    done = s.completed_at
    if done is not None and t <= done:
        _revoke_on_completion(s, token_id, expires, done, event_id, cfg, now, out)


def _revoke_on_completion(
    s: Session,
    token_id: str,
    expires: float,
    done: float,
    evidence: str,
    cfg: DetectionConfig,
    now: Stamp,
    out: Outbox,
) -> None:
    if not cfg.revoke_on_completion or cfg.shadow:
        return
    revoked = s.completion_revoked
    if revoked is None:
        s.completion_revoked = revoked = set()
    elif token_id in revoked:
        return
    revoked.add(token_id)
    out.revocations.append(
        completion_revocation(s.workflow_id, token_id, expires, done, evidence, cfg, now)
    )


def _complete(
    s: Session, event: WorkflowCompleted, t: float, cfg: DetectionConfig, now: Stamp, out: Outbox
) -> None:
    if s.completed_at is not None and s.completed_at <= t:
        return
    s.completed_at = t
    s.rewake = True
    s.completed_event = event.event_id
    for act in s.recent or ():
        if act.t > t:
            _late_after_completion(s, act, t, cfg, now, out)
    for seen in s.tokens:
        if seen.first_use <= t:  # tokens first used after completion: see activity_after_completion
            _revoke_on_completion(
                s, seen.token_id, seen.expires_at, t, event.event_id, cfg, now, out
            )


def _late_after_completion(
    s: Session, act: ActRef, done: float, cfg: DetectionConfig, now: Stamp, out: Outbox
) -> None:
    start = s.started
    v = Violation(
        code=C.ACTIVITY_AFTER_COMPLETION,
        key=(s.workflow_id, act.workload_id, act.token_id),
        workflow_id=s.workflow_id,
        workload_id=act.workload_id,
        event_time=act.t,
        evidence=(act.event_id, s.completed_event or ""),
        summary=f"tool call {act.t - done:.3f}s after the workflow completed",
        token_id=act.token_id or None,
        token_expires=act.token_expires,
        workflow_not_after=start.not_after if start is not None else None,
    )
    _fire(s, v, cfg, now, out)


def _fire(s: Session, v: Violation, cfg: DetectionConfig, now: Stamp, out: Outbox) -> None:
    if not cfg.enabled(v.code):
        return
    fid = v.finding_id
    fired = s.fired
    if fired is None:
        s.fired = fired = set()
    elif fid in fired:
        return
    fired.add(fid)
    emit(v, cfg, now, out)


def _evaluate(
    s: Session,
    event: InputEvent,
    t: float,
    ctx: Context,
    now: Stamp,
    out: Outbox,
    uses: list[CredentialUse],
    *,
    final: bool,
) -> None:
    cfg = ctx.cfg
    verdict = check_event(s, event, final=final, max_chain=cfg.max_chain_length)
    outcome = None
    if type(event) is ToolCallIntent and verdict.standing is not None and verdict.standing.covered:
        outcome = ctx.policy.check(s, event, verdict.standing)
        if not outcome.allowed:
            verdict.violations.append(_policy_violation(s, event, t, outcome))
    trust = event.trust
    where = context_of(s, event) if verdict.violations else None
    for v in verdict.violations:
        if trust is not None:
            v.trust = trust
        v.context = where
        _fire(s, v, cfg, now, out)
    cred = event.credential
    if (
        cred is not None
        and verdict.identity is not Identity.PENDING
        and (trust is None or trust.token_trusted)
    ):
        _record_use(s, event, t, verdict)
    if verdict.waiting and not final:
        s.seq += 1
        wait = Pending(t + cfg.grace_s, s.seq, event)
        if s.pending is None:
            s.pending = [wait]
        else:
            s.pending.append(wait)
        s.rewake = True
    elif type(event) is ToolCallIntent and cfg.emit_decisions:
        out.decisions.append(_decision(event, verdict, outcome, now))


def _record_use(s: Session, event: InputEvent, t: float, verdict: Verdict) -> None:
    """Remember a credential use. It is reported to the token index once it has settled (a
    grace period after its event time), so that the earliest use of each (token, workload) in
    this workflow is known for sure: credential_reuse compares those across workflows."""
    cred = event.credential
    assert cred is not None  # noqa: S101  # checked by the caller
    token = s.token(cred.token_id)
    if token is None:  # tracked when the event was folded; kept robust all the same
        token = s.add_token(TokenSeen(cred.token_id, t, cred.expires_t, event.event_id))
    workload = event.agent.workload_id
    inherited = verdict.identity is Identity.INHERITED
    rec = token.use_by(workload)
    if rec is None:
        expires = cred.expires_t
        if expires == token.expires_at:
            expires = token.expires_at  # one float object for both
        owner = cred.subject == workload
        workload = sys.intern(workload)  # workload ids repeat across the fleet
        token.record(UseRec(workload, t, event.event_id, inherited, expires, False, owner))
        s.unsettled += 1
        s.rewake = True
        return
    earlier = (t, event.event_id) < (rec.t, rec.event_id)
    if earlier:
        rec.t, rec.event_id = t, event.event_id
    if rec.inherited and not inherited:
        rec.inherited = False
    elif not earlier:
        return
    if rec.reported:  # changed after it settled (a late event): report again, the index takes min
        rec.reported = False
        s.unsettled += 1
        s.rewake = True


def _settle_uses(s: Session, watermark: float, grace: float, uses: list[CredentialUse]) -> None:
    for token in s.tokens:
        for rec in token.recorded():
            if rec.reported or rec.t + grace >= watermark:
                continue
            rec.reported = True
            s.unsettled -= 1
            uses.append(
                CredentialUse(
                    token_id=token.token_id,
                    workload_id=rec.workload_id,
                    workflow_id=s.workflow_id,
                    t=rec.t,
                    event_id=rec.event_id,
                    inherited=rec.inherited,
                    expires_at=rec.expires_at,
                    owner=rec.owner,
                )
            )


def _policy_violation(
    s: Session, event: ToolCallIntent, t: float, outcome: PolicyOutcome
) -> Violation:
    action = event.action
    cred = event.credential
    start = s.started
    ids = ", ".join(outcome.policy_ids) or "(none)"
    return Violation(
        code=C.POLICY_DENIED,
        key=(
            s.workflow_id,
            event.agent.workload_id,
            cred.token_id,
            action.tool,
            action.operation,
            *outcome.policy_ids,
        ),
        workflow_id=s.workflow_id,
        workload_id=event.agent.workload_id,
        event_time=t,
        evidence=(event.event_id,),
        summary=f"policy {ids} forbids {action.operation} with {action.tool}",
        token_id=cred.token_id,
        token_expires=cred.expires_t,
        workflow_not_after=start.not_after if start is not None else None,
        severity=outcome.severity,
        policy_ids=outcome.policy_ids,
    )


def _decision(
    event: ToolCallIntent, verdict: Verdict, outcome: PolicyOutcome | None, now: Stamp
) -> Decision:
    codes = sorted({v.code for v in verdict.violations})
    trust = event.trust
    return Decision(
        event_id=event.event_id,
        workflow_id=event.workflow_id,
        workload_id=event.agent.workload_id,
        tool=event.action.tool,
        decision="deny" if codes or (outcome is not None and not outcome.allowed) else "allow",
        findings=codes,
        policy_ids=list(outcome.policy_ids) if outcome is not None else [],
        policy_revision=outcome.revision if outcome is not None else None,
        evaluated_at=as_datetime(now),
        authenticated=trust.authenticated if trust is not None else None,
        source=trust.source if trust is not None else None,
        credential_verified=trust.credential_verified if trust is not None else None,
    )


def fire_due(
    s: Session,
    watermark: float,
    ctx: Context,
    now: Stamp,
    out: Outbox,
    uses: list[CredentialUse],
) -> Session | None:
    """Decide every check due before ``watermark``, then compact or drop the session when its
    time has come. Returns ``None`` when the session should be deleted."""
    cfg = ctx.cfg
    grace = cfg.grace_s
    if s.pending:
        due = [p for p in s.pending if p.deadline < watermark]
        if due:
            s.pending = [p for p in s.pending if p.deadline >= watermark] or None
            due.sort(key=lambda p: (p.deadline, p.seq))
            for p in due:
                t = p.event.t
                _evaluate(s, p.event, t, ctx, now, out, uses, final=True)
    if s.unsettled:
        _settle_uses(s, watermark, grace, uses)
    first = s.unknown
    if first is not None and not s.unknown_done and first.t + grace < watermark:
        s.unknown_done = True
        if s.started is None or s.started.started_at > first.t:
            _fire(
                s,
                Violation(
                    code=C.UNKNOWN_WORKFLOW,
                    key=(s.workflow_id,),
                    workflow_id=s.workflow_id,
                    workload_id=first.workload_id,
                    event_time=first.t,
                    evidence=(first.event_id,),
                    summary="tool calls in a workflow that was never started",
                    token_id=first.token_id or None,
                    token_expires=first.token_expires,
                ),
                cfg,
                now,
                out,
            )
    recent = s.recent
    if recent is not None:
        while recent and recent[0].t + grace < watermark:
            del recent[0]
        if not recent:
            s.recent = None
    return _lifecycle(s, watermark, cfg)


def _lifecycle(s: Session, watermark: float, cfg: DetectionConfig) -> Session | None:
    done = s.completed_at
    if done is not None:
        if watermark > done + max(cfg.completed_retention_s, cfg.grace_s):
            return None
        if not s.compacted and watermark > max(done, s.last_time) + cfg.grace_s and not s.pending:
            _compact(s)
    elif watermark > s.last_time + cfg.idle_timeout_s:
        return None
    if len(s.seen) > _SEEN_PRUNE_AT:
        _prune_seen(s, watermark - cfg.dedup_window_s)
    return s


def _compact(s: Session) -> None:
    """Free what a completed workflow no longer needs; keep what judges late activity."""
    s.compacted = True
    s.seen = {}
    s.unsettled = 0
    s.forget_tokens()
    s.recent = None


def wake_at(s: Session, cfg: DetectionConfig) -> float:
    """The event time after which ``fire_due`` has something to do for this session."""
    grace = cfg.grace_s
    due = min(p.deadline for p in s.pending) if s.pending else _INF
    if s.unknown is not None and not s.unknown_done:
        due = min(due, s.unknown.t + grace)
    if s.unsettled:
        unreported = (r.t for tok in s.tokens for r in tok.recorded() if not r.reported)
        due = min(due, min(unreported) + grace)
    done = s.completed_at
    if done is not None:
        if not s.compacted:
            due = min(due, max(done, s.last_time) + grace)
        return min(due, done + max(cfg.completed_retention_s, grace))
    return min(due, s.last_time + cfg.idle_timeout_s)
