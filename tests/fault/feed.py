"""Reading the revocations topic in either format: signed SETs (JWS) or the older plain JSON.

The worker's revocations are becoming signed Security Event Tokens; ``tether.security.sets.peek``
reads both formats without verifying. Where it is not there yet, the record is plain JSON. Either
way the fault scenarios see one shape: the codec's JSON dict (``{"kind": "revocation", ...}`` or
``{"kind": "heartbeat", ...}``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from tether.models.codec import encode
from tether.models.outputs import Heartbeat, Revocation

try:  # the signed format's reader, when this checkout has it
    from tether.security.sets import peek as _peek
except ImportError:  # pragma: no cover - before signed revocations landed
    _peek = None

Peek = Callable[[bytes], Revocation | Heartbeat]


class Unreadable(ValueError):
    """A record on the revocations topic that is neither a signed SET nor a JSON record."""


def decode_feed(value: bytes | None) -> dict[str, Any] | None:
    """The record as the codec's JSON dict; None for a compaction tombstone.

    Raises:
        Unreadable: the value is neither format.
    """
    if not value:
        return None
    if _peek is not None:
        try:
            return orjson.loads(encode(_peek(value)))
        except ValueError as exc:  # SetRejected is a ValueError
            raise Unreadable(str(exc)) from exc
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise Unreadable(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise Unreadable(f"not a JSON object: {type(doc).__name__}")
    doc.setdefault("kind", "revocation")  # the first contract named "kind" only for heartbeats
    return doc


class LegacyVerifier:
    """A gateway verifier for a worker that does not sign yet: it reads plain JSON records.

    Only used when the worker left no JWKS behind (see :func:`watcher_options`); once revocations
    are signed, the scenarios use the Watcher's real ``SetVerifier``.
    """

    def verify(self, data: bytes) -> Revocation | Heartbeat:
        if _peek is not None:
            return _peek(data)
        doc = decode_feed(data)
        if doc is None:
            raise Unreadable("tombstone")
        if doc.get("kind") == "heartbeat":
            return Heartbeat.model_validate(doc)
        return Revocation.model_validate(doc)


def watcher_options(watcher_cls: type, home: Path) -> dict[str, Any]:
    """Keyword arguments for a gateway ``Watcher`` following this worker's feed.

    A worker that signs creates its development key pair under ``$TETHER_HOME/keys``; a Watcher
    whose settings carry the same home verifies with it (nothing to pass). A worker that does not
    sign yet leaves no JWKS: then a Watcher that verifies by default gets :class:`LegacyVerifier`.
    """
    if (home / "keys" / "jwks.json").exists():
        return {}
    if "verifier" in inspect.signature(watcher_cls.__init__).parameters:
        return {"verifier": LegacyVerifier()}
    return {}


def signed(value: bytes) -> bool:
    """Whether a feed record is a compact JWS (three base64url segments), not JSON."""
    return not value.lstrip().startswith(b"{") and value.count(b".") == 2
