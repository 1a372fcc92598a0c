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
from tether.core.context import context_of, delegation_chain
from tether.core.credentials import CredentialUse
from tether.core.ports import AllowAll, CallPolicy, PolicyOutcome
from tether.core.sharing import shares_credentials
from tether.core.violations import (
    Failure,
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
    same_grant,
)
from tether.models.state_size import (
    RECENT_OVERHEAD,
    SEEN_OVERHEAD,
    delegation_cost,
    id_cost,
    jlen,
    measure,
    pending_cost,
    recent_cost,
    seen_cost,
    start_cost,
    token_cost,
    use_cost,
)

_SEEN_PRUNE_AT = 4096  # event ids remembered per workflow before old ones are pruned
_SEEN_SLACK = 1.125  # see _expire_seen
_RECENT_LIST_MAX = 32  # see _remember
_STARTS_KEPT = 16  # later starts of one workflow remembered to compare the next ones with
# events kept to be judged again when a (earlier) start arrives (see _rejudge): bounds the
# state record (they are in it) and the cost of a re-judgment, done at most _STARTS_KEPT times
_EARLY_KEPT = 16
_INF = float("inf")


@dataclass(frozen=True, slots=True)
class Context:
    """What the fold needs besides state and event: tuning and the per-call policy."""

    cfg: DetectionConfig
    policy: CallPolicy = field(default_factory=AllowAll)


def fold(  # noqa: PLR0912  # one step per event type, inline on the hot path
    session: Session | None,
    event: InputEvent,
    ctx: Context,
    now: Stamp,
    out: Outbox,
    uses: list[CredentialUse],
) -> Session:
    """Apply one event to its workflow's session. Duplicate ``event_id``s are ignored."""
    s = session if session is not None else Session(event.workflow_id)
    if s.state_bytes < 0:
        measure(s)  # loaded from its record: counted on first use
    seen = s.seen
    eid = event.event_id
    if eid in seen:
        return s
    t = event.t
    seen[eid] = t
    s.last_time = max(s.last_time, t)
    cfg = ctx.cfg
    if eid.isascii() and eid.isprintable() and '"' not in eid and "\\" not in eid:
        s.seen_bytes += len(eid) + SEEN_OVERHEAD  # seen_cost, inline: this runs for every event
    else:
        s.seen_bytes += seen_cost(eid)
    if len(seen) > _SEEN_PRUNE_AT or s.seen_bytes > cfg.limits.event_id_bytes:
        _bound_ids(s, cfg)
    cred = event.credential
    trust = event.trust
    # A token id only an untrusted source vouches for is nobody's to revoke (docs/SECURITY.md):
    # it is not tracked for completion, not reported to the token index, not kept for late checks.
    token_ok = trust is None or trust.token_trusted
    if type(event) is WorkflowStarted:
        start = StartInfo.of(event.agent.workload_id, t, event.event_id, event.grant)
        if _start(s, start, event, cfg, now, out):
            _rejudge(s, ctx, now, out, uses)
    elif type(event) is DelegationGranted:
        _add_delegation(s, event, cfg, now, out)
    if cred is not None and token_ok:
        _track_token(s, event, cred.token_id, cred.expires_t, t, cfg, now, out, uses=uses)
    kind = type(event)
    if (kind is ToolCallIntent or kind is DelegationGranted) and cred is not None:
        token_id = cred.token_id if token_ok else ""
        act = ActRef(
            t,
            event.event_id,
            event.agent.workload_id,
            token_id,
            cred.expires_t,
            sys.intern(cred.issuer),
        )
        if kind is ToolCallIntent:
            _remember(s, act, cfg, now, out)
        # a delegation in a workflow never started is as unknown as a call in one
        if (s.started is None or s.started.started_at > t) and (
            s.unknown is None or (t, act.event_id) < (s.unknown.t, s.unknown.event_id)
        ):
            s.unknown = act  # the earliest call not preceded by the workflow's start
    elif type(event) is WorkflowCompleted:
        _complete(s, event, t, cfg, now, out, uses)
    _evaluate(s, event, t, ctx, now, out, uses, final=False)
    if type(event) is not WorkflowStarted and (
        s.early is not None or s.started is None or t <= s.started.started_at + cfg.grace_s
    ):  # past the start's first grace period nothing is kept: the common event pays nothing
        _keep_early(s, event, cfg, now, out)
    return s


