"""Presented access tokens verified against trusted issuers: the credential a record claims,
checked instead of believed.

A record may carry the token its agent presented (``presented_token``, a JWT). It is verified
against the JWKS of its issuer, which must be on the trusted-issuers list
(``TETHER_TRUSTED_ISSUERS``: issuer -> JWKS path or URL; keys rotate as for revocations, see
``KeySource``). The credential is then built from the verified claims: ``jti`` -> token_id,
``sub``, ``iss``, ``scope`` (space-separated) or ``scp`` (list) -> scopes, ``iat``, ``exp``,
``aud``. Times are NOT checked here: tether judges expiry by event time (``credential_expired``),
so a replay of last week's telemetry verifies as it did then. A signature is checked once per
distinct token (a bounded cache): an agent presents the same token for minutes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from pydantic import ValidationError

from tether.models.events import Credential
from tether.security.keys import KeySource

CACHE_MAX: Final = 65536
_ALGS: Final = ("RS256", "ES256")


class TokenVerifier:
    """Verifies presented JWTs; returns the credential they prove, or why they prove none."""

    def __init__(self, issuers: Mapping[str, KeySource]) -> None:
        self.issuers = dict(issuers)
        self._cache: dict[str, Credential | str] = {}
        self.verified = 0  # signatures actually checked (cache misses)

    def verify(self, token: str) -> Credential | str:
        """The verified credential, or a one-line reason the token is invalid."""
        hit = self._cache.get(token)
        if hit is not None:
            return hit
        result = self._verify(token)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()  # simple and bounded; a refill costs one verify per live token
        self._cache[token] = result
        return result

    def _verify(self, token: str) -> Credential | str:  # noqa: PLR0911  # one return per failure
        self.verified += 1
        parts = token.split(".")
        if len(parts) != 3:  # noqa: PLR2004  # header.payload.signature
            return "not a compact JWS"
        try:
            header = orjson.loads(_unb64(parts[0]))
            claims = orjson.loads(_unb64(parts[1]))
        except (ValueError, orjson.JSONDecodeError):
            return "not a JWT (header or claims are not base64url JSON)"
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return "not a JWT"
        issuer = claims.get("iss")
        keys = self.issuers.get(issuer) if isinstance(issuer, str) else None
        if keys is None:
            return f"issuer {str(issuer)[:128]!r} is not trusted"
        kid = header.get("kid")
        key = keys.find(kid) if isinstance(kid, str) else None
        if key is None:
            return f"no key {str(kid)[:64]!r} in the JWKS of {issuer}"
        try:
            jwt.decode(token, key, algorithms=list(_ALGS))
        except (JoseError, ValueError) as exc:
            return f"signature does not verify: {exc}"[:256]
        return _credential(claims)


def _unb64(segment: str) -> bytes:
    import base64  # noqa: PLC0415  # only on a cache miss

    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _credential(claims: dict[str, Any]) -> Credential | str:
    scope = claims.get("scope", claims.get("scp", []))
    scopes = scope.split() if isinstance(scope, str) else scope
    try:
        return Credential.model_validate(
            {
                "token_id": claims.get("jti"),
                "issuer": claims.get("iss"),
                "subject": claims.get("sub"),
                "scopes": scopes,
                "issued_at": _time(claims.get("iat")),
                "expires_at": _time(claims.get("exp")),
                "audience": claims.get("aud"),
            }
        )
    except ValidationError as exc:
        return f"claims unusable as a credential: {exc.errors()[0]['loc']} {exc.errors()[0]['msg']}"


def _time(value: object) -> datetime | None:
    if type(value) in (int, float):
        try:
            return datetime.fromtimestamp(float(value), UTC)  # type: ignore[arg-type]
        except (OverflowError, OSError, ValueError):
            return None
    return None
