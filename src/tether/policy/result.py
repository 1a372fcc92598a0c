"""The outcome of evaluating one tool call against the call policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

SEVERITIES: Final = ("low", "medium", "high", "critical")
"""Severity names, lowest first: the values a forbid policy's `@severity` may take."""

DEFAULT_SEVERITY: Final = "high"
"""Severity of a forbid policy without a `@severity` annotation, and of synthetic denials."""

EVALUATION_ERROR: Final = "tether:evaluation-error"
"""Policy id reported when Cedar could not evaluate a request (the call is denied)."""

DEFAULT_DENY: Final = "tether:default-deny"
"""Policy id reported when no permit policy matched (Cedar denies by default)."""


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """Whether the policy allows a call, and which policies decided it.

    Attributes:
        allowed: True when the call may proceed.
        policy_ids: The determining policies' `@id`s, sorted: the permits that allowed the call,
            or the forbids that denied it. Ids starting `tether:` are synthetic (`EVALUATION_ERROR`,
            `DEFAULT_DENY`).
        severity: For a denial, the highest severity among the determining policies; None when
            allowed.
        errors: Cedar's evaluation errors, if any (their presence makes the call a denial).
    """

    allowed: bool
    policy_ids: tuple[str, ...] = ()
    severity: str | None = None
    errors: tuple[str, ...] = ()


ALLOW: Final = PolicyResult(allowed=True)
"""An allow decided by no policy (policy evaluation disabled)."""


def highest(severities: list[str]) -> str:
    """Return the highest of `severities` (`DEFAULT_SEVERITY` when empty).

    Args:
        severities: Names from `SEVERITIES`.

    Returns:
        The most severe name.
    """
    return max(severities, key=SEVERITIES.index, default=DEFAULT_SEVERITY)
