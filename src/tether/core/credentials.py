"""The credential index: cross-workflow token memory, partitionable by ``token_id``.

Workflow sessions report each credential use once its identity is settled; this fold sees the
uses of one token from every workflow and raises ``credential_reuse`` and
``credential_shared_across_workflows``. Both conditions are monotone ("some other workload /
workflow presented this token earlier in event time"), so the set of findings does not depend on
arrival order and each fires once per (token, workload, workflow).
"""

from __future__ import annotations

from dataclasses import dataclass

from tether.core import codes as C
from tether.core.config import DetectionConfig
from tether.core.violations import Outbox, Stamp, Violation, emit
from tether.models.session import PairUse, TokenState


@dataclass(frozen=True, slots=True)
class CredentialUse:
    """One workload's use of a token in one workflow (its earliest known use there)."""

    token_id: str
    workload_id: str
    workflow_id: str
    t: float
    event_id: str
    inherited: bool
    expires_at: float
    owner: bool = False  # the presenter is the token's subject
    issuer: str | None = None  # the token's iss, named in its revocation's SET
    # not a use: the workflow completed at ``t`` (``event_id``: the completion) after using the
    # token; sent only when sharing is allowed, decided by ``tether.core.sharing``
    completed: bool = False
    done: float | None = None  # a use: when its workflow had completed, if it had when reported


def observe(
    state: TokenState | None,
    use: CredentialUse,
    cfg: DetectionConfig,
    now: Stamp,
    out: Outbox,
) -> TokenState:
    """Fold one use into the token's state; emit what it newly reveals.

    Only what the use changes is compared (the use against the others, and the others against
    it): O(pairs) per use, never O(pairs²). At most ``limits.token_pairs`` (workload, workflow)
    uses are remembered per token; a use past that is still compared with them both ways, and
    its own findings are not remembered (raised again, with the same id, if it is reported
    again), so a widely shared token costs bounded state and time and still reveals a new
    workload presenting it.
    """
    st = state if state is not None else TokenState(use.token_id)
    st.expires_at = max(st.expires_at, use.expires_at)
    if use.issuer is not None and (st.issuer is None or use.issuer < st.issuer):
        st.issuer = use.issuer  # the least of those presented: the same in any arrival order
    if use.completed:
        return st  # a completion, not a use: nothing to compare
    pairs = st.pairs
    workload, workflow = use.workload_id, use.workflow_id
    for i, prev in enumerate(pairs):
        if prev.workload_id != workload or prev.workflow_id != workflow:
            continue
        if (prev.t, prev.event_id) <= (use.t, use.event_id) and (
            prev.inherited or not use.inherited
        ):
            return st
        use_t, use_id = min((prev.t, prev.event_id), (use.t, use.event_id))
        pairs[i] = new = PairUse(
            workload,
            workflow,
            use_t,
            use_id,
            prev.inherited and use.inherited,
            prev.owner or use.owner,
        )
        kept = True
        break
    else:
        new = PairUse(workload, workflow, use.t, use.event_id, use.inherited, use.owner)
        kept = len(pairs) < cfg.limits.token_pairs
        if kept:
            pairs.append(new)
    if not new.inherited:
        _compare(st, new, kept, use.expires_at, cfg, now, out)
    return st