def _bound_ids(s: Session, cfg: DetectionConfig) -> None:
    """Bound the remembered event ids by time (the dedup window) and by bytes."""
    if len(s.seen) > _SEEN_PRUNE_AT:
        _expire_seen(s, cfg.dedup_window_s)
    cap = cfg.limits.event_id_bytes
    if s.seen_bytes > cap:
        _shed_seen(s, cap)


def _add_delegation(
    s: Session, event: DelegationGranted, cfg: DetectionConfig, now: Stamp, out: Outbox
) -> None:
    if s.has_delegation(event.delegation.delegation_id):
        return  # a delegation id known before keeps the first
    rec = DelegationRec.of(event)
    cost = delegation_cost(rec)
    if len(s.delegations or ()) >= cfg.limits.delegations or not _fits(s, cost, cfg):
        # Not remembered: its delegatee's acts are judged without it (as if it never came),
        # which can only add findings, in a workflow that is revoked from here on.
        _over_limits(s, event, "delegations", cfg, now, out)
        return
    s.state_bytes += cost
    s.add_delegation(rec)


def _fits(s: Session, cost: int, cfg: DetectionConfig, keep: TokenSeen | None = None) -> bool:
    """Whether ``cost`` more bytes keep the session within ``limits.state_bytes``; at the cap,
    first forget the tokens long expired (``_forget_expired_tokens``: an honest long job that
    refreshes its token stays bounded this way, unflagged). A prune that frees less than an
    eighth does not count as room: the workflow is past its caps (the caller raises
    workflow_limits_exceeded) and is not scanned again for every addition."""
    cap = cfg.limits.state_bytes
    if s.state_bytes + cost <= cap:
        return True
    if s.limited:
        return False
    before = s.state_bytes
    _forget_expired_tokens(s, cfg, keep)
    return (before - s.state_bytes) * 8 >= before and s.state_bytes + cost <= cap


def _over_limits(
    s: Session,
    event: InputEvent | ActRef | Violation,
    what: str,
    cfg: DetectionConfig,
    now: Stamp,
    out: Outbox,
) -> None:
    """A cap was reached: raise workflow_limits_exceeded (once per workflow; high, the workflow
    is revoked). The caller drops or sheds what did not fit, so the state stays bounded."""
    if s.limited:
        return
    s.limited = True
    token: str | None
    expires: float | None
    if isinstance(event, ActRef):
        workload, t, evidence = event.workload_id, event.t, event.event_id
        token, expires = event.token_id, event.token_expires
    elif isinstance(event, Violation):
        workload, t, evidence = event.workload_id, event.event_time, event.evidence[0]
        token, expires = event.token_id, event.token_expires
    else:
        workload, t, evidence = event.agent.workload_id, event.t, event.event_id
        cred = event.credential
        token = cred.token_id if cred is not None else None
        expires = cred.expires_t if cred is not None else None
    start = s.started
    _fire(
        s,
        Violation(
            code=C.WORKFLOW_LIMITS_EXCEEDED,
            key=(s.workflow_id,),
            workflow_id=s.workflow_id,
            workload_id=workload,
            event_time=t,
            evidence=(evidence,),
            summary=f"the workflow's {what} passed its cap (state is bounded from here on)",
            token_id=token,
            token_expires=expires,
            workflow_not_after=start.not_after if start is not None else None,
        ),
        cfg,
        now,
        out,
    )


def _shed_seen(s: Session, cap: int) -> None:
    """Summarise a busy workflow's event ids: forget the oldest remembered (in arrival order)
    until they fit in seven eighths of ``cap`` (amortized O(1) per event). A duplicate of a
    forgotten id is applied again, which the checks tolerate: every check is monotone and every
    finding deduplicated; only a second decision for that intent can follow. Not a finding: an
    honest long workflow does this."""
    target = cap - cap // 8
    excess = s.seen_bytes - target
    items = iter(s.seen.items())
    for k, _ in items:
        excess -= seen_cost(k)
        s.seen_bytes -= seen_cost(k)
        if excess <= 0:
            break
    s.seen = dict(items)


