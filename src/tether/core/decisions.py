"""The decision log's last step: what a gateway consulting tether does with each call.

The fold decides what a call *revealed* (its findings, whether a check still waits). Whether a
gateway lets it through depends on something else: whether any of the call's targets (its
token, workflow, workload, or a delegation of its chain) is revoked at that moment, by this
workflow's findings, another workflow's, a completion, the token index or an operator. That is
read from a ``RevocationView`` when the step's outputs are put together, after the step's own
revocations were added to the view, so a reader of the outputs in order (a ``Watcher``) and
the decision always agree.

Time: "at that moment" is the decision's ``evaluated_at`` (processing: event time in replay,
the wall clock in the worker), compared with each revocation's ``not_after``, exactly as
``RevocationSet.is_revoked`` compares its clock. A call dated before a revocation was issued,
but decided after it was, is denied: a gateway asked then would deny it.

Late findings: a finding that names an intent already decided (``credential_reuse`` from the
token index, ``unknown_workflow`` a grace period after the first call, ``activity_after_completion``
from a late completion, what a late start re-judges) produces an updated decision for that
``event_id``, with the finding added and judged again at that moment. ``DecisionLog`` keeps the
recent decisions for that, bounded in time and count.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Final, Protocol

from tether.core import codes as C
from tether.models.outputs import Decision, Finding

# the token index's findings name two uses: the one flagged is the last of the evidence
_FLAGGED_LAST: Final = frozenset({C.CREDENTIAL_REUSE, C.CREDENTIAL_SHARED})
KEEP_MAX: Final = 1 << 17
"""Decisions kept at most for late findings (the oldest go first): bounds memory under a flood."""
_FORGET_EVERY: Final = 256


class RevocationView(Protocol):
    """Revocations in force, by target key (``<kind>:<id>``), as far as this process knows.

    The in-process monitor's view is what it issued itself (``tether.core.floor.NotAfterFloor``,
    the longest ``not_after`` per key: a revocation is never shorter); the streaming worker's
    adds what every worker published (``streams.ledger.RevocationFloor``). An operator's
    revocation feeds the same view. Tested in tests/unit/test_decision_log.py.
    """

    def revoked_until(self, key: str, now: float) -> float | None:
        """The ``not_after`` of ``key``'s revocation if it is in force at ``now``, else None."""
        ...


def targets(d: Decision) -> list[str]:
    """The keys a gateway checks for this call."""
    keys = [f"workflow:{d.workflow_id}", f"workload:{d.workload_id}"]
    if d.token_id:
        keys.append(f"token:{d.token_id}")
    keys.extend(f"delegation:{i}" for i in d.delegation_ids)
    return keys


def judge(d: Decision, view: RevocationView) -> Decision:
    """``d`` as a gateway would have it at ``d.evaluated_at``: deny when a target is revoked."""
    now = d.evaluated_at.timestamp()
    until = view.revoked_until
    revoked = [k for k in targets(d) if until(k, now) is not None]
    if revoked:
        revoked.sort()
        value, reason = "deny", "revoked"
    elif not d.final:
        value, reason = "pending", "awaiting_checks"
    else:
        value, reason = "allow", None
    if value == d.decision and reason == d.reason and revoked == d.revoked_targets:
        return d
    return d.model_copy(update={"decision": value, "reason": reason, "revoked_targets": revoked})


def flagged_event(f: Finding) -> str | None:
    """The event a finding names as its cause (the use flagged, for the token index's)."""
    ev = f.evidence
    if not ev:
        return None
    return ev[-1] if f.code in _FLAGGED_LAST else ev[0]


class DecisionLog:
    """Judges each step's decisions and adds the late findings (see the module docstring).

    Memory: the last decision of each intent decided within ``keep_s`` of event time, at most
    ``KEEP_MAX``; a late finding for one forgotten is still a finding (and its revocation still
    denies the call's later calls), only without an updated decision.
    """

    def __init__(self, view: RevocationView, keep_s: float) -> None:
        self.view = view
        self.keep_s = keep_s
        # (workflow_id, event_id) -> (event time it was kept at, its last decision)
        self._last: OrderedDict[tuple[str, str], tuple[float, Decision]] = OrderedDict()
        self._steps = 0  # since the last _forget

    def __len__(self) -> int:
        return len(self._last)

    def settle(
        self, decisions: list[Decision], start: int, findings: Sequence[Finding], t: float
    ) -> None:
        """Judge ``decisions[start:]`` (this step's) in place, after adding to them, or to an
        updated decision appended for an earlier one, the codes of ``findings`` (this step's)
        that name them. ``t``: the step's event time (for forgetting)."""
        last = self._last
        updates: dict[tuple[str, str], Decision] = {}
        step = {_key(decisions[i]): i for i in range(start, len(decisions))} if findings else {}
        for f in findings:
            eid = flagged_event(f)
            if eid is None:
                continue
            # event ids are unique within a workflow only: another workflow's finding that
            # names the same id must not touch this call's decision
            key = (f.workflow_id, eid)
            i = step.get(key)
            if i is not None:
                d = decisions[i]
                if f.code not in d.findings:
                    decisions[i] = _with(d, f.code, d.evaluated_at)
                continue
            kept = updates.get(key) or (last[key][1] if key in last else None)
            if kept is None or f.code in kept.findings:
                continue
            updates[key] = _with(kept, f.code, f.detected_at)
        decisions.extend(updates.values())
        view = self.view
        for i in range(start, len(decisions)):
            d = decisions[i]
            key = (d.workflow_id, d.event_id)
            prior = last.pop(key, None)
            if prior is not None:  # a pending decision, or an update: its findings stay
                had = prior[1].findings
                if had and not set(had) <= set(d.findings):
                    d = d.model_copy(update={"findings": sorted({*d.findings, *had})})
            d = judge(d, view)
            decisions[i] = d
            last[key] = (t, d)
        self._steps += 1
        if self._steps >= _FORGET_EVERY or len(last) > KEEP_MAX:
            self._steps = 0
            self._forget(t)

    def _forget(self, t: float) -> None:
        """Drop what is older than ``keep_s`` (every ``_FORGET_EVERY`` steps: amortized O(1))."""
        last = self._last
        horizon = t - self.keep_s
        while last:
            key, kept = last.popitem(last=False)
            if kept[0] >= horizon and len(last) < KEEP_MAX:
                last[key] = kept  # the oldest is still wanted: back in front, and done
                last.move_to_end(key, last=False)
                break


def _key(d: Decision) -> tuple[str, str]:
    return d.workflow_id, d.event_id


def _with(d: Decision, code: str, at: object) -> Decision:
    return d.model_copy(update={"findings": sorted({*d.findings, code}), "evaluated_at": at})
