"""Bounded, strict field types shared by every contract (limits are part of the public contract)."""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

# Upper bounds. They are documented in the README and enforced at intake: a record that exceeds
# one is dead-lettered with the field that broke it, never truncated silently.
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


class Contract(BaseModel):
    """Base of every input contract: strict types, frozen, unknown fields ignored.

    Strict means no coercion: ``"1"`` is not the integer 1, ``true`` is not 1, a number is not a
    timestamp. Unknown fields are ignored rather than rejected so that an attacker who controls an
    emitter cannot push its own events into the dead-letter topic, unexamined, by adding a field.
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


class Record(BaseModel):
    """Base of every output record tether writes."""

    model_config = ConfigDict(frozen=True, extra="ignore")