def _keep_early(
    s: Session, event: InputEvent, cfg: DetectionConfig, now: Stamp, out: Outbox
) -> None:
    """Keep an event that a start arriving later could still judge differently: one dated
    before the start known or within a grace period after it (an earlier start can arrive only
    while events dated up to its own time plus the grace period arrive). Kept events count
    against the workflow's state cap; one that does not fit is judged without a later re-judgment
    (the workflow is past its caps: workflow_limits_exceeded)."""
    start = s.started
    grace = cfg.grace_s
    if start is not None and s.last_time > start.started_at + grace:
        _drop_early(s)  # no earlier start can arrive any more (within the grace period)
        return
    if start is not None and event.t > start.started_at + grace:
        return
    early = s.early
    if early is not None and len(early) >= _EARLY_KEPT:
        return
    cost = pending_cost(event)
    if not _fits(s, cost, cfg):
        _over_limits(s, event, "events kept for a later start", cfg, now, out)
        return
    s.state_bytes += cost
    s.early_bytes += cost
    if early is None:
        s.early = [event]
    else:
        early.append(event)


def _drop_early(s: Session) -> None:
    s.state_bytes -= s.early_bytes
    s.early_bytes = 0
    s.early = None


def _rejudge(s: Session, ctx: Context, now: Stamp, out: Outbox, uses: list[CredentialUse]) -> None:
    """The workflow's first start arrived, or an earlier start with a different grant replaced
    it: judge again, under it, the events judged before it arrived (their decisions stand; what
    they newly reveal is raised, deduplicated against what was raised already). An act dated
    before the start may arrive, and be decided, long before its start: the first start judges
    it whenever it comes."""
    for event in s.early or ():
        _evaluate(s, event, event.t, ctx, now, out, uses, final=False, decide=False)


def _start(  # the fold's arguments
    s: Session,
    new: StartInfo,
    event: InputEvent,
    cfg: DetectionConfig,
    now: Stamp,
    out: Outbox,
) -> bool:
    """A ``workflow.started``: the earliest start in event time (ties: the smaller event id) is
    the workflow's grant, whatever the arrival order. A start that differs from an earlier one
    (grant or initiator) raises ``grant_conflict`` for the later of the two: the condition is
    "some earlier start differs", so the set of findings does not depend on arrival order.
    Returns whether the events kept in ``early`` are to be judged again: the first start (acts
    dated before it are judged as if made at it), or an earlier start with a different grant."""
    current = s.started
    if current is None:
        s.started = new
        _rearm(s, new, cfg.grace_s)
        return bool(s.early)  # acts that came before any start: judge them at the start
    others = s.other_starts
    for known in (current, *(others or ())):
        if not same_grant(known, new):
            early, late = sorted((known, new), key=_start_order)
            _fire(s, _grant_conflict(s, early, late), cfg, now, out)
    if others is None:
        s.other_starts = others = []
    replaced = _start_order(new) < _start_order(current)
    if replaced:
        s.started = new
        _rearm(s, new, cfg.grace_s)
        new, current = current, new
    if len(others) >= _STARTS_KEPT:
        return False  # a flood of starts: still compared and reordered, no longer re-judged
    cost = start_cost(new)
    if not _fits(s, cost, cfg):
        _over_limits(s, event, "starts", cfg, now, out)
        return False
    s.state_bytes += cost
    others.append(new)
    return replaced and not same_grant(new, current)


def _rearm(s: Session, start: StartInfo, grace: float) -> None:
    """Checks waiting on acts dated before ``start`` are judged as at the start: they wait until
    a grace period after it (for the delegations dated up to then), whenever they came."""
    for p in s.pending or ():
        if p.event.t < start.started_at:
            p.deadline = max(p.deadline, start.started_at + grace)
    s.rewake = True


def _start_order(start: StartInfo) -> tuple[float, str]:
    return (start.started_at, start.event_id)


def _grant_conflict(s: Session, early: StartInfo, late: StartInfo) -> Violation:
    return Violation(
        code=C.GRANT_CONFLICT,
        key=(s.workflow_id, late.event_id),
        workflow_id=s.workflow_id,
        workload_id=late.initiator,
        event_time=late.started_at,
        evidence=(early.event_id, late.event_id),
        summary=f"workflow started again by {late.initiator} with a different grant or "
        f"initiator; the earliest start ({early.event_id}) stays the grant",
        workflow_not_after=max(early.not_after, late.not_after),
    )


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
    """Forget event ids dated before ``horizon`` (the dedup window's start). Only what is
    forgotten is counted (``seen_bytes`` is the sum of the remembered ids' costs): a completed
    workflow prunes once, and usually forgets few."""
    seen = s.seen
    gone = [k for k, v in seen.items() if v < horizon]
    if not gone:
        return
    s.seen_bytes -= sum(seen_cost(k) for k in gone)
    s.seen = {k: v for k, v in seen.items() if v >= horizon}


