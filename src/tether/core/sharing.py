"""Completion of a workflow whose credential other workflows share (sharing allowed).

With ``credential_shared_across_workflows`` disabled (SPIRE-style cached SVIDs: one workload's
credential used in many of its workflows by design), a workflow's completion must not revoke a
credential another live workflow still uses: every gateway would deny that workflow's calls.
Which other workflows use a token is a cross-workflow fact, so the decision is the token
index's (partitioned by ``token_id``, like ``credential_reuse``). Workflow sessions report each
completion of a workflow, once per token it used by then, as a ``CredentialUse`` with
``completed`` set; the index decides it here.

Semantics (docs/contract.md, "Completion and shared credentials"):

* Workflow W is *live with token X at time c* when X's subject presented X in W, in a use the
  session trusted and not inherited, at some ``u <= c`` (``first``: the earliest), W has not
  completed at or before ``c``, and ``c <= first + idle_timeout_s`` (the index does not see a
  workflow's later activity: a workflow that keeps one token longer than that no longer defers).
  Uses by another workload (``credential_reuse``) or a delegatee (``inherited_credential``) never
  make a workflow live: nobody's claims can spare someone else's token.
* A completion of A at ``c`` is decided two grace periods after ``c`` (one for uses dated before
  it to settle in their workflows, one for them to reach the index across partitions and
  workers): it revokes X (reason ``task_completed``, in A's name, the revocation id unchanged)
  unless another workflow is live with X at ``c``, or defers.
* A deferred completion is not forgotten: X is revoked ``idle_timeout_s`` after the earliest
  deferred completion at the latest (unless a completion at or after it revoked X first), so
  opening workflow after workflow cannot keep a credential unrevoked; its expiry applies anyway.
* Bounded: at most ``limits.token_workflows`` workflows are remembered per token; one that does
  not fit makes the token *crowded* and every completion of it revokes (toward revoking).
  Decided entries are forgotten a grace period after their decision, open ones once they can
  no longer be live.

Every condition is on event times, so the set of revocations does not depend on the order or
duplication of deliveries within the grace period.
"""

from __future__ import annotations

from tether.core import codes as C
from tether.core.config import DetectionConfig
from tether.core.credentials import CredentialUse
from tether.core.violations import Outbox, Stamp, completion_revocation
from tether.models.outputs import Revocation
from tether.models.session import DEFERRED, REVOKED, WAITING, TokenState, WorkflowShare

_INF = float("inf")


def shares_credentials(cfg: DetectionConfig) -> bool:
    """Whether credentials may be shared across workflows: then completions are decided by the
    token index. Sharing is allowed when its finding is disabled."""
    return not cfg.enabled(C.CREDENTIAL_SHARED)


def settle_s(cfg: DetectionConfig) -> float:
    """How long after a completion it is decided (see the module docstring)."""
    return 2 * cfg.grace_s


def note(st: TokenState, use: CredentialUse, cfg: DetectionConfig, now: Stamp, out: Outbox) -> bool:
    """Fold a completion, or a use that can make its workflow live, into the token's shares;
    returns whether anything changed (the caller reschedules the token)."""
    if not use.completed and (use.inherited or not use.owner):
        return False  # only the subject's own uses keep a workflow live
    shares = st.shares
    if shares is None:
        st.shares = shares = {}
    sh = shares.get(use.workflow_id)
    if sh is None:
        if len(shares) >= cfg.limits.token_workflows:
            st.crowded = True  # toward revoking: every completion of this token now revokes
            if use.completed and not cfg.shadow and cfg.revoke_on_completion:
                out.revocations.append(
                    _revocation(st, use.workflow_id, use.t, use.event_id, cfg, now)
                )
            return True
        shares[use.workflow_id] = sh = WorkflowShare()
        if not use.completed and use.done is not None:
            # a use reported after its workflow completed (and, perhaps, after that completion
            # was decided and forgotten): it never makes the workflow live after ``done``; the
            # completion itself is decided from its own report
            sh.done, sh.state = use.done, DEFERRED
    if not use.completed:
        if use.t >= sh.first:
            return False
        sh.first = use.t
        return True
    if sh.evidence and sh.done is not None and (sh.done, sh.evidence) <= (use.t, use.event_id):
        return False  # a duplicate, or a later completion of the same workflow
    sh.done, sh.evidence = use.t, use.event_id
    if sh.state == DEFERRED:
        sh.state = WAITING  # an earlier completion (a late delivery): decided again
    return True


