"""Per-event checks: each decides now, or waits for events that may still arrive."""

from __future__ import annotations

from enum import Enum

from tether.core import codes as C
from tether.core.handoff import Role, Standing, is_upstream_delegator, standing
from tether.core.violations import Violation
from tether.models.common import SENSITIVITY_LEVEL
from tether.models.events import (
    Credential,
    DelegationGranted,
    InputEvent,
    ToolCallIntent,
    WorkflowCompleted,
)
from tether.models.session import Session

_SENSITIVITY = {level: name for name, level in SENSITIVITY_LEVEL.items()}


class Identity(Enum):
    """How the presented credential relates to the acting workload."""

    OWN = "own"
    INHERITED = "inherited"  # issued to an upstream delegator of the actor in this workflow
    FOREIGN = "foreign"  # issued to someone else entirely
    PENDING = "pending"  # not yet decidable: a delegation may still arrive


class Verdict:
    """What the checks concluded about one event."""

    __slots__ = ("identity", "standing", "violations", "waiting")

    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self.waiting = False
        self.identity = Identity.OWN
        self.standing: Standing | None = None


def check_event(  # noqa: PLR0912  # one guarded branch per check keeps the hot path flat
    session: Session, event: InputEvent, *, final: bool, max_chain: int = 3
) -> Verdict:
    """Run every check the contract (docs/contract.md) applies to ``event``, except per-call policy.

    With ``final=False`` a check whose outcome a late event could still change waits
    (``waiting=True``) instead of firing; with ``final=True`` absence is taken as final. Checks
    that can be decided now are decided now in both modes, and every check is monotone, so
    re-running an event in final mode repeats (and deduplicates) what already fired.
    """
    verdict = Verdict()
    cred = event.credential
    t = event.t
    actor = event.agent.workload_id
    is_call = type(event) is ToolCallIntent
    # Each check is guarded by its cheap condition inline: the common, benign event pays for
    # comparisons, not for a call per check.
    if cred is not None:
        if t > cred.expires_t:
            _credential_expired(session, event, cred, t, verdict)
        if cred.subject != actor:
            _identity(session, event, cred, t, final, verdict)
    if is_call and session.completed_at is not None and t > session.completed_at:
        _after_completion(session, event, t, verdict)  # needs only the completion, not the start
    elif cred is None and type(event) is WorkflowCompleted:
        return verdict
    start = session.started
    if start is None and not final:
        verdict.waiting = True
        return verdict
    # An act dated before its workflow's start is judged as if made at the start (and still
    # raises unknown_workflow): dating a violation a second early must not downgrade it.
    st = standing(
        session, actor, t if start is None or start.started_at <= t else start.started_at, max_chain
    )
    verdict.standing = st
    if st.role is Role.UNKNOWN:
        return verdict  # never started: unknown_workflow speaks for the whole workflow
    if not st.covered:
        _coverage(session, event, st, t, final, verdict)
    if (
        cred is not None
        and verdict.identity is not Identity.INHERITED
        and not st.entitlement.issuperset(cred.scopes)
    ):
        _scope_escalation(session, event, cred, st, t, final, verdict)
    assert start is not None  # noqa: S101  # UNKNOWN above covers a missing start
    if is_call:
        action = event.action  # type: ignore[union-attr]  # is_call narrows the event
        if (
            (start.tools and action.tool not in start.tools)
            or SENSITIVITY_LEVEL[action.data_sensitivity] > start.max_level
            or (start.destinations and action.destination not in start.destinations)
        ):
            _grant(session, event, t, verdict)  # type: ignore[arg-type]  # a ToolCallIntent
        if t > start.not_after:
            _task_window(session, event, t, verdict)
    elif type(event) is DelegationGranted:
        if t > start.not_after:
            _task_window(session, event, t, verdict)
        _delegation(session, event, st, t, final, max_chain, verdict)
    return verdict