def _room_for_token(s: Session, cost: int, cfg: DetectionConfig) -> bool:
    """Whether a new token fits, by count and by bytes (each may first forget the tokens
    long expired, as ``_fits`` does)."""
    limit = cfg.limits.tokens
    if len(s.tokens) >= limit:
        if s.limited:
            return False
        before = len(s.tokens)
        _forget_expired_tokens(s, cfg)
        if (before - len(s.tokens)) * 8 < before:
            return False
    return _fits(s, cost, cfg)


def _forget_expired_tokens(s: Session, cfg: DetectionConfig, keep: TokenSeen | None = None) -> None:
    """Forget tokens expired for longer than the revocation margin (and a grace period) by the
    workflow's latest event time, once their uses were reported to the token index. What that
    gives up: their task_completed revocation (a use after expiry raises credential_expired;
    a use after completion, activity_after_completion; reuse elsewhere is the index's); a
    late event presenting one tracks it afresh."""
    horizon = s.last_time - cfg.revocation_margin_s - cfg.grace_s
    kept: list[TokenSeen] = []
    for tok in s.tokens:
        if (
            tok.expires_at < horizon
            and tok.uses is not None  # a token none of whose uses is decided yet stays
            and tok is not keep
            and all(u.reported for u in tok.recorded())
        ):
            s.state_bytes -= token_cost(tok.token_id, tok.event_id, tok.issuer) + sum(
                use_cost(tok.token_id, u.workload_id, u.event_id) for u in tok.recorded()
            )
        else:
            kept.append(tok)
    s.forget_tokens()
    for tok in kept:
        s.add_token(tok)


def _remember(s: Session, act: ActRef, cfg: DetectionConfig, now: Stamp, out: Outbox) -> None:
    """Keep recent calls for one grace period, to judge a completion that arrives late.

    A short list (most workflows make a few calls per grace period); a deque once it grows,
    so that a burst of calls into one workflow trims in O(1) per call. Past the caps (a flood
    of calls within one grace period) the oldest go first.
    """
    # recent_cost, inline (as below): this runs for every call
    issuer = act.token_issuer
    cost = (
        6
        * (
            len(act.event_id)
            + len(act.workload_id)
            + len(act.token_id)
            + (len(issuer) + 1 if issuer else 0)
        )
        + RECENT_OVERHEAD
    )
    recent = s.recent
    if recent is None:
        s.recent = [act]
        s.state_bytes += cost
        return
    horizon = s.last_time - cfg.grace_s  # the watermark is at least last_time
    if recent and recent[0].t < horizon:
        freed = 0
        while recent and recent[0].t < horizon:
            old = recent[0]
            issuer = old.token_issuer
            freed += 6 * (  # recent_cost, inline
                len(old.event_id)
                + len(old.workload_id)
                + len(old.token_id)
                + (len(issuer) + 1 if issuer else 0)
            )
            del recent[0]
            freed += RECENT_OVERHEAD
        s.state_bytes -= freed
    limits = cfg.limits
    if len(recent) >= limits.recent or (
        s.state_bytes + cost > limits.state_bytes and not _fits(s, cost, cfg)
    ):
        _over_limits(s, act, "recent calls", cfg, now, out)
        while recent and (len(recent) >= cfg.limits.recent or not _fits(s, cost, cfg)):
            s.state_bytes -= recent_cost(recent[0])
            del recent[0]
    recent.append(act)
    s.state_bytes += cost
    if len(recent) > _RECENT_LIST_MAX and type(recent) is list:
        s.recent = deque(recent)


