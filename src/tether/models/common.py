"""Bounded, strict field types shared by every contract (limits are part of the public contract)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final, Generic, Literal, TypeVar, overload

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

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
Timestamp = AwareDatetime
SchemaVersion = Annotated[int, Field(ge=1, le=1, json_schema_extra={"const": 1})]

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
