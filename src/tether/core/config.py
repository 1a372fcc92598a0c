"""Detection tuning: grace, chain limits, per-code severity and response, shadow mode, and
scoped exceptions (docs/tuning.md)."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from tether.core.codes import RULES, Rule
from tether.models.common import Severity
from tether.models.outputs import Response


class StateLimits(BaseModel):
    """Caps on what one workflow's session may hold, so that its changelog record stays far
    below the broker's ``message.max.bytes`` (1 MB) whatever the input, and no event's cost
    grows with the shape of its workflow.

    Sizes are counted as the state codec writes them (JSON bytes of the ids, scopes and events
    held). With the defaults a session record stays under 256 KiB: the start (bounded by the
    64 KiB input record) + ``event_id_bytes`` + ``state_bytes``. Passing a cap other than
    ``event_id_bytes`` raises ``workflow_limits_exceeded`` once (the workflow is revoked) and
    what did not fit is dropped (``tether.core.fold``: never a check on the event itself, and
    only ever in the direction of more findings); event ids are summarised without a finding
    (an honest busy workflow remembers the most recent ones). Each is a setting
    (``TETHER_LIMIT_<NAME>``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    state_bytes: int = Field(
        128 * 1024,
        ge=4096,
        description="bytes of tokens, uses, delegations, pending events, recent calls and "
        "findings fired that one workflow's session may hold",
    )
    event_id_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="bytes of event ids one workflow remembers for dedup (the oldest go first)",
    )
    pending: int = Field(256, ge=1, description="events of one workflow waiting a grace period")
    tokens: int = Field(1024, ge=1, description="distinct tokens tracked per workflow")
    delegations: int = Field(256, ge=1, description="delegations remembered per workflow")
    recent: int = Field(1024, ge=1, description="calls kept for a grace period per workflow")
    token_pairs: int = Field(
        64, ge=2, description="(workload, workflow) uses remembered per token by the token index"
    )
    token_workflows: int = Field(
        256,
        ge=2,
        description="workflows remembered per token when credentials may be shared across "
        "workflows; past it, every completion of that token revokes it",
    )


def check_codes(codes: object) -> None:
    """Refuse unknown finding codes, naming the known ones (a misspelt code must never be a
    tuning silently ignored)."""
    unknown = (
        sorted(str(c) for c in codes if c not in RULES)
        if isinstance(codes, (set, frozenset, dict, list, tuple))
        else []
    )
    if unknown:
        raise ValueError(
            f"unknown finding code(s): {', '.join(unknown)}; the known codes are: "
            + ", ".join(sorted(RULES))
        )


_PREFIX: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/]+/")
MAX_EXCEPTIONS: Final = 1000
"""Exceptions one configuration may hold: each finding is matched against all of them, so a
storm of findings an attacker provokes costs at most this many cheap comparisons each."""


class TuningException(BaseModel):
    """A scoped, expiring exception: a finding it matches is still reported (with
    ``exception`` naming it) but none of its response is enforced.

    It matches only on fields tether holds as authoritative for the finding: the code, the
    acting workload (which the source registry authorizes each source to assert), the tool and
    the workflow id of the causing event. It never matches on free text an agent writes
    (summary, resource, destination, credential claims). An exception for workload X can thus
    be claimed by any source allowed to assert workload X: the source registry bounds it, and
    a cause that was not authenticated (a registry in audit mode) never matches. It must name
    a workload (or a workload path prefix): an exception without one would be every agent's.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=256, description="names it in findings and logs")
    reason: str = Field(min_length=1, max_length=2000, description="why (required)")
    expires: AwareDatetime = Field(
        description="RFC 3339 with a zone; from this instant (event time, or detection time "
        "if later) it no longer applies"
    )
    codes: frozenset[str] = Field(
        frozenset(), description="finding codes it covers; empty: every code"
    )
    workload: str | None = Field(None, min_length=1, description="the acting workload id")
    workload_prefix: str | None = Field(
        None,
        description="a workload id path prefix ending in '/' (spiffe://td/ns/ci/): every "
        "workload under it",
    )
    tool: str | None = Field(None, min_length=1, description="the tool called (exact)")
    workflow: str | None = Field(
        None, min_length=1, description="workflow id glob (fnmatch: *, ?, [..]), case-sensitive"
    )

    @field_validator("codes")
    @classmethod
    def _known(cls, value: frozenset[str]) -> frozenset[str]:
        check_codes(value)
        return value

    @field_validator("workload_prefix")
    @classmethod
    def _path_prefix(cls, value: str | None) -> str | None:
        """A string prefix would broaden: ``spiffe://td/ci`` also names ``spiffe://td/ci-evil``."""
        if value is None:
            return value
        if not value.endswith("/"):
            raise ValueError("workload_prefix must end with '/' (a path prefix)")
        if "://" in value and _PREFIX.match(value) is None:
            raise ValueError("workload_prefix must name a trust domain: scheme://domain/...")
        if value == "/":
            raise ValueError("workload_prefix '/' would name every workload")
        return value

    @model_validator(mode="after")
    def _scoped(self) -> TuningException:
        if self.workload is None and self.workload_prefix is None:
            raise ValueError(
                "an exception needs workload or workload_prefix (without one it would be "
                "every agent's)"
            )
        return self

    def matches(self, code: str, workload: str, tool: str | None, workflow: str) -> bool:
        """Whether it covers this finding (expiry is the caller's: see ``exception_for``)."""
        if self.codes and code not in self.codes:
            return False
        if self.workload is not None and workload != self.workload:
            return False
        if self.workload_prefix is not None and not workload.startswith(self.workload_prefix):
            return False
        if self.tool is not None and tool != self.tool:
            return False
        return self.workflow is None or fnmatchcase(workflow, self.workflow)