def review(  # the index's arguments
    st: TokenState,
    watermark: float,
    cfg: DetectionConfig,
    now: Stamp,
    out: Outbox,
    *,
    force: bool = False,
) -> bool:
    """Decide the completions due before ``watermark`` (every waiting one with ``force``: the
    token is about to be forgotten), fire the backstop, forget what can no longer matter.
    Returns whether the state changed. O(shares²) for the due ones, at most ``token_workflows``
    each; a token is reviewed only when one of its times is passed (``next_review``)."""
    shares = st.shares or {}
    settle = settle_s(cfg)
    changed = False
    for wf, sh in sorted(shares.items(), key=_completion_order):
        done = sh.done
        if done is None or sh.state != WAITING or not (force or done + settle < watermark):
            continue
        changed = True
        if st.crowded or not _outlived(shares, wf, done, cfg):
            sh.state = REVOKED
            if not cfg.shadow and cfg.revoke_on_completion:
                out.revocations.append(_revocation(st, wf, done, sh.evidence, cfg, now))
            if st.backstop is not None and st.backstop[0] <= done:
                st.backstop = None  # revoked after the deferred completion: it is served
        else:
            sh.state = DEFERRED
            if st.backstop is None or (done, wf) < st.backstop[:2]:
                st.backstop = (done, wf, sh.evidence)
    backstop = st.backstop
    if backstop is not None and backstop[0] + cfg.idle_timeout_s < watermark:
        done, wf, evidence = backstop
        st.backstop = None
        changed = True
        if not cfg.shadow and cfg.revoke_on_completion:
            out.revocations.append(_revocation(st, wf, done, evidence, cfg, now))
    stale = [wf for wf, sh in shares.items() if _forget_at(sh, cfg) < watermark]
    for wf in stale:
        del shares[wf]
    if stale:
        changed = True
        if not shares:
            st.shares = None
    return changed


def next_review(st: TokenState, cfg: DetectionConfig) -> float:
    """The event time after which ``review`` has something to do for this token."""
    due = st.backstop[0] + cfg.idle_timeout_s if st.backstop is not None else _INF
    settle = settle_s(cfg)
    for sh in (st.shares or {}).values():
        if sh.done is not None and sh.state == WAITING:
            due = min(due, sh.done + settle)
        else:
            due = min(due, _forget_at(sh, cfg))
    return due


def _completion_order(item: tuple[str, WorkflowShare]) -> tuple[float, str]:
    done = item[1].done
    return (done if done is not None else _INF, item[0])


def _outlived(shares: dict[str, WorkflowShare], wf: str, done: float, cfg: DetectionConfig) -> bool:
    """Whether a workflow other than ``wf`` is live with the token at ``done``."""
    idle = cfg.idle_timeout_s
    for other, sh in shares.items():
        if other == wf or sh.first > done or done > sh.first + idle:
            continue
        if sh.done is None or sh.done > done:
            return True
    return False


def _forget_at(sh: WorkflowShare, cfg: DetectionConfig) -> float:
    """When an entry can no longer change a decision: a grace period after the last completion
    it can count for (decided completions at or before its own; open workflows while live)."""
    last = sh.first + cfg.idle_timeout_s
    if sh.done is not None:
        if sh.state == WAITING:
            return _INF
        last = min(last, sh.done) if sh.first <= sh.done else sh.done
    return last + settle_s(cfg) + cfg.grace_s


def _revocation(  # one revocation's facts
    st: TokenState, workflow_id: str, done: float, evidence: str, cfg: DetectionConfig, now: Stamp
) -> Revocation:
    return completion_revocation(
        workflow_id, st.token_id, st.expires_at, done, evidence, cfg, now, token_issuer=st.issuer
    )
