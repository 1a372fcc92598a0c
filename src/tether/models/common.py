"""Bounded, strict field types shared by every contract (limits are part of the public contract)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Generic, Literal, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

# Upper bounds. They are documented in docs/contract.md and enforced at intake: a record that
# exceeds one is dead-lettered with the field that broke it, never truncated silently.
MAX_EVENT_ID: Final = 128
MAX_WORKFLOW_ID: Final = 256
MAX_IDENTITY: Final = 512  # workload ids, subjects, issuers (SPIFFE ids are rarely longer)
MAX_TOKEN_ID: Final = 256
MAX_NAME: Final = 256  # tools, scopes, destinations, task types, delegation ids
MAX_TEXT: Final = 2048  # resources, purposes
MAX_LIST: Final = 256  # scopes, tools, destinations, audiences per list

EventId = Annotated[str, Field(min_length=1, max_length=MAX_EVENT_ID)]
WorkflowId = Annotated[str, Field(min_length=1, max_length=MAX_WORKFLOW_ID)]
Identity = Annotated[str, Field(min_length=1, max_length=MAX_IDENTITY)]
TokenId = Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_ID)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
OptionalName = Annotated[str, Field(max_length=MAX_NAME)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
NameList = Annotated[list[Name], Field(max_length=MAX_LIST)]
SchemaVersion = Annotated[int, Field(ge=1, le=1, json_schema_extra={"const": 1})]

# Timestamps: RFC 3339 section 5.6 ``date-time`` exactly, within a range the core can compute in.
#
# The grammar: ``YYYY-MM-DD``, ``T`` (or ``t``: RFC 3339 inherits ABNF's case-insensitive
# literals), ``hh:mm:ss`` with seconds, an optional fraction after a ``.`` (any number of
# digits; kept to the microsecond, the rest truncated), and an offset: ``Z``/``z`` or
# ``+hh:mm``/``-hh:mm`` (``-00:00`` is UTC). A space for the ``T`` (the RFC's readability note,
# outside its grammar), a missing seconds field, ``+0000`` or ``+01``, a comma for the decimal
# point, a date alone, a number, or a digit string (pydantic reads those as Unix time, even in
# strict mode) are all rejected. Leap seconds (``:60``) are rejected too: Python's datetime cannot
# hold them.
#
# The range: the instant lies in [1970-01-01T00:00:00Z, 9000-01-01T00:00:00Z). Every time the
# core derives from an event time adds or subtracts at most days to years (grace periods,
# revocation margins, the 24 h quarantine, the dedup window, retention), so with ~1,000 years of
# headroom above and ~1,969 below (datetime's range is years 1..9999) none of it can overflow,
# and POSIX seconds stay non-negative and exact to the microsecond in a float. The first step
# runs the grammar as a Rust regex inside pydantic-core, the second parses and range-checks:
# about 0.1 us per field over plain ``AwareDatetime``, with no Python call.
TIMESTAMP_PATTERN: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})$"
TIMESTAMP_MIN: Final = datetime(1970, 1, 1, tzinfo=UTC)
TIMESTAMP_MAX: Final = datetime(9000, 1, 1, tzinfo=UTC)  # exclusive
_TIMESTAMP_FORMAT_ERROR: Final = (
    "must be an RFC 3339 date-time with seconds and an offset, like 2026-11-28T14:00:00Z "
    "or 2026-11-28T15:00:00.250+01:00"
)


class _Rfc3339:
    """Pydantic hooks for :data:`Timestamp` (see the grammar and range above)."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: object, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        in_range = core_schema.datetime_schema(
            strict=False, tz_constraint="aware", ge=TIMESTAMP_MIN, lt=TIMESTAMP_MAX
        )
        from_text = core_schema.chain_schema(
            [
                core_schema.custom_error_schema(
                    core_schema.str_schema(pattern=TIMESTAMP_PATTERN, strict=True),
                    custom_error_type="rfc3339_timestamp",
                    custom_error_message=_TIMESTAMP_FORMAT_ERROR,
                ),
                in_range,
            ]
        )
        return core_schema.json_or_python_schema(
            json_schema=from_text,
            # Python callers (tests, the SDK's typed parts) may also hand an aware datetime.
            python_schema=core_schema.union_schema(
                [
                    core_schema.datetime_schema(
                        strict=True, tz_constraint="aware", ge=TIMESTAMP_MIN, lt=TIMESTAMP_MAX
                    ),
                    from_text,
                ],
                mode="left_to_right",
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "format": "date-time",
            "pattern": TIMESTAMP_PATTERN,
            "description": (
                "RFC 3339 date-time with seconds and an offset (Z or +hh:mm/-hh:mm), between "
                "1970-01-01T00:00:00Z (inclusive) and 9000-01-01T00:00:00Z (exclusive)"
            ),
        }


Timestamp = Annotated[datetime, _Rfc3339]
"""An RFC 3339 date-time with an offset, in [1970-01-01T00:00:00Z, 9000-01-01T00:00:00Z)."""
Sensitivity = Literal["public", "internal", "confidential", "restricted"]
SENSITIVITY_LEVEL: Final[dict[str, int]] = {
    "public": 0,
    "internal": 1,
    "confidential": 2,
    "restricted": 3,
}
Operation = Literal["read", "write", "delete", "execute", "transfer", "admin"]
Autonomy = Literal["low", "medium", "high"]
Outcome = Literal["success", "failure", "cancelled"]
Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITY_RANK: Final[dict[str, int]] = {
    "info": 0,
    "low": 1,
    "medium": 2,
    "high": 3,
    "critical": 4,
}


_T = TypeVar("_T")


class derived(Generic[_T]):  # reads like the decorator it is
    """A value computed from a frozen model once, on first access, then read from the instance.

    Like ``functools.cached_property`` without its per-instance lock (Python 3.11 takes one on
    every first access, which costs more than the value saves on tether's hot path).
    """

    def __init__(self, fn: Callable[[Any], _T]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    @overload
    def __get__(self, obj: None, cls: type) -> derived[_T]: ...
    @overload
    def __get__(self, obj: object, cls: type) -> _T: ...
    def __get__(self, obj: object | None, cls: type) -> derived[_T] | _T:
        if obj is None:
            return self
        value = self.fn(obj)
        obj.__dict__[self.name] = value  # a non-data descriptor: the instance wins from now on
        return value


class Contract(BaseModel):
    """Base of every input contract: strict types, frozen, unknown fields ignored.

    Strict means no coercion: ``"1"`` is not the integer 1, ``true`` is not 1, a number is not a
    timestamp. Unknown fields are ignored rather than rejected so that an attacker who controls an
    emitter cannot push its own events into the dead-letter topic, unexamined, by adding a field.
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore", ignored_types=(derived,))


class Record(BaseModel):
    """Base of every output record tether writes."""

    model_config = ConfigDict(frozen=True, extra="ignore")