def _track_token(  # noqa: PLR0913  # the event's facts, read once by the caller
    s: Session,
    event: InputEvent,
    token_id: str,
    expires: float,
    t: float,
    cfg: DetectionConfig,
    now: Stamp,
    out: Outbox,
    *,
    uses: list[CredentialUse],
) -> None:
    event_id = event.event_id
    s.tokens_until = max(s.tokens_until, expires)  # outlives compaction: how long it is remembered
    seen = s.token(token_id)
    if seen is None:
        _add_token(s, event, token_id, expires, t, cfg, now, out)
    else:
        if t < seen.first_use:
            s.state_bytes += jlen(event_id) - jlen(seen.event_id)
            seen.first_use, seen.event_id = t, event_id
        cred = event.credential
        issuer = cred.issuer if cred is not None else None
        if issuer is not None and (seen.issuer is None or issuer < seen.issuer):
            s.state_bytes += jlen(issuer) - (jlen(seen.issuer) if seen.issuer else -1)
            seen.issuer = sys.intern(issuer)  # any arrival order: the least
    done = s.completed_at
    if done is not None and t <= done:
        _revoke_on_completion(s, token_id, expires, done, event_id, cfg, now, out, uses=uses)


def _add_token(  # as _track_token
    s: Session,
    event: InputEvent,
    token_id: str,
    expires: float,
    t: float,
    cfg: DetectionConfig,
    now: Stamp,
    out: Outbox,
) -> TokenSeen | None:
    """Track a token first used in this workflow, unless that would pass a cap: a token not
    tracked has its uses reported to the token index at once (see ``_record_use``) and is not
    revoked on completion unless used at or before it (the workflow is revoked instead)."""
    cred = event.credential
    issuer = sys.intern(cred.issuer) if cred is not None else None
    cost = token_cost(token_id, event.event_id, issuer)
    if not _room_for_token(s, cost, cfg):
        _over_limits(s, event, "tokens", cfg, now, out)
        return None
    s.state_bytes += cost
    return s.add_token(TokenSeen(token_id, t, expires, event.event_id, issuer=issuer))


def _revoke_on_completion(  # noqa: PLR0913  # the completion's facts
    s: Session,
    token_id: str,
    expires: float,
    done: float,
    evidence: str,
    cfg: DetectionConfig,
    now: Stamp,
    out: Outbox,
    *,
    uses: list[CredentialUse],
    again: bool = False,
) -> None:
    """Revoke a token used in the completed workflow (reason task_completed), once per token.

    When credentials may be shared across workflows (``tether.core.sharing``), whether another
    live workflow still uses it is the token index's to decide: the completion is reported to
    the index instead (``again``: once more, for a completion earlier than the one reported)."""
    if not cfg.revoke_on_completion or cfg.shadow:
        return
    revoked = s.completion_revoked
    if revoked is not None and token_id in revoked and not again:
        return
    seen = s.token(token_id)
    if shares_credentials(cfg):
        issuer = seen.issuer if seen is not None else None
        uses.append(
            CredentialUse(
                token_id,
                "",
                s.workflow_id,
                done,
                evidence,
                False,
                expires,
                issuer=issuer,
                completed=True,
            )
        )
    else:
        out.revocations.append(
            completion_revocation(
                s.workflow_id,
                token_id,
                expires,
                done,
                evidence,
                cfg,
                now,
                token_issuer=seen.issuer if seen is not None else None,
            )
        )
    if revoked is not None and token_id in revoked:
        return  # reported again (``again``): remembered already
    cost = id_cost(token_id)
    if _fits(s, cost, cfg):  # past the cap, revoked again on a later use (the same record)
        s.state_bytes += cost
        if revoked is None:
            s.completion_revoked = revoked = set()
        revoked.add(token_id)


def _complete(  # the fold's arguments
    s: Session,
    event: WorkflowCompleted,
    t: float,
    cfg: DetectionConfig,
    now: Stamp,
    out: Outbox,
    uses: list[CredentialUse],
) -> None:
    if s.completed_at is not None and s.completed_at <= t:
        return
    again = s.completed_at is not None  # an earlier completion: the token index takes it
    s.completed_at = t
    s.rewake = True
    s.completed_event = event.event_id
    for act in s.recent or ():
        if act.t > t:
            _late_after_completion(s, act, t, cfg, now, out)
    for seen in s.tokens:
        if seen.first_use <= t:  # tokens first used after completion: see activity_after_completion
            _revoke_on_completion(
                s,
                seen.token_id,
                seen.expires_at,
                t,
                event.event_id,
                cfg,
                now,
                out,
                uses=uses,
                again=again,
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
        token_issuer=act.token_issuer,
        workflow_not_after=start.not_after if start is not None else None,
    )
    _fire(s, v, cfg, now, out)


