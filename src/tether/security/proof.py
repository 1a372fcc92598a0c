"""A telemetry record's proof of origin: an HS256 JWS over the record's own bytes (pure).

Wire format: the emitter serializes its record (a JSON object), computes a JWS with a detached,
unencoded payload (RFC 7515 Appendix F, RFC 7797 ``b64: false``) over exactly those bytes, and
appends it as the record's LAST member::

    record R = {"schema_version":1, ... }
    sent     = R[:-1] + ',"proof":"' + <b64url(header)> + '..' + <b64url(HMAC-SHA256)> + '"}'

    header   = {"alg":"HS256","b64":false,"crit":["b64"],"kid":<key id>,"iss":<source name>}
    MAC over   <b64url(header)> + "." + R

The verifier takes the record apart at its last ``,"proof":"`` (a member name can only appear
there unescaped as structure) and recomputes the MAC over the bytes before it plus ``}``: no
re-serialization, so the cost is one HMAC of the record (~2 µs), not a JSON canonicalization.
Why HMAC rather than a signature per event: docs/SECURITY.md ("Why HMAC").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson

_MARK: Final = b',"proof":"'
_TAIL: Final = b'"}'
MAX_HEADER: Final = 1024
_MAC_B64_LEN: Final = 43  # 32 bytes of HMAC-SHA256, base64url without padding
_SEARCH: Final = MAX_HEADER + _MAC_B64_LEN + 16  # how far from the end the proof may start
_URL_TO_STD: Final = bytes.maketrans(b"-_", b"+/")


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


def sign_record(record: bytes, *, source: str, kid: str, secret: bytes) -> bytes:
    """``record`` (a serialized JSON object) with its proof appended as the last member."""
    if not record.endswith(b"}"):
        raise ValueError("a record to sign is a serialized JSON object")
    header = _b64(
        orjson.dumps({"alg": "HS256", "b64": False, "crit": ["b64"], "kid": kid, "iss": source})
    )
    mac = hmac.digest(secret, header + b"." + record, "sha256")
    return record[:-1] + _MARK + header + b".." + _b64(mac) + _TAIL


@dataclass(frozen=True, slots=True)
class Header:
    """What a proof's protected header names: the source and its key."""

    source: str
    kid: str
    unencoded: bool = True  # RFC 7797 "b64": false (tether's emitters); else a plain JWS


@dataclass(frozen=True, slots=True)
class Proof:
    """A proof taken apart: the record it covers, the header and the MAC."""

    record: bytes  # the record without its proof member
    header_b64: bytes
    mac: bytes

    def signing_input(self, unencoded: bool = True) -> bytes:
        """``b64url(header) "." payload``: the record itself (b64 false) or its base64url."""
        payload = self.record if unencoded else _b64(self.record)
        return self.header_b64 + b"." + payload


def split(data: bytes) -> Proof | str:  # noqa: PLR0911  # one return per malformation
    """Take a record's proof apart; a string says why there is none to check.

    The hot path of ``enforce`` mode (every record): C-level byte operations only. The
    characters of the JWS are not checked one by one: a header is accepted only as the exact
    bytes ``parse_header`` read, and a MAC that is not base64url cannot match."""
    if not data.endswith(_TAIL):
        data = data.rstrip(b" \t\r\n")  # a line's end, as a file or a terminal left it
    at = data.rfind(_MARK, max(0, len(data) - _SEARCH))
    if at < 0:
        return "the record carries no proof"
    if not data.endswith(_TAIL):
        return "the proof must be the record's last member"
    parts = data[at + len(_MARK) : -len(_TAIL)].split(b".")
    if len(parts) != 3:  # noqa: PLR2004  # header, payload, signature
        return "the proof is not a compact JWS"
    header_b64, payload, mac_b64 = parts
    if payload:
        return "the proof must have a detached payload"
    if len(mac_b64) != _MAC_B64_LEN:
        return "the proof's signature is not an HS256 MAC"
    try:
        mac = binascii.a2b_base64(mac_b64.translate(_URL_TO_STD) + b"=", strict_mode=True)
    except binascii.Error:
        return "the proof's signature is not base64url"
    return Proof(data[:at] + b"}", header_b64, mac)