def _v(
    session: Session,
    event: InputEvent,
    code: str,
    key: tuple[str, ...],
    summary: str,
    t: float,
) -> Violation:
    cred = event.credential
    start = session.started
    return Violation(
        code=code,
        key=(session.workflow_id, *key),
        workflow_id=session.workflow_id,
        workload_id=event.agent.workload_id,
        event_time=t,
        evidence=(event.event_id,),
        summary=summary,
        token_id=cred.token_id if cred is not None else None,
        token_expires=cred.expires_t if cred is not None else None,
        token_issuer=cred.issuer if cred is not None else None,
        workflow_not_after=start.not_after if start is not None else None,
    )


def _tok(event: InputEvent) -> str:
    return event.credential.token_id if event.credential is not None else ""


def _credential_expired(
    session: Session, event: InputEvent, cred: Credential, t: float, verdict: Verdict
) -> None:
    if t > cred.expires_t:
        verdict.violations.append(
            _v(
                session,
                event,
                C.CREDENTIAL_EXPIRED,
                (event.agent.workload_id, cred.token_id),
                f"token {cred.token_id} presented {t - cred.expires_t:.0f}s after it expired",
                t,
            )
        )


def _identity(
    session: Session,
    event: InputEvent,
    cred: Credential,
    t: float,
    final: bool,
    verdict: Verdict,
) -> None:
    actor = event.agent.workload_id
    subject = cred.subject
    if subject == actor:
        verdict.identity = Identity.OWN
        return
    if is_upstream_delegator(session, actor, subject, t):
        verdict.identity = Identity.INHERITED
        verdict.violations.append(
            _v(
                session,
                event,
                C.INHERITED_CREDENTIAL,
                (actor, cred.token_id),
                f"{actor} presented token {cred.token_id} issued to its delegator {subject} "
                f"instead of its own",
                t,
            )
        )
        return
    if not final:
        verdict.identity = Identity.PENDING
        verdict.waiting = True
        return
    verdict.identity = Identity.FOREIGN
    verdict.violations.append(
        _v(
            session,
            event,
            C.IDENTITY_MISMATCH,
            (actor, cred.token_id),
            f"{actor} presented token {cred.token_id} issued to {subject}, which is not its "
            f"delegator",
            t,
        )
    )


def _coverage(
    session: Session, event: InputEvent, st: Standing, t: float, final: bool, verdict: Verdict
) -> None:
    if st.covered:
        return
    if not final:
        verdict.waiting = True
        return
    actor = event.agent.workload_id
    if st.role is Role.EXPIRED:
        verdict.violations.append(
            _v(
                session,
                event,
                C.DELEGATION_EXPIRED,
                (actor, _tok(event)),
                f"{actor} acted after every delegation it held in this workflow had expired",
                t,
            )
        )
    else:
        verdict.violations.append(
            _v(
                session,
                event,
                C.UNDELEGATED_ACTOR,
                (actor, _tok(event)),
                f"{actor} acted in the workflow without being its initiator or the target of a "
                f"live delegation (broken handoff)",
                t,
            )
        )


def _scope_escalation(
    session: Session,
    event: InputEvent,
    cred: Credential,
    st: Standing,
    t: float,
    final: bool,
    verdict: Verdict,
) -> None:
    if not st.covered or st.entitlement.issuperset(cred.scopes):
        return
    if st.role is Role.DELEGATEE and not final:
        verdict.waiting = True  # a late delegation may still widen the entitlement
        return
    if verdict.identity is Identity.PENDING:
        verdict.waiting = True  # may yet turn out to be an inherited credential
        return
    extra = sorted(set(cred.scopes) - st.entitlement)
    verdict.violations.append(
        _v(
            session,
            event,
            C.SCOPE_ESCALATION,
            (event.agent.workload_id, cred.token_id),
            f"token {cred.token_id} carries {', '.join(extra)} beyond the "
            f"{st.role.value}'s entitlement",
            t,
        )
    )


