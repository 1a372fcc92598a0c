"""SSF 1.0 streams: their configuration, status and subjects, kept durably in one JSON file.

A stream belongs to the receiver that created it (the bearer token it authenticated with); a
receiver sees and changes only its own. The file is rewritten atomically on every change, so a
restarted transmitter serves the same streams; where each stream is in the revocations topic
is not here but in Kafka (each stream's own consumer group), committed only once delivered.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import threading
from pathlib import Path
from typing import Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from tether.security import caep

PUSH: Final = "urn:ietf:rfc:8935"
POLL: Final = "urn:ietf:rfc:8936"
EVENTS_SUPPORTED: Final = (caep.SESSION_REVOKED, caep.CREDENTIAL_CHANGE, caep.VERIFICATION)
Status = Literal["enabled", "paused", "disabled"]


class Receiver(BaseModel):
    """A configured receiver: who it is, the bearer token it authenticates with, its ``aud``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    token: str = Field(min_length=16, description="the bearer token (at least 16 characters)")
    audience: str = Field(min_length=1, description="the aud of every SET of its streams")
    max_streams: int = Field(
        10, ge=1, description="streams it may hold at once (each is a Kafka consumer)"
    )
    push_url_prefixes: tuple[str, ...] = Field(
        (),
        description="push endpoint_url must start with one of these (empty: any URL). Set it: "
        "otherwise a receiver's token can make the transmitter POST to any address it reaches",
    )


class Delivery(BaseModel):
    """How SETs reach the receiver: push to its URL, or poll from ours."""

    model_config = ConfigDict(extra="ignore")

    method: Literal["urn:ietf:rfc:8935", "urn:ietf:rfc:8936"]
    endpoint_url: str | None = None
    authorization_header: str | None = None


class Stream(BaseModel):
    """One stream, as SSF 1.0 describes it, plus what the transmitter keeps about it."""

    model_config = ConfigDict(extra="ignore")

    stream_id: str
    owner: str  # the receiver's name; never shown to another receiver
    iss: str
    aud: str
    events_requested: list[str] = Field(default_factory=list)
    delivery: Delivery
    description: str | None = None
    status: Status = "enabled"
    reason: str | None = None
    excluded_subjects: list[dict[str, Any]] = Field(default_factory=list)
    added_subjects: list[dict[str, Any]] = Field(default_factory=list)
    min_verification_interval: int = 0

    @property
    def events_delivered(self) -> list[str]:
        """Requested and supported (SSF: the intersection)."""
        return [e for e in self.events_requested if e in EVENTS_SUPPORTED]

    def public(self) -> dict[str, Any]:
        """The stream configuration a receiver reads (SSF 1.0 field names)."""
        body = {
            "stream_id": self.stream_id,
            "iss": self.iss,
            "aud": self.aud,
            "events_supported": list(EVENTS_SUPPORTED),
            "events_requested": self.events_requested,
            "events_delivered": self.events_delivered,
            "delivery": self.delivery.model_dump(exclude_none=True),
            "min_verification_interval": self.min_verification_interval,
        }
        if self.description is not None:
            body["description"] = self.description
        return body

    def wants(self, sub_id: dict[str, Any]) -> bool:
        """Whether an event about ``sub_id`` goes to this stream (all subjects but removed ones:
        the transmitter's ``default_subjects`` is ``ALL``)."""
        return sub_id not in self.excluded_subjects


class StreamStore:
    """Every stream, by id, persisted to ``path`` (atomically: write a temp file, rename)."""

    def __init__(self, path: Path) -> None:
        """Load the streams in ``path`` (none when it does not exist yet)."""
        self.path = path
        self._lock = threading.Lock()
        self._streams: dict[str, Stream] = {}
        if path.is_file():
            for item in orjson.loads(path.read_bytes()):
                stream = Stream.model_validate(item)
                self._streams[stream.stream_id] = stream

    def all(self) -> list[Stream]:
        """Every stream."""
        return list(self._streams.values())

    def get(self, stream_id: str, owner: str) -> Stream | None:
        """The stream, if it exists and belongs to ``owner``."""
        stream = self._streams.get(stream_id)
        return stream if stream is not None and stream.owner == owner else None

    def owned(self, owner: str) -> list[Stream]:
        """The streams of one receiver."""
        return [s for s in self._streams.values() if s.owner == owner]

    def put(self, stream: Stream) -> None:
        """Create or replace, then persist."""
        with self._lock:
            self._streams[stream.stream_id] = stream
            self._save()

    def delete(self, stream_id: str) -> None:
        """Remove, then persist."""
        with self._lock:
            self._streams.pop(stream_id, None)
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = orjson.dumps([s.model_dump(mode="json") for s in self._streams.values()])
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".streams-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def new_stream_id() -> str:
    """An unguessable stream id."""
    return "s-" + secrets.token_urlsafe(12)
