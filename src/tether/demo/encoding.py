"""Fast, deterministic renderings of the fleet's timestamps and identifiers."""

from __future__ import annotations

import random
import time
from functools import lru_cache

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)
_MAX_NS = 1 << 32
_MAX_SERIAL = 1 << 16


@lru_cache(maxsize=8192)
def _second(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_s))


def stamp(ms: int, offset_min: int = 0, suffix: str = "Z") -> str:
    """RFC 3339 with milliseconds for epoch `ms`, written in the given UTC offset."""
    local = ms + offset_min * 60_000
    return f"{_second(local // 1000)}.{local % 1000:03d}{suffix}"


def stamp_s(ms: int) -> str:
    """RFC 3339 in whole seconds, UTC, as an STS writes token times."""
    return f"{_second(ms // 1000)}Z"


def ulid(ms: int, low80: int) -> str:
    """A 26-character Crockford ULID from a 48-bit millisecond time and 80 low bits."""
    v = (ms << 80) | low80
    p = _PAIRS
    return "".join(
        (
            p[(v >> 120) & 1023],
            p[(v >> 110) & 1023],
            p[(v >> 100) & 1023],
            p[(v >> 90) & 1023],
            p[(v >> 80) & 1023],
            p[(v >> 70) & 1023],
            p[(v >> 60) & 1023],
            p[(v >> 50) & 1023],
            p[(v >> 40) & 1023],
            p[(v >> 30) & 1023],
            p[(v >> 20) & 1023],
            p[(v >> 10) & 1023],
            p[v & 1023],
        )
    )


class IdMint:
    """Mints ids that are unique across the fleet: a namespace per script plus a serial."""

    __slots__ = ("_ns", "_rng", "_serial")

    def __init__(self, ns: int, rng: random.Random) -> None:
        if not 0 <= ns < _MAX_NS:
            raise ValueError(f"id namespace {ns} out of range")
        self._ns = ns
        self._rng = rng
        self._serial = 0

    def _next(self) -> int:
        self._serial += 1
        if self._serial >= _MAX_SERIAL:
            raise OverflowError("more than 65535 ids in one workflow script")
        return self._serial

    def event_id(self, ms: int) -> str:
        """A ULID: event time, then namespace and serial (uniqueness), then 32 random bits."""
        low = (self._ns << 48) | (self._next() << 32) | self._rng.getrandbits(32)
        return ulid(ms, low)

    def token_id(self) -> str:
        """A token `jti`."""
        return f"jti-{self._ns:06x}{self._next():04x}{self._rng.getrandbits(24):06x}"

    def delegation_id(self) -> str:
        """A delegation id."""
        return f"dlg-{self._ns:06x}{self._next():04x}"

    def trace_id(self) -> str:
        """A W3C trace id, carried on tool calls as an unknown extra field."""
        return f"{self._rng.getrandbits(128):032x}"
