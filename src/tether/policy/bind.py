"""Adapts the Cedar evaluator to the core's ``CallPolicy`` port: intent + session -> request."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from tether.core.handoff import Role, Standing
from tether.core.ports import PolicyOutcome
from tether.models.common import SENSITIVITY_LEVEL, SEVERITY_RANK, Severity
from tether.models.events import ToolCallIntent
from tether.models.session import Session
from tether.policy.evaluate import PolicyEvaluator
from tether.policy.loader import PolicyPack, load_builtin_pack, load_policy_dir
from tether.policy.request import UNKNOWN_MAX_SENSITIVITY, PolicyRequest
from tether.policy.result import PolicyResult

_FRONT_CACHE_MAX: Final = 65536
_SEVERITIES: Final = frozenset(SEVERITY_RANK)
_NO_GRANT: Final = ("", "", "", UNKNOWN_MAX_SENSITIVITY)


class CedarCallPolicy:
    """Per-call Cedar policy with a decision cache keyed on the request's facts.

    The key is built straight from the event and session (no intermediate objects), so a cache
    hit costs a tuple and a dict lookup; a miss builds the ``PolicyRequest`` and asks Cedar.
    """

    def __init__(self, pack: PolicyPack) -> None:
        self.evaluator = PolicyEvaluator(pack)
        self.revision = pack.revision
        self._cache: dict[tuple[object, ...], PolicyOutcome] = {}
        # Operations no forbid can touch and only unconditional permits allow: decided once.
        self._settled = {
            op: PolicyOutcome(allowed=True, policy_ids=ids, revision=pack.revision)
            for op, ids in pack.settled_ops.items()
        }

    @classmethod
    def from_dir(cls, directory: Path | None, pack: str = "default") -> CedarCallPolicy:
        """Load and validate a policy directory, or (``directory=None``) a built-in pack."""
        loaded = load_builtin_pack(pack) if directory is None else load_policy_dir(directory)
        return cls(loaded)

    def check(self, session: Session, event: ToolCallIntent, standing: Standing) -> PolicyOutcome:
        """Evaluate one call."""
        action = event.action
        settled = self._settled.get(action.operation)
        if settled is not None:
            return settled
        start = session.started
        t = event.t
        if start is not None:
            facts = start.policy_facts
            dests = start.destinations
            granted = not dests or action.destination in dests
        else:
            facts = _NO_GRANT
            granted = False
        hour = int(t // 3600)
        initiator = standing.role is Role.INITIATOR
        key = (
            event.agent.workload_id,
            action.operation,
            action.tool,
            facts,
            action.data_sensitivity,
            action.destination,
            granted,
            action.resource.split(":", 1)[0] if ":" in action.resource else "",
            hour,
            standing.depth,
            initiator,
        )
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        task, purpose, autonomy, max_level = facts
        scheme = str(key[7]).lower()
        req = PolicyRequest(
            workload_id=event.agent.workload_id,
            operation=action.operation,
            tool=action.tool,
            task_type=task,
            purpose=purpose,
            autonomy=autonomy,
            data_sensitivity=action.data_sensitivity,
            sensitivity_level=SENSITIVITY_LEVEL[action.data_sensitivity],
            max_sensitivity_level=max_level,
            destination=action.destination,
            destination_granted=granted,
            resource_scheme=scheme,
            hour_utc=hour % 24,
            weekday=(hour // 24 + 3) % 7,  # 1970-01-01 was a Thursday
            delegation_depth=standing.depth,
            is_initiator=initiator,
            delegated=standing.depth > 0,
        )
        result = self.evaluator.evaluate(req)
        outcome = PolicyOutcome(
            allowed=result.allowed,
            policy_ids=result.policy_ids,
            severity=_severity(result),
            revision=self.revision,
        )
        if len(self._cache) >= _FRONT_CACHE_MAX:
            self._cache.clear()
        self._cache[key] = outcome
        return outcome


def _severity(result: PolicyResult) -> Severity | None:
    sev = result.severity
    if sev is None:
        return None
    return sev if sev in _SEVERITIES else "high"  # type: ignore[return-value]  # checked just above
