"""Ports the pure core depends on; adapters implement them (per-call policy today)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tether.core.handoff import Standing
from tether.models.common import Severity
from tether.models.events import ToolCallIntent
from tether.models.session import Session


@dataclass(frozen=True, slots=True)
class PolicyOutcome:
    """A per-call policy verdict: the determining policy ids and, for a deny, its severity."""

    allowed: bool
    policy_ids: tuple[str, ...] = ()
    severity: Severity | None = None
    revision: str | None = None


class CallPolicy(Protocol):
    """Decides one tool call given what the session knows (must be pure and deterministic)."""

    def check(self, session: Session, event: ToolCallIntent, standing: Standing) -> PolicyOutcome:
        """Evaluate the call."""
        ...


class AllowAll:
    """The policy used when per-call policy is switched off."""

    _ALLOW = PolicyOutcome(allowed=True)

    def check(self, session: Session, event: ToolCallIntent, standing: Standing) -> PolicyOutcome:
        """Always allow."""
        return self._ALLOW