class DetectionConfig(BaseModel):
    """Everything that tunes the pure core. Defaults follow docs/contract.md.

    Rules are data: each code can be disabled, or have its severity and response overridden,
    without touching code (``severity={"tool_not_granted": "high"}``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    grace_s: float = Field(
        5.0, ge=0, description="event-time wait for events that may still arrive"
    )
    max_chain_length: int = Field(3, ge=1, description="delegation hops allowed from the initiator")
    shadow: bool = Field(False, description="report findings but issue no revocations")
    disabled: frozenset[str] = Field(frozenset(), description="finding codes that never fire")
    severity: dict[str, Severity] = Field(default_factory=dict)
    response: dict[str, tuple[Response, ...]] = Field(default_factory=dict)
    revoke_on_completion: bool = Field(
        True, description="workflow.completed revokes every credential used in the workflow"
    )
    revocation_margin_s: float = Field(
        300.0, ge=0, description="added to a target's own expiry to give not_after (clock skew)"
    )
    quarantine_s: float = Field(86400.0, gt=0, description="how long a quarantined workload stays")
    workflow_revocation_s: float = Field(
        86400.0, gt=0, description="workflow revocation lifetime when the grant is unknown"
    )
    completed_retention_s: float = Field(
        900.0,
        ge=0,
        description="event time a completed workflow's summary is kept after compaction",
    )
    completed_memory_max_s: float = Field(
        86400.0,
        ge=0,
        description="event time after completion for which a completed workflow is remembered "
        "while a credential used in it is still valid (its expiry plus revocation_margin_s)",
    )
    idle_timeout_s: float = Field(
        86400.0, gt=0, description="event time after which an idle, unfinished session is dropped"
    )
    dedup_window_s: float = Field(
        3600.0, gt=0, description="event time for which event_ids are remembered per workflow"
    )
    emit_decisions: bool = Field(True, description="produce one Decision per tool-call intent")
    limits: StateLimits = Field(default_factory=StateLimits, description="per-workflow caps")
    watermark_lead_s: float | None = Field(
        1.0,
        ge=0,
        description="in-process monitors (tether replay, the demo): how far event time may run "
        "ahead of the second most advanced workflow (None: unbounded); the streaming worker "
        "bounds it by the wall clock instead",
    )

    # per-code tuning beyond the above (docs/tuning.md); kept last: appended fields
    shadow_codes: frozenset[str] = Field(
        frozenset(), description="finding codes reported but never enforced (per-code shadow)"
    )
    exceptions: tuple[TuningException, ...] = Field(
        (), max_length=MAX_EXCEPTIONS, description="scoped, expiring exceptions"
    )
    tuning_revision: str | None = Field(
        None, description="the tuning's revision, recorded in every finding and decision"
    )

    @field_validator("disabled", "severity", "response", "shadow_codes")
    @classmethod
    def _known_codes(cls, value: object) -> object:
        check_codes(value)
        return value

    def shadowed(self, code: str) -> bool:
        """Whether ``code``'s findings are reported without their response."""
        return self.shadow or code in self.shadow_codes

    def exception_for(
        self,
        code: str,
        workload: str,
        tool: str | None,
        workflow: str,
        at: float,
        *,
        authenticated: bool | None,
    ) -> TuningException | None:
        """The first exception in force at ``at`` (POSIX seconds) that covers the finding.

        ``authenticated`` False (a source registry that did not authenticate the cause): none,
        because the workload an exception is scoped to is then only the sender's word."""
        if not self.exceptions or authenticated is False:
            return None
        for exc in self.exceptions:
            if at < exc.expires.timestamp() and exc.matches(code, workload, tool, workflow):
                return exc
        return None

    def enabled(self, code: str) -> bool:
        """Whether ``code`` may fire."""
        return code not in self.disabled

    def rule(self, code: str) -> Rule:
        """The rule for ``code`` with this configuration's overrides applied."""
        base = RULES[code]
        sev = self.severity.get(code)
        resp = self.response.get(code)
        if sev is None and resp is None:
            return base
        if resp is None:
            resp = base.response
        elif not resp:
            resp = ("alert",)  # an empty response: alert only
        return Rule(code, sev or base.severity, resp, base.owasp, base.title)
