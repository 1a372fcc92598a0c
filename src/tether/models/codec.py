"""The one codec: bytes to validated input events (or a classified rejection), records to bytes."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from tether.models.events import EVENT_MODELS, EVENT_TYPES, InputEvent, input_event_adapter
from tether.models.known_fields import JsonFault, Spec, known_fields, model_spec
from tether.models.outputs import DeadLetter, DeadLetterReason, Source

MAX_RECORD_BYTES: Final = 64 * 1024
_MAX_ERRORS_SHOWN: Final = 5
_MAX_PAYLOAD_KEPT: Final = 16 * 1024
_SPECS: Final[dict[str, Spec]] = {name: model_spec(m) for name, m in EVENT_MODELS.items()}
_ANY_EVENT: Final[Spec] = {k: v for spec in _SPECS.values() for k, v in spec.items()}


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
    pass); only a record it refuses pays for a second look (:func:`_second_look`).
    """
    if not data:
        return Rejected("empty_record", "empty record")
    if len(data) > max_bytes:
        return Rejected("oversized", f"record is {len(data)} bytes; the limit is {max_bytes}")
    try:
        event = input_event_adapter.validate_json(data)
    except ValidationError as exc:
        decoded = _second_look(data, exc)
        if isinstance(decoded, Rejected):
            return decoded
        event = decoded
    # Precompute the POSIX times the core compares on every event (``derived`` would do it on
    # first access; doing it here saves the descriptor call on the hot path).
    event.__dict__["t"] = event.occurred_at.timestamp()
    if event.trust is not None:  # tether's own label: an emitter cannot set it
        event.__dict__["trust"] = None
    cred = event.credential
    if cred is not None:
        cred.__dict__["expires_t"] = cred.expires_at.timestamp()
    return event


class _Unreadable:
    """A top-level member that orjson cannot load (shown as its raw text)."""

    def __init__(self, raw: str) -> None:
        self.raw = raw


def _second_look(data: bytes, exc: ValidationError) -> InputEvent | Rejected:
    """Validate the record's known fields alone, else say why it is rejected.

    If pydantic parsed the whole record, the fault is in a known field and the record is
    classified as it is. If it could not parse it, the fault may lie in an unknown field its
    parser cannot hold (see ``known_fields``): such a record is valid, and the event is what its
    known fields alone make. Rejections are classified most fundamental first: not UTF-8, not
    JSON, not an object, schema version, event type, then the fields (each named).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return Rejected("invalid_utf8", f"not valid UTF-8 at byte {err.start}")
    if not any(err["type"] == "json_invalid" for err in exc.errors(include_url=False)):
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # parsed by pydantic, too big or deep for orjson: take the long way
        else:
            if not isinstance(obj, dict):
                return Rejected(
                    "not_an_object", f"expected a JSON object, got {type(obj).__name__}"
                )
            return _classify(obj, [], exc)
    try:
        known = known_fields(text, _SPECS, _ANY_EVENT)
    except JsonFault as fault:
        return Rejected(fault.reason, str(fault))
    try:
        return input_event_adapter.validate_json(known.text)
    except ValidationError as known_exc:
        top: dict[str, object] = {k: _load(raw) for k, raw in known.top.items()}
        return _classify(top, known.leaves, known_exc)


def _load(raw: str) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _Unreadable(raw)


def _shown(value: object) -> str:
    if isinstance(value, _Unreadable):
        return value.raw[:80]
    return orjson.dumps(value).decode()[:80]


def _classify(
    top: dict[str, object], leaves: list[tuple[str, str]], exc: ValidationError
) -> Rejected:
    """The rejection of a record whose top-level members are ``top`` (see ``_second_look``)."""
    workflow_id = _readable_str(top.get("workflow_id"), 256)
    event_id = _readable_str(top.get("event_id"), 128)
    version = top.get("schema_version")
    if "schema_version" in top and (type(version) is not int or version != 1):
        return Rejected(
            "unsupported_schema_version",
            f"schema_version must be the JSON integer 1, got {_shown(version)}",
            workflow_id,
            event_id,
        )
    event_type = top.get("event_type")
    if "event_type" in top and event_type not in EVENT_TYPES:
        return Rejected(
            "unknown_event_type",
            f"event_type {_shown(event_type)} is not one of {', '.join(EVENT_TYPES)}",
            workflow_id,
            event_id,
        )
    if any(err["type"] == "json_invalid" for err in exc.errors(include_url=False)):
        # A known field holds what pydantic's parser cannot (a lone surrogate, a number beyond
        # a float, nesting past 200 levels): name it.
        for path, raw in leaves:
            try:
                from_json(raw)
            except ValueError as err:
                error = f"{path}: not a readable value ({err})"
                return Rejected("schema_violation", error, workflow_id, event_id)
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
