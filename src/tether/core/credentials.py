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

MAX_PAIRS = 256  # per token; beyond this a sprayed token is already flagged many times over


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


def observe(
    state: TokenState | None,
    use: CredentialUse,
    cfg: DetectionConfig,
    now: Stamp,
    out: Outbox,
) -> TokenState:
    """Fold one use into the token's state; emit what it newly reveals."""
    st = state if state is not None else TokenState(use.token_id)
    st.expires_at = max(st.expires_at, use.expires_at)
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
        pairs[i] = PairUse(
            workload,
            workflow,
            use_t,
            use_id,
            prev.inherited and use.inherited,
            prev.owner or use.owner,
        )
        break
    else:
        if len(pairs) >= MAX_PAIRS:
            return st
        pairs.append(PairUse(workload, workflow, use.t, use.event_id, use.inherited, use.owner))
    _scan(st, use.expires_at, cfg, now, out)
    return st


def _scan(st: TokenState, expires: float, cfg: DetectionConfig, now: Stamp, out: Outbox) -> None:
    live = [u for u in st.pairs if not u.inherited]
    if len(live) < 2:  # noqa: PLR2004  # reuse needs two uses
        return
    for later in live:
        key = (later.t, later.event_id)
        for earlier in live:
            if (earlier.t, earlier.event_id) >= key:
                continue
            u, o, swapped = later, earlier, False
            if u.owner and not o.owner and u.workload_id != o.workload_id:
                # The token's own subject is not the one reusing it, whatever the event times
                # say (they are the presenter's word): the finding falls on the other presenter.
                u, o, swapped = earlier, later, True
            workload, workflow = u.workload_id, u.workflow_id
            other_w, other_f = o.workload_id, o.workflow_id
            if other_w != workload:
                code, why = C.CREDENTIAL_REUSE, f"by {other_w} in workflow {other_f}"
            elif other_f != workflow:
                code, why = C.CREDENTIAL_SHARED, f"in workflow {other_f}"
            else:
                continue
            v = Violation(
                code=code,
                key=(st.token_id, workload, workflow),
                workflow_id=workflow,
                workload_id=workload,
                event_time=u.t,
                evidence=(o.event_id, u.event_id),
                summary=f"token {st.token_id} presented by {workload} here, and by its subject "
                f"{other_w} in workflow {other_f}"
                if swapped
                else f"token {st.token_id} presented by {workload} here after it was "
                f"presented {why}",
                token_id=st.token_id,
                token_expires=expires,
            )
            fid = v.finding_id
            fired = st.fired
            if (fired is not None and fid in fired) or not cfg.enabled(code):
                continue
            emit(v, cfg, now, out)  # first: remembered as raised only once it was
            if fired is None:
                st.fired = fired = set()
            fired.add(fid)