def _compare(  # the pair and where its findings go
    st: TokenState,
    new: PairUse,
    kept: bool,
    expires: float,
    cfg: DetectionConfig,
    now: Stamp,
    out: Outbox,
) -> None:
    """Findings between ``new`` and every other live (not inherited) use of the token.

    Of two uses by different workloads, the later in event time is flagged
    (``credential_reuse``) after the earlier, unless the later presenter is the token's subject
    and the earlier is not: event times are the presenters' word, so a thief cannot frame the
    subject by back-dating; the finding then falls on the other presenter. Of two uses by one
    workload in different workflows, the later is flagged (``credential_shared_across_workflows``).
    ``new`` is flagged after the earliest such partner; each other use is flagged after ``new``.
    Monotone, so the findings do not depend on the order uses arrive in."""
    key = (new.t, new.event_id)
    reuse: PairUse | None = None  # the earliest use ``new`` is flagged after (reuse)
    shared: PairUse | None = None
    for o in st.pairs:
        if o is new or o.inherited:
            continue
        okey = (o.t, o.event_id)
        if okey == key:
            continue
        if o.workload_id != new.workload_id:
            later, earlier = _reuser(new, o, okey < key)
            if later is new:
                reuse = _earliest(reuse, o)
            else:
                _flag(
                    st,
                    later,
                    earlier,
                    C.CREDENTIAL_REUSE,
                    remember=True,
                    expires=expires,
                    cfg=cfg,
                    now=now,
                    out=out,
                )
        elif o.workflow_id != new.workflow_id:
            if okey < key:
                shared = _earliest(shared, o)
            else:
                _flag(
                    st,
                    o,
                    new,
                    C.CREDENTIAL_SHARED,
                    remember=True,
                    expires=expires,
                    cfg=cfg,
                    now=now,
                    out=out,
                )
    if reuse is not None:
        _flag(
            st,
            new,
            reuse,
            C.CREDENTIAL_REUSE,
            remember=kept,
            expires=expires,
            cfg=cfg,
            now=now,
            out=out,
        )
    if shared is not None:
        _flag(
            st,
            new,
            shared,
            C.CREDENTIAL_SHARED,
            remember=kept,
            expires=expires,
            cfg=cfg,
            now=now,
            out=out,
        )


def _earliest(a: PairUse | None, b: PairUse) -> PairUse:
    return b if a is None or (b.t, b.event_id) < (a.t, a.event_id) else a


def _reuser(new: PairUse, o: PairUse, new_is_later: bool) -> tuple[PairUse, PairUse]:
    """(the use flagged for credential_reuse, the one it is flagged after), of two uses by
    different workloads: the later in event time, unless it is the token's subject's and the
    earlier is not (the subject is never the one reusing its own token)."""
    later, earlier = (new, o) if new_is_later else (o, new)
    if later.owner and not earlier.owner:
        return earlier, later
    return later, earlier


def _flag(  # noqa: PLR0913  # one finding's facts
    st: TokenState,
    u: PairUse,
    o: PairUse,
    code: str,
    *,
    remember: bool,
    expires: float,
    cfg: DetectionConfig,
    now: Stamp,
    out: Outbox,
) -> None:
    """Raise ``code`` for use ``u``, presented after ``o`` (once per token, workload, workflow
    and code; ``flagged`` spares deriving the finding id of one already raised)."""
    if not cfg.enabled(code):
        return
    flagged = st.flagged
    mark = (code, u.workload_id, u.workflow_id)
    if flagged is not None and mark in flagged:
        return
    if code == C.CREDENTIAL_REUSE and o.owner and (o.t, o.event_id) > (u.t, u.event_id):
        summary = (  # a presenter dated before the token's own subject: never the subject's fault
            f"token {st.token_id} presented by {u.workload_id} here, and by its subject "
            f"{o.workload_id} in workflow {o.workflow_id}"
        )
    else:
        why = (
            f"by {o.workload_id} in workflow {o.workflow_id}"
            if code == C.CREDENTIAL_REUSE
            else f"in workflow {o.workflow_id}"
        )
        summary = (
            f"token {st.token_id} presented by {u.workload_id} here after it was presented {why}"
        )
    v = Violation(
        code=code,
        key=(st.token_id, u.workload_id, u.workflow_id),
        workflow_id=u.workflow_id,
        workload_id=u.workload_id,
        event_time=u.t,
        evidence=(o.event_id, u.event_id),
        summary=summary,
        token_id=st.token_id,
        token_expires=expires,
        token_issuer=st.issuer,
    )
    fid = v.finding_id
    fired = st.fired
    if fired is not None and fid in fired:
        if flagged is None:
            st.flagged = flagged = set()
        flagged.add(mark)
        return
    emit(v, cfg, now, out)  # first: remembered as raised only once it was
    if remember:
        if fired is None:
            st.fired = fired = set()
        fired.add(fid)
        if flagged is None:
            st.flagged = flagged = set()
        flagged.add(mark)
