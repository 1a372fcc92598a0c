"""The SDK: an emitter for agents and token services, a revocation watcher for gateways."""

from tether.sdk.emitter import EmitFailedError, Emitter
from tether.sdk.events import (
    InvalidEventError,
    new_delegation_granted,
    new_event_id,
    new_tool_call_intent,
    new_workflow_completed,
    new_workflow_started,
)
from tether.sdk.revocation_set import (
    DEFAULT_FAIL_CLOSED_TIERS,
    HoldFull,
    RecordVerifier,
    RevocationSet,
    WatcherStats,
)
from tether.sdk.watcher import Watcher
from tether.security.proof import SourceKey

__all__ = [
    "DEFAULT_FAIL_CLOSED_TIERS",
    "EmitFailedError",
    "Emitter",
    "HoldFull",
    "InvalidEventError",
    "RecordVerifier",
    "RevocationSet",
    "SourceKey",
    "Watcher",
    "WatcherStats",
    "new_delegation_granted",
    "new_event_id",
    "new_tool_call_intent",
    "new_workflow_completed",
    "new_workflow_started",
]