def _fire(s: Session, v: Violation, cfg: DetectionConfig, now: Stamp, out: Outbox) -> None:
    if not cfg.enabled(v.code):
        return
    fid = v.finding_id
    fired = s.fired
    if fired is not None and fid in fired:
        return
    emit(v, cfg, now, out)  # first: a finding is remembered as raised only once it was
    if fired is None:
        s.fired = fired = set()
    cost = id_cost(fid)
    if _fits(s, cost, cfg) or v.code == C.WORKFLOW_LIMITS_EXCEEDED:
        s.state_bytes += cost
        fired.add(fid)
    else:  # not remembered: raised again (the same finding id) if its cause is seen again
        _over_limits(s, v, "findings", cfg, now, out)


def _evaluate(  # noqa: PLR0913  # the fold's arguments, plus how to judge
    s: Session,
    event: InputEvent,
    t: float,
    ctx: Context,
    now: Stamp,
    out: Outbox,
    uses: list[CredentialUse],
    *,
    final: bool,
    decide: bool = True,
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
        _record_use(s, event, t, verdict, ctx, now, out, uses)
    if verdict.waiting and not final:
        size = pending_cost(event)
        if _pending_full(s, size, cfg):
            _decide_by_own_time(s, ctx, now, out, uses)
        if _pending_full(s, size, cfg):
            # No room to wait: decide now, taking absence as final. That can only add
            # findings (every check is monotone), in a workflow revoked from here on.
            _over_limits(s, event, "pending events", cfg, now, out)
            _evaluate(s, event, t, ctx, now, out, uses, final=True)
            return
        s.state_bytes += size
        s.seq += 1
        # an act dated before the start is judged as at the start: it waits for what may still
        # arrive dated up to the start's grace period
        start = s.started
        at = t if start is None or start.started_at <= t else start.started_at
        wait = Pending(at + cfg.grace_s, s.seq, event, size, quiet=not decide)
        if s.pending is None:
            s.pending = [wait]
        else:
            s.pending.append(wait)
        s.rewake = True
        if type(event) is ToolCallIntent and cfg.emit_decisions and decide:
            out.decisions.append(_decision(s, event, verdict, outcome, now, cfg, final=False))
    elif type(event) is ToolCallIntent and cfg.emit_decisions and decide:
        start = s.started
        # a call in a workflow never started (by its time): every such call's decision says so,
        # though the finding is raised once, on the first (it is why no policy decided)
        unknown = (start is None or start.started_at > t) and cfg.enabled(C.UNKNOWN_WORKFLOW)
        out.decisions.append(
            _decision(s, event, verdict, outcome, now, cfg, final=True, unknown=unknown)
        )


def _pending_full(s: Session, size: int, cfg: DetectionConfig) -> bool:
    return len(s.pending or ()) >= cfg.limits.pending or not _fits(s, size, cfg)


def _decide_by_own_time(
    s: Session, ctx: Context, now: Stamp, out: Outbox, uses: list[CredentialUse]
) -> None:
    """Before a workflow's waiting events count as past its caps, decide those its own events
    have already left a grace period behind. All of a workflow's events share one partition:
    one dated before a waiting event's deadline that has not arrived would arrive after one
    dated more than a grace period later, which no delivery within the grace period does, so
    the decision is the one the watermark would make. A worker whose watermark is held back by
    a slow partition (catching up a backlog) then keeps an honest busy workflow within its caps
    instead of flagging it."""
    pending = s.pending
    if not pending:
        return
    horizon = s.last_time
    due = [p for p in pending if p.deadline < horizon]
    if not due:
        return
    s.pending = [p for p in pending if p.deadline >= horizon] or None
    s.state_bytes -= sum(p.size for p in due)
    due.sort(key=lambda p: (p.deadline, p.seq))
    for p in due:
        _evaluate(s, p.event, p.event.t, ctx, now, out, uses, final=True, decide=not p.quiet)


def _record_use(  # as _evaluate
    s: Session,
    event: InputEvent,
    t: float,
    verdict: Verdict,
    ctx: Context,
    now: Stamp,
    out: Outbox,
    uses: list[CredentialUse],
) -> None:
    """Remember a credential use. It is reported to the token index once it has settled (a
    grace period after its event time), so that the earliest use of each (token, workload) in
    this workflow is known for sure: credential_reuse compares those across workflows.

    A use the session has no room for (past its caps) is reported at once instead: the index
    keeps the earliest use it is told of, so credential reuse is still detected."""
    cred = event.credential
    assert cred is not None  # noqa: S101  # checked by the caller
    cfg = ctx.cfg
    workload = event.agent.workload_id
    inherited = verdict.identity is Identity.INHERITED
    token = s.token(cred.token_id)
    if token is None:  # tracked when the event was folded, unless past a cap
        token = _add_token(s, event, cred.token_id, cred.expires_t, t, cfg, now, out)
    rec = token.use_by(workload) if token is not None else None
    if rec is None:
        cost = use_cost(cred.token_id, workload, event.event_id)
        if token is None or not _fits(s, cost, cfg, token):
            _over_limits(s, event, "credential uses", cfg, now, out)
            uses.append(
                CredentialUse(
                    cred.token_id,
                    workload,
                    s.workflow_id,
                    t,
                    event.event_id,
                    inherited,
                    cred.expires_t,
                    owner=cred.subject == workload,
                    issuer=sys.intern(cred.issuer),
                    done=s.completed_at,
                )
            )
            return
        s.state_bytes += cost
        expires = cred.expires_t
        if expires == token.expires_at:
            expires = token.expires_at  # one float object for both
        owner = cred.subject == workload
        workload = sys.intern(workload)  # workload ids repeat across the fleet
        token.record(UseRec(workload, t, event.event_id, inherited, expires, False, owner))
        s.unsettled += 1
        s.settle_at = min(s.settle_at, t)
        s.rewake = True
        return
    earlier = (t, event.event_id) < (rec.t, rec.event_id)
    if earlier:
        s.state_bytes += jlen(event.event_id) - jlen(rec.event_id)
        rec.t, rec.event_id = t, event.event_id
    if rec.inherited and not inherited:
        rec.inherited = False
    elif not earlier:
        return
    if rec.reported:  # changed after it settled (a late event): report again, the index takes min
        rec.reported = False
        s.unsettled += 1
        s.rewake = True
    s.settle_at = min(s.settle_at, rec.t)


def _settle_uses(s: Session, watermark: float, grace: float, uses: list[CredentialUse]) -> None:
    if s.settle_at + grace >= watermark:
        return  # nothing has settled yet
    left = _INF
    for token in s.tokens:
        for rec in token.recorded():
            if rec.reported:
                continue
            if rec.t + grace >= watermark:
                left = min(left, rec.t)
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
                    issuer=token.issuer,
                    done=s.completed_at,
                )
            )
    s.settle_at = left


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
        token_issuer=cred.issuer,
        workflow_not_after=start.not_after if start is not None else None,
        severity=outcome.severity,
        policy_ids=outcome.policy_ids,
    )


