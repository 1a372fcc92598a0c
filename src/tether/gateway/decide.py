"""The gateway's verdict on one request: allow (2xx), deny (403), or cannot decide (503).

Pure given its port: the revocation set answers, the clock is the set's own. The order:

1. no route matches, or a required identity is missing or unreadable → 403 (a request the
   gateway cannot identify is never waved through);
2. any identity revoked now → 403 ``<kind>_revoked``;
3. the feed is fresh → allow;
4. in doubt (not bootstrapped, heartbeats stale): each identity is asked again with the
   strictest tier, so the registry fallback (Redis) still answers; a revoked answer there, or
   a fail-closed tier, → 503 ``stale`` (the proxy's error path: nginx and Envoy deny), a tier
   that fails open → allow, flagged ``degraded``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, Protocol

from tether.gateway.mapping import KINDS, Facts, IdentityKind
from tether.models.outputs import TargetKind

Outcome = Literal["allow", "deny", "unavailable"]
STATUS: Final[dict[Outcome, int]] = {"allow": 200, "deny": 403, "unavailable": 503}
TIER_ORDER: Final = ("high", "default", "low")


class Revocations(Protocol):
    """What the gateway asks of the watcher's revocation set (``Watcher.revocations``)."""

    def revoked_until(self, kind: TargetKind, id: str) -> float | None:
        """Until when a target is revoked, or None."""
        ...

    def is_fresh(self) -> bool:
        """Whether "not revoked" is trusted right now."""
        ...

    def is_revoked(
        self,
        token_id: str | None = None,
        workflow_id: str | None = None,
        workload_id: str | None = None,
        delegation_id: str | None = None,
        *,
        tier: str = "default",
    ) -> bool:
        """Revoked, or in doubt on a fail-closed tier."""
        ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer, with a short machine-readable reason for the ``x-tether-reason`` header."""

    outcome: Outcome
    reason: str
    degraded: bool = False

    @property
    def status(self) -> int:
        """The HTTP status a forward-auth proxy acts on."""
        return STATUS[self.outcome]


def strictest(tiers: set[str], fail_closed: frozenset[str]) -> str:
    """The tier that decides a call in doubt: a fail-closed one if any applies."""
    closing = sorted(t for t in tiers if t in fail_closed)
    if closing:
        return min(closing, key=lambda t: TIER_ORDER.index(t) if t in TIER_ORDER else -1)
    return min(tiers, default="default")


def decide(  # noqa: PLR0911  # one return per verdict, in the documented order
    facts: Facts, tiers: set[str], revocations: Revocations, fail_closed: frozenset[str]
) -> Verdict:
    """The verdict on one request (see the module docstring for the order)."""
    route = facts.route
    if route is None:
        return Verdict("deny", "no_route")
    for kind in route.require:
        if not facts.ids[kind]:
            unreadable = any(u.startswith(f"{kind}:") for u in facts.unreadable)
            return Verdict("deny", f"{'unreadable' if unreadable else 'missing'}_{kind}")
    if any(u.startswith("token:") for u in facts.unreadable) and "token" in route.require:
        return Verdict("deny", "unreadable_token")  # one clean token beside an unreadable one
    for kind in KINDS:
        for ident in facts.ids[kind]:
            if revocations.revoked_until(_target(kind), ident) is not None:
                return Verdict("deny", f"{kind}_revoked")
    if revocations.is_fresh():
        return Verdict("allow", "ok")
    tier = strictest(tiers, fail_closed)
    asked = False
    for kind in KINDS:
        for ident in facts.ids[kind]:
            asked = True
            if _ask(revocations, kind, ident, tier):
                return Verdict("unavailable", "stale")
    if not asked and revocations.is_revoked(tier=tier):
        return Verdict("unavailable", "stale")
    return Verdict("allow", "stale_fail_open", degraded=True)


def _target(kind: IdentityKind) -> TargetKind:
    return kind


def _ask(revocations: Revocations, kind: IdentityKind, ident: str, tier: str) -> bool:
    if kind == "token":
        return revocations.is_revoked(token_id=ident, tier=tier)
    if kind == "workload":
        return revocations.is_revoked(workload_id=ident, tier=tier)
    if kind == "workflow":
        return revocations.is_revoked(workflow_id=ident, tier=tier)
    return revocations.is_revoked(delegation_id=ident, tier=tier)
