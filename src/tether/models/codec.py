"""The one codec: bytes to validated input events (or a classified rejection), records to bytes."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson
from pydantic import BaseModel, ValidationError

from tether.models.events import EVENT_TYPES, InputEvent, input_event_adapter
from tether.models.outputs import DeadLetter, DeadLetterReason, Source

MAX_RECORD_BYTES: Final = 64 * 1024
_MAX_ERRORS_SHOWN: Final = 5
_MAX_PAYLOAD_KEPT: Final = 16 * 1024


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a record is not a valid input event, plus whatever could still be read from it."""

    reason: DeadLetterReason
    error: str
    workflow_id: str | None = None
    event_id: str | None = None


def decode_event(data: bytes, *, max_bytes: int = MAX_RECORD_BYTES) -> InputEvent | Rejected:
    """Validate one record; never raises on bad input.

    The fast path is a single ``validate_json`` call (pydantic-core parses and validates in one
    pass); only a rejected record pays for classification.
    """
    if not data:
        return Rejected("empty_record", "empty record")
    if len(data) > max_bytes:
        return Rejected("oversized", f"record is {len(data)} bytes; the limit is {max_bytes}")
    try:
        event = input_event_adapter.validate_json(data)
    except ValidationError as exc:
        return _classify(data, exc)
    # Precompute the POSIX times the core compares on every event (``derived`` would do it on
    # first access; doing it here saves the descriptor call on the hot path).
    event.__dict__["t"] = event.occurred_at.timestamp()
    if event.trust is not None:  # tether's own label: an emitter cannot set it
        event.__dict__["trust"] = None
    cred = event.credential
    if cred is not None:
        cred.__dict__["expires_t"] = cred.expires_at.timestamp()
    return event


def _classify(data: bytes, exc: ValidationError) -> Rejected:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        return Rejected("invalid_utf8", f"not valid UTF-8 at byte {err.start}")
    try:
        obj: Any = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        return Rejected("invalid_json", f"not valid JSON: {err}")
    if not isinstance(obj, dict):
        return Rejected("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    workflow_id = _readable_str(obj.get("workflow_id"), 256)
    event_id = _readable_str(obj.get("event_id"), 128)
    version = obj.get("schema_version")
    if "schema_version" in obj and (type(version) is not int or version != 1):
        return Rejected(
            "unsupported_schema_version",
            f"schema_version must be the JSON integer 1, got {orjson.dumps(version).decode()}",
            workflow_id,
            event_id,
        )
    event_type = obj.get("event_type")
    if "event_type" in obj and event_type not in EVENT_TYPES:
        shown = orjson.dumps(event_type).decode()[:80]
        return Rejected(
            "unknown_event_type",
            f"event_type {shown} is not one of {', '.join(EVENT_TYPES)}",
            workflow_id,
            event_id,
        )
    return Rejected("schema_violation", describe_errors(exc), workflow_id, event_id)


def _readable_str(value: object, limit: int) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= limit:
        return value
    return None


def describe_errors(exc: ValidationError) -> str:
    """A one-line summary of validation errors: ``field.path: message; ...``."""
    parts = []
    errors = exc.errors(include_url=False, include_input=False)
    for err in errors[:_MAX_ERRORS_SHOWN]:
        loc = ".".join(str(p) for p in err["loc"]) or "(record)"
        parts.append(f"{loc}: {err['msg']}")
    if len(errors) > _MAX_ERRORS_SHOWN:
        parts.append(f"... and {len(errors) - _MAX_ERRORS_SHOWN} more")
    return "; ".join(parts)


def dead_letter(
    data: bytes, rejected: Rejected, source: Source, received_at: datetime
) -> DeadLetter:
    """Build the dead-letter record for a rejected payload (kept as text, or base64 if binary)."""
    kept = data[:_MAX_PAYLOAD_KEPT]
    try:
        payload, encoding = kept.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(kept).decode("ascii"), "base64"
    return DeadLetter(
        reason=rejected.reason,
        error=rejected.error,
        source=source,
        received_at=received_at,
        payload=payload,
        payload_encoding=encoding,  # type: ignore[arg-type]  # one of the two literals above
        workflow_id=rejected.workflow_id,
        event_id=rejected.event_id,
    )


def encode(record: BaseModel) -> bytes:
    """Serialize an output record (or an event) to compact UTF-8 JSON."""
    return record.model_dump_json(exclude_none=True).encode()
