"""Detection tuning: grace, chain limits, per-code severity and response, shadow mode."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

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

    @field_validator("disabled", "severity", "response")
    @classmethod
    def _known_codes(cls, value: object) -> object:
        codes = value if isinstance(value, frozenset | set | dict) else ()
        unknown = sorted(str(c) for c in codes if c not in RULES)
        if unknown:
            raise ValueError(f"unknown finding code(s): {', '.join(unknown)}")
        return value

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
        return Rule(code, sev or base.severity, resp or base.response, base.owasp, base.title)
