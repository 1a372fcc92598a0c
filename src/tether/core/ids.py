"""Identifiers derived from causes: the same cause always yields the same id."""

from __future__ import annotations

from hashlib import blake2b


def derive_id(prefix: str, *parts: str) -> str:
    """``prefix`` + 20 hex chars of BLAKE2b over the parts (unambiguously joined)."""
    h = blake2b(digest_size=10)
    for part in parts:
        raw = part.encode()
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    return f"{prefix}{h.hexdigest()}"
