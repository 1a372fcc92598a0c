"""The attack catalogue: the kinds of attack and the finding codes each must raise."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from tether.demo.catalog import MAX_BENIGN_HOPS, SENSITIVITY, Task


class AttackKind(StrEnum):
    """The kinds of attack the fleet injects; each value is also the events' label."""

    STOLEN_TOKEN_REPLAY = "stolen_token_replay"
    SCOPE_ESCALATION = "scope_escalation"
    UNDELEGATED_ACTOR = "undelegated_actor"
    EXFILTRATION = "exfiltration"
    ACTIVITY_AFTER_COMPLETION = "activity_after_completion"
    TOOL_NOT_GRANTED = "tool_not_granted"
    SENSITIVITY_EXCEEDED = "sensitivity_exceeded"
    EXPIRED_CREDENTIAL = "expired_credential"
    DELEGATION_AMPLIFICATION = "delegation_amplification"
    INHERITED_CREDENTIAL = "inherited_credential"
    DELEGATION_EXPIRED = "delegation_expired"
    UNKNOWN_WORKFLOW = "unknown_workflow"
    TASK_WINDOW_EXCEEDED = "task_window_exceeded"
    DELEGATION_DEPTH_EXCEEDED = "delegation_depth_exceeded"


_K = AttackKind

#: The finding codes docs/contract.md says each attack raises, on its workflow, and no others.
CODES: Mapping[AttackKind, frozenset[str]] = MappingProxyType(
    {
        _K.STOLEN_TOKEN_REPLAY: frozenset({"credential_reuse", "identity_mismatch"}),
        _K.SCOPE_ESCALATION: frozenset({"scope_escalation"}),
        _K.UNDELEGATED_ACTOR: frozenset({"undelegated_actor"}),
        _K.EXFILTRATION: frozenset({"destination_not_granted"}),
        _K.ACTIVITY_AFTER_COMPLETION: frozenset({"activity_after_completion"}),
        _K.TOOL_NOT_GRANTED: frozenset({"tool_not_granted"}),
        _K.SENSITIVITY_EXCEEDED: frozenset({"sensitivity_exceeded"}),
        _K.EXPIRED_CREDENTIAL: frozenset({"credential_expired"}),
        _K.DELEGATION_AMPLIFICATION: frozenset({"delegation_amplification"}),
        _K.INHERITED_CREDENTIAL: frozenset({"inherited_credential"}),
        _K.DELEGATION_EXPIRED: frozenset({"delegation_expired"}),
        _K.UNKNOWN_WORKFLOW: frozenset({"unknown_workflow"}),
        _K.TASK_WINDOW_EXCEEDED: frozenset({"task_window_exceeded"}),
        _K.DELEGATION_DEPTH_EXCEEDED: frozenset({"delegation_depth_exceeded"}),
    }
)

_NEEDS_CHAIN = {_K.DELEGATION_AMPLIFICATION, _K.INHERITED_CREDENTIAL, _K.DELEGATION_EXPIRED}


def fits(kind: AttackKind, task: Task) -> bool:
    """Whether an attack of `kind` can be staged in a workflow of `task`."""
    if kind in _NEEDS_CHAIN:
        return bool(task.chain)
    if kind is _K.DELEGATION_DEPTH_EXCEEDED:
        return len(task.chain) > MAX_BENIGN_HOPS
    if kind is _K.SENSITIVITY_EXCEEDED:
        return task.max_sensitivity != SENSITIVITY[-1]
    if kind is _K.STOLEN_TOKEN_REPLAY:
        return not task.batch
    return True


def fits_victim(task: Task, thief: Task) -> bool:
    """Whether `task` can be the victim whose token the initiator of `thief` replays."""
    return not task.batch and task.initiator != thief.initiator
