"""Signed checkpoints: "partition P's chain had head H at seq N", signed by a worker's key.

Why: a hash chain alone shows an edit to anyone who does not rewrite everything after it, but
the end of a log carries no link to anything: records removed from the tail leave a shorter,
perfectly linked chain. A checkpoint, signed with the key that signs revocations and kept on
its own topic, pins the head at an instant; a log whose last link is before a checkpoint's
seq was truncated, and a log whose link at that seq hashes otherwise was rewritten.

A checkpoint is a compact JWS with its own ``typ`` (``tether-checkpoint+jwt``), never a SET: no
watcher accepts it as a revocation or a heartbeat (they require ``secevent+jwt`` and a tether
revocation or heartbeat claim). Claims::

    {"iss", "iat", "v": 1, "log": "<decisions topic>", "partition", "seq", "head", "worker"}

Pure: the caller gives the time and the keys.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key

from tether.security.sets import KEY_ISSUER, KeyLookup, SetSigner, StaticKeys, signing_alg

from .chain import Link

TYP: Final = "tether-checkpoint+jwt"
VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One checkpoint's claims."""

    partition: int
    seq: int
    head: str
    issued_at: int  # seconds since the epoch
    log: str = ""
    worker: str = ""
    issuer: str = ""


class CheckpointSigner:
    """Signs checkpoints with a worker's revocation-signing key, under the checkpoint ``typ``."""

    def __init__(self, signer: SetSigner) -> None:
        self.issuer = signer.issuer
        self._key = JWKRegistry.import_key(signer.private_jwk())
        self._alg = signing_alg(self._key)
        self._header = {"alg": self._alg, "kid": signer.kid, "typ": TYP}

    def sign(self, link: Link, *, log: str, worker: str, now: float) -> bytes:
        """The signed checkpoint of ``link`` (a partition's durable head) at ``now``."""
        claims = {
            "iss": self.issuer,
            "iat": int(now),
            "v": VERSION,
            "log": log,
            "partition": link.partition,
            "seq": link.seq,
            "head": link.hash,
            "worker": worker,
        }
        token = jws.serialize_compact(
            self._header, orjson.dumps(claims), self._key, algorithms=[self._alg]
        )
        return token.encode("ascii")


class BadCheckpoint(ValueError):
    """A checkpoint that does not verify: forged, altered, or signed with an unknown key."""


def keys_of(jwks: Mapping[str, Any]) -> StaticKeys:
    """The verification keys of a JWKS document (unusable keys skipped, with a warning)."""
    from tether.security.keys import parse_jwks  # noqa: PLC0415  # logs skipped keys

    return StaticKeys(parse_jwks(orjson.dumps(dict(jwks)), "JWKS").values())


def public_jwk(key: Key) -> dict[str, Any]:
    """``key``'s public half as a JWK, with its issuer binding (``iss``) if it has one."""
    jwk = dict(key.as_dict(private=False))
    bound = key.get(KEY_ISSUER)
    if bound is not None:
        jwk[KEY_ISSUER] = bound
    return jwk


def verify_checkpoint(token: bytes, keys: KeyLookup, issuer: str | None = None) -> Checkpoint:
    """The claims of a checkpoint whose signature verifies with one of ``keys``.

    A key bound to an issuer (an ``iss`` member, as ``tether keys`` writes them) verifies only
    checkpoints of that issuer; ``issuer``, if given, is required too.

    Raises:
        BadCheckpoint: with the reason.
    """
    try:
        header = orjson.loads(_b64(token.split(b".", 1)[0]))
    except (ValueError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise BadCheckpoint(f"not a compact JWS: {exc}") from exc
    if not isinstance(header, dict) or header.get("typ") != TYP:
        raise BadCheckpoint(f"typ is not {TYP}")
    kid = header.get("kid")
    key = keys.find(kid) if isinstance(kid, str) else None
    if key is None:
        raise BadCheckpoint(f"signed with unknown key {kid!r}")
    try:
        obj = jws.deserialize_compact(token, key, algorithms=[signing_alg(key)])
        claims = orjson.loads(obj.payload)
    except (JoseError, ValueError, orjson.JSONDecodeError) as exc:
        raise BadCheckpoint(f"signature does not verify ({exc})") from exc
    if not isinstance(claims, dict) or claims.get("v") != VERSION:
        raise BadCheckpoint("not a version 1 checkpoint")
    iss = claims.get("iss")
    bound = key.get(KEY_ISSUER)
    if bound is not None and bound != iss:
        raise BadCheckpoint(f"key {kid!r} is bound to issuer {bound!r}, not {iss!r}")
    if issuer is not None and iss != issuer:
        raise BadCheckpoint(f"issuer {iss!r}; expected {issuer!r}")
    partition, seq, head, iat = (claims.get(k) for k in ("partition", "seq", "head", "iat"))
    ints = (partition, seq, iat)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints):
        raise BadCheckpoint("partition, seq and iat must be non-negative integers")
    if not isinstance(head, str):
        raise BadCheckpoint("head must be a string")
    assert isinstance(partition, int)  # noqa: S101  # checked above, for the type checker
    assert isinstance(seq, int)  # noqa: S101
    assert isinstance(iat, int)  # noqa: S101
    return Checkpoint(
        partition,
        seq,
        head,
        iat,
        log=str(claims.get("log", "")),
        worker=str(claims.get("worker", "")),
        issuer=str(iss),
    )


def _b64(segment: bytes) -> bytes:
    return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