def _grant(session: Session, event: ToolCallIntent, t: float, verdict: Verdict) -> None:
    start = session.started
    assert start is not None  # noqa: S101  # callers only reach here with a known start
    action = event.action
    actor = event.agent.workload_id
    if start.tools and action.tool not in start.tools:
        verdict.violations.append(
            _v(
                session,
                event,
                C.TOOL_NOT_GRANTED,
                (actor, _tok(event), action.tool),
                f"tool {action.tool} is not in the grant",
                t,
            )
        )
    if SENSITIVITY_LEVEL[action.data_sensitivity] > start.max_level:
        verdict.violations.append(
            _v(
                session,
                event,
                C.SENSITIVITY_EXCEEDED,
                (actor, _tok(event), action.data_sensitivity),
                f"{action.data_sensitivity} data exceeds the grant's {_SENSITIVITY[start.max_level]}",
                t,
            )
        )
    if start.destinations and action.destination not in start.destinations:
        verdict.violations.append(
            _v(
                session,
                event,
                C.DESTINATION_NOT_GRANTED,
                (actor, _tok(event), action.destination),
                f"destination {action.destination or '(none)'} is not in the grant",
                t,
            )
        )


def _task_window(session: Session, event: InputEvent, t: float, verdict: Verdict) -> None:
    start = session.started
    assert start is not None  # noqa: S101  # callers only reach here with a known start
    if t > start.not_after:
        verdict.violations.append(
            _v(
                session,
                event,
                C.TASK_WINDOW_EXCEEDED,
                (event.agent.workload_id,),
                f"activity {t - start.not_after:.0f}s after the grant's not_after",
                t,
            )
        )


def _after_completion(session: Session, event: InputEvent, t: float, verdict: Verdict) -> None:
    done = session.completed_at
    if done is not None and t > done:
        verdict.violations.append(after_completion(session, event, t, done))


def after_completion(session: Session, event: InputEvent, t: float, done: float) -> Violation:
    """The activity_after_completion violation for a call at ``t`` after completion at ``done``."""
    v = _v(
        session,
        event,
        C.ACTIVITY_AFTER_COMPLETION,
        (event.agent.workload_id, _tok(event)),
        f"tool call {t - done:.3f}s after the workflow completed",
        t,
    )
    if session.completed_event is not None:
        v.evidence = (event.event_id, session.completed_event)
    return v


def _delegation(
    session: Session,
    event: DelegationGranted,
    st: Standing,
    t: float,
    final: bool,
    max_chain: int,
    verdict: Verdict,
) -> None:
    if not st.covered:
        return  # the delegator raises its own undelegated_actor / delegation_expired
    d = event.delegation
    depth = st.depth + 1
    if not st.rooted and not final:
        verdict.waiting = True  # the chain above the delegator may still arrive
    elif depth > max_chain:
        if st.role is Role.DELEGATEE and not final:
            verdict.waiting = True  # a shorter chain may still arrive
        else:
            v = _v(
                session,
                event,
                C.DELEGATION_DEPTH_EXCEEDED,
                (d.delegation_id,),
                f"delegation {d.delegation_id} makes a chain of {depth} hops (maximum {max_chain})",
                t,
            )
            v.delegation_id = d.delegation_id
            v.delegation_expires = d.expires_at.timestamp()
            verdict.violations.append(v)
    if not st.entitlement.issuperset(d.scopes):
        if st.role is Role.DELEGATEE and not final:
            verdict.waiting = True
        else:
            extra = sorted(set(d.scopes) - st.entitlement)
            v = _v(
                session,
                event,
                C.DELEGATION_AMPLIFICATION,
                (d.delegation_id,),
                f"delegation {d.delegation_id} to {d.to_workload_id} hands on "
                f"{', '.join(extra)}, which the delegator does not hold",
                t,
            )
            v.delegation_id = d.delegation_id
            v.delegation_expires = d.expires_at.timestamp()
            verdict.violations.append(v)