def _decision(  # the call, what was found, and when
    s: Session,
    event: ToolCallIntent,
    verdict: Verdict,
    outcome: PolicyOutcome | None,
    now: Stamp,
    cfg: DetectionConfig,
    *,
    final: bool,
    unknown: bool = False,
) -> Decision:
    """The call's decision as the fold sees it: its findings and targets. Whether a gateway lets
    it through (a target revoked) is for the driver to judge (``tether.core.decisions``)."""
    found = {v.code for v in verdict.violations if cfg.enabled(v.code)}
    if unknown:
        found.add(C.UNKNOWN_WORKFLOW)
    codes = sorted(found)
    trust = event.trust
    cred = event.credential
    workload = event.agent.workload_id
    ids = delegation_chain(s, workload, event.t)[1] if s.delegations else ()
    return Decision(
        event_id=event.event_id,
        workflow_id=event.workflow_id,
        workload_id=workload,
        tool=event.action.tool,
        decision="allow" if final else "pending",
        findings=codes,
        policy_ids=list(outcome.policy_ids) if outcome is not None else [],
        policy_revision=outcome.revision if outcome is not None else None,
        evaluated_at=as_datetime(now),
        authenticated=trust.authenticated if trust is not None else None,
        source=trust.source if trust is not None else None,
        credential_verified=trust.credential_verified if trust is not None else None,
        reason=None if final else "awaiting_checks",
        token_id=cred.token_id,
        delegation_ids=list(ids),
        final=final,
        tuning_revision=cfg.tuning_revision,
    )