def parse_header(header_b64: bytes) -> Header | str:  # noqa: PLR0911  # one return per fault
    """The source and key a header names, if it is a header tether accepts."""
    try:
        doc = orjson.loads(_unb64(header_b64))
    except (ValueError, orjson.JSONDecodeError):
        return "the proof's header is not base64url JSON"
    if not isinstance(doc, dict):
        return "the proof's header is not a JSON object"
    if doc.get("alg") != "HS256":
        return f"the proof's alg must be HS256, not {str(doc.get('alg'))[:32]!r}"
    unencoded = "b64" in doc
    if unencoded and (doc.get("b64") is not False or doc.get("crit") != ["b64"]):
        return 'the proof\'s header must say "b64":false with "crit":["b64"] (RFC 7797)'
    if not unencoded and "crit" in doc:
        return "the proof's header names critical extensions tether does not know"
    source, kid = doc.get("iss"), doc.get("kid")
    if not isinstance(source, str) or not source or not isinstance(kid, str) or not kid:
        return "the proof's header must name the source (iss) and its key (kid)"
    return Header(source[:128], kid[:256], unencoded)


_BLOCK: Final = 64  # SHA-256's block size (RFC 2104)
_IPAD: Final = bytes(0x36 for _ in range(_BLOCK))
_OPAD: Final = bytes(0x5C for _ in range(_BLOCK))


def hmac_states(secret: bytes, prefix: bytes = b"") -> tuple[hashlib._Hash, hashlib._Hash]:
    """HMAC-SHA256 (RFC 2104) with the key and ``prefix`` already hashed in: the inner and outer
    hash states. Copying them per record skips the key set-up (about half of an HMAC of a
    1 KB record) and the copy of the record that prepending the header would take."""
    key = hashlib.sha256(secret).digest() if len(secret) > _BLOCK else secret
    key = key.ljust(_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(a ^ b for a, b in zip(key, _IPAD, strict=True)) + prefix)
    outer = hashlib.sha256(bytes(a ^ b for a, b in zip(key, _OPAD, strict=True)))
    return inner, outer


def check_mac(proof: Proof, secret: bytes, *, unencoded: bool = True) -> bool:
    """Whether the MAC is right for the record under ``secret`` (constant time)."""
    signed = proof.signing_input(unencoded)
    return hmac.compare_digest(hmac.digest(secret, signed, "sha256"), proof.mac)


@dataclass(frozen=True, slots=True)
class SourceKey:
    """What an emitter signs with: its source's name in the registry and one of its keys."""

    source: str
    kid: str
    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) < 32:  # noqa: PLR2004  # RFC 7518 §3.2
            raise ValueError("an HS256 source key needs at least 32 bytes")

    @classmethod
    def generate(cls, source: str) -> SourceKey:
        """A fresh random key for ``source`` (kid: a random id)."""
        import secrets  # noqa: PLC0415

        return cls(source, secrets.token_hex(8), secrets.token_bytes(32))

    @classmethod
    def from_jwk(cls, source: str, jwk: dict[str, object]) -> SourceKey:
        """From an ``oct`` JWK (``{"kty":"oct","kid":..,"k":..}``)."""
        k, kid = jwk.get("k"), jwk.get("kid")
        if jwk.get("kty") != "oct" or not isinstance(k, str) or not isinstance(kid, str):
            raise ValueError("a source key is an oct JWK with kid and k")
        return cls(source, kid, _unb64(k.encode()))

    @classmethod
    def load(cls, source: str, path: str | Path) -> SourceKey:
        """The newest key of a key file written by ``tether keys source`` (a JWKS)."""
        doc = orjson.loads(Path(path).read_bytes())
        keys = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(keys, list) or not keys or not isinstance(keys[-1], dict):
            raise ValueError(f"{path} holds no source key")
        return cls.from_jwk(source, keys[-1])

    def jwk(self) -> dict[str, str]:
        """The key as an ``oct`` JWK, for the source's key set in the registry (a secret)."""
        return {
            "kty": "oct",
            "kid": self.kid,
            "alg": "HS256",
            "use": "sig",
            "k": _b64(self.secret).decode(),
        }

    def sign(self, record: bytes) -> bytes:
        """``record`` with this source's proof appended."""
        return sign_record(record, source=self.source, kid=self.kid, secret=self.secret)