def fire_due(
    s: Session,
    watermark: float,
    ctx: Context,
    now: Stamp,
    out: Outbox,
    uses: list[CredentialUse],
    *,
    end: bool = False,
) -> Session | None:
    """Decide every check due before ``watermark`` (every check: ``end``, the end of input),
    then compact or drop the session when its time has come. Returns ``None`` when the
    session should be deleted."""
    cfg = ctx.cfg
    grace = cfg.grace_s
    if s.state_bytes < 0:
        measure(s)  # loaded from its record: counted on first use
    if s.pending:
        due = [p for p in s.pending if end or p.deadline < watermark]
        if due:
            s.pending = [p for p in s.pending if not end and p.deadline >= watermark] or None
            s.state_bytes -= sum(p.size for p in due)
            due.sort(key=lambda p: (p.deadline, p.seq))
            for p in due:
                try:
                    _evaluate(
                        s, p.event, p.event.t, ctx, now, out, uses, final=True, decide=not p.quiet
                    )
                except Exception as exc:  # one event's failure is its own
                    out.failures.append(Failure.of(s.workflow_id, exc, p.event))
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
                    token_issuer=first.token_issuer,
                ),
                cfg,
                now,
                out,
            )
    if s.early is not None and s.started is not None and watermark > s.started.started_at + grace:
        _drop_early(s)
    recent = s.recent
    if recent is not None:
        while recent and recent[0].t + grace < watermark:
            s.state_bytes -= recent_cost(recent[0])
            del recent[0]
        if not recent:
            s.recent = None
    return _lifecycle(s, watermark, cfg)


def _lifecycle(s: Session, watermark: float, cfg: DetectionConfig) -> Session | None:
    done = s.completed_at
    if done is not None:
        if watermark > forget_at(s, cfg):
            return None
        if not s.compacted and watermark > max(done, s.last_time) + cfg.grace_s and not s.pending:
            _prune_seen(s, watermark - cfg.dedup_window_s)
            _compact(s)
    elif watermark > s.last_time + cfg.idle_timeout_s:
        return None
    if len(s.seen) > _SEEN_PRUNE_AT:
        _prune_seen(s, watermark - cfg.dedup_window_s)
    return s


def forget_at(s: Session, cfg: DetectionConfig) -> float:
    """The event time after which a completed workflow is forgotten.

    Not before ``completed_retention_s`` after its completion; not while one of its event ids is
    still within the dedup window (a redelivery must stay a duplicate: no second decision, no
    ``unknown_workflow`` for a benign workflow); and not while a credential used in it can still
    be presented (its expiry plus the revocation margin), so that a call made with it after the
    completion raises ``activity_after_completion``, not the weaker ``unknown_workflow``. The last
    is bounded by ``completed_memory_max_s`` after completion (a token that claims to expire in
    9999 does not pin the workflow forever; past that bound it is ``unknown_workflow``).
    """
    done = s.completed_at
    assert done is not None  # noqa: S101  # callers hold a completed session
    tokens = min(s.tokens_until + cfg.revocation_margin_s, done + cfg.completed_memory_max_s)
    return max(
        done + max(cfg.completed_retention_s, cfg.grace_s),
        s.last_time + cfg.dedup_window_s,
        tokens,
    )


def _compact(s: Session) -> None:
    """Free what a completed workflow no longer needs; keep what judges late activity and the
    event ids still within the dedup window (pruned by the caller)."""
    s.compacted = True
    s.unsettled = 0
    s.state_bytes -= sum(
        token_cost(tok.token_id, tok.event_id, tok.issuer)
        + sum(use_cost(tok.token_id, u.workload_id, u.event_id) for u in tok.recorded())
        for tok in s.tokens
    ) + sum(recent_cost(a) for a in s.recent or ())
    s.settle_at = _INF
    s.forget_tokens()
    s.recent = None


def wake_at(s: Session, cfg: DetectionConfig) -> float:
    """The event time after which ``fire_due`` has something to do for this session."""
    grace = cfg.grace_s
    due = min(p.deadline for p in s.pending) if s.pending else _INF
    if s.unknown is not None and not s.unknown_done:
        due = min(due, s.unknown.t + grace)
    if s.unsettled:
        due = min(due, s.settle_at + grace)
    if s.early is not None and s.started is not None:
        due = min(due, s.started.started_at + grace)
    done = s.completed_at
    if done is not None:
        if not s.compacted:
            due = min(due, max(done, s.last_time) + grace)
        return min(due, forget_at(s, cfg))
    return min(due, s.last_time + cfg.idle_timeout_s)
