"""Signed revocations: tether's records as Security Event Tokens (RFC 8417, SSF 1.0 profile).

Pure (no file, network or clock reads of its own; the verifier is handed its keys and clock).
Every revocation and heartbeat on ``tether.revocations`` is a compact JWS::

    header  {"alg": "RS256", "kid": "<key id>", "typ": "secevent+jwt"}
    claims  {"iss", "aud", "iat", "jti", "txn"?, "sub_id", "events": {<one event type>: {...}},
             "tether": <the Revocation or Heartbeat record, as tether.models.codec.encode writes it>}

No ``sub`` and no ``exp`` (SSF forbids both). ``jti`` is the ``revocation_id`` (ids derive from
causes, so an at-least-once duplicate carries the same ``jti``) or, for a heartbeat,
``heartbeat:<source>:<sequence>:<emitted_at ms>``. ``txn`` is the ``finding_id`` (shared by every
revocation of one finding), else the ``revocation_id``. ``aud`` names who the SET is for: a
configured audience on the Kafka topic (``TETHER_SET_AUDIENCE``), the stream's audience in SSF
delivery. A token's ``jwt_id`` subject names the token's own issuer (the revocation's
``token_issuer``), else the configured one. :mod:`tether.security.caep` maps targets
to event types and subjects.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Annotated, Any, Final, Literal, Protocol, get_args

import orjson
from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError, UnsupportedAlgorithmError
from joserfc.jwk import ECKey, JWKRegistry, Key, RSAKey
from pydantic import Discriminator, Tag, TypeAdapter, ValidationError

from tether.models.jsonbytes import dumps
from tether.models.outputs import Heartbeat, Reinstatement, Revocation
from tether.security import caep

SET_TYP: Final = "secevent+jwt"
ALGORITHMS: Final = frozenset({"RS256", "ES256"})
"""What a verifier accepts by default: RS256 (≥2048-bit keys, the CAEP interoperability
profile) and ES256 (P-256). Never ``none``, never an HMAC algorithm."""
TETHER_CLAIM: Final = "tether"
MAX_SET_BYTES: Final = 64 * 1024
MIN_RSA_BITS: Final = 2048
HEARTBEAT_WINDOW_S: Final = 300.0
MAX_SKEW_S: Final = 300.0
"""How far ahead of the verifier's clock a SET's ``iat`` (and a heartbeat's ``emitted_at``) may
be: further ahead it is ``future_dated`` (a heartbeat dated ahead could otherwise be replayed
at its date to make a dead feed look fresh)."""
KEY_ISSUER: Final = "iss"
"""A JWK member binding a key to one issuer: it verifies only SETs whose ``iss`` is that."""
DEFAULT_AUDIENCE: Final = "urn:tether:revocations"
DEFAULT_OPERATOR_ISSUER: Final = "urn:tether:operator"
"""The ``iss`` of operators' SETs (``tether revoke``, ``tether reinstate``; docs/operators.md)."""

FeedRecord = Revocation | Heartbeat | Reinstatement
"""What the revocations topic carries: a reinstatement only ever from an operator key."""

RejectReason = Literal[
    "unsigned",
    "bad_signature",
    "alg_not_allowed",
    "unknown_kid",
    "wrong_issuer",
    "wrong_typ",
    "wrong_audience",
    "malformed",
    "replayed",
    "future_dated",
    "not_operator",
]
REJECT_REASONS: Final[tuple[RejectReason, ...]] = get_args(RejectReason)

_B64URL: Final = re.compile(rb"[A-Za-z0-9_-]*")
_TYPS: Final = frozenset({SET_TYP, f"application/{SET_TYP}"})
_FORBIDDEN_CLAIMS: Final = ("sub", "exp")


class SetRejected(ValueError):
    """A record that is not an authentic tether SET; ``reason`` says why (one of ``RejectReason``)."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        """Reject with a machine-readable ``reason`` and a human ``detail``."""
        super().__init__(f"{reason}: {detail}")
        self.reason: RejectReason = reason
        self.detail = detail


def _record_kind(value: object) -> str:
    if isinstance(value, dict):
        kind = value.get("kind")
        return kind if kind in ("heartbeat", "reinstatement") else "revocation"
    return str(getattr(value, "kind", "revocation"))


# A legacy revocation record may omit "kind" (the first contract named it only for heartbeats).
_feed_record: TypeAdapter[FeedRecord] = TypeAdapter(
    Annotated[
        Annotated[Revocation, Tag("revocation")]
        | Annotated[Heartbeat, Tag("heartbeat")]
        | Annotated[Reinstatement, Tag("reinstatement")],
        Discriminator(_record_kind),
    ]
)


# -- keys ------------------------------------------------------------------------------------


def signing_alg(key: Key) -> str:
    """The JWS algorithm a key is fit for: RS256 (RSA ≥2048 bits) or ES256 (EC P-256).

    Raises:
        ValueError: for any other key (oct, OKP, small RSA, another curve), or when the JWK's own
            ``alg`` member names something else.
    """
    if isinstance(key, RSAKey):
        bits = key.raw_value.key_size
        if bits < MIN_RSA_BITS:
            raise ValueError(f"RSA key {key.kid!r} has {bits} bits; at least 2048 are required")
        alg = "RS256"
    elif isinstance(key, ECKey) and key.curve_name == "P-256":
        alg = "ES256"
    else:
        raise ValueError(f"key {key.kid!r} ({key.key_type}) is neither RSA nor EC P-256")
    if key.alg is not None and key.alg != alg:
        raise ValueError(f"key {key.kid!r} declares alg {key.alg}; tether signs with {alg}")
    return alg


class KeyLookup(Protocol):
    """Finds a verification key by ``kid`` (a JWKS source may refetch on a miss)."""

    def find(self, kid: str) -> Key | None:
        """The public key with this ``kid``, or None."""
        ...


class StaticKeys:
    """An in-memory JWKS: the keys it was given, nothing more (tests, embedded use)."""

    def __init__(self, keys: Iterable[Mapping[str, Any] | Key]) -> None:
        """Hold these JWKs (dicts or joserfc keys); each needs a ``kid``."""
        self._keys: dict[str, Key] = {}
        for item in keys:
            key = item if not isinstance(item, Mapping) else JWKRegistry.import_key(dict(item))
            if not key.kid:
                raise ValueError("every verification key needs a kid")
            signing_alg(key)  # refuse unfit keys now, not on the first record
            self._keys[key.kid] = key

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> StaticKeys:
        """From a JWKS document ``{"keys": [...]}``."""
        return cls(jwks.get("keys", []))

    def find(self, kid: str) -> Key | None:
        """The key with this ``kid``, or None."""
        return self._keys.get(kid)


# -- signing ---------------------------------------------------------------------------------


class SetSigner:
    """Turns revocations and heartbeats into signed SETs (one private key, one issuer)."""

    def __init__(
        self,
        key: Key,
        *,
        issuer: str,
        token_issuer: str = caep.ANY_TOKEN_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
    ) -> None:
        """Sign with ``key`` (a private RSA ≥2048 or EC P-256 JWK with a ``kid``) as ``issuer``.

        Args:
            key: the private key; its ``kid`` goes in every header. A key bound to an issuer
                (an ``iss`` member) signs only as that issuer.
            issuer: the ``iss`` claim; watchers accept only their configured issuer.
            token_issuer: the ``iss`` of ``jwt_id`` subjects whose revocation does not name the
                token's issuer (the STS of the watched tokens).
            audience: the ``aud`` claim, unless a call names another (an SSF stream's).
        """
        if not key.is_private:
            raise ValueError("a signer needs a private key")
        if not key.kid:
            raise ValueError("the signing key needs a kid (tether keys generate sets one)")
        bound = key.get(KEY_ISSUER)
        if bound is not None and bound != issuer:
            raise ValueError(
                f"key {key.kid!r} is bound to issuer {bound!r}; it cannot sign as {issuer!r} "
                "(set TETHER_ISSUER to match, or use that issuer's key)"
            )
        self.alg = signing_alg(key)
        self.kid: str = key.kid
        self.issuer = issuer
        self.token_issuer = token_issuer
        self.audience = audience
        self._key = key
        self._header = {"alg": self.alg, "kid": self.kid, "typ": SET_TYP}

    def public_jwk(self) -> dict[str, Any]:
        """The public half of the signing key, as a JWK for a JWKS, bound to this signer's
        issuer (``iss``): a verifier will not accept it for any other issuer."""
        return {**self._key.as_dict(private=False), KEY_ISSUER: self.issuer}

    def revocation(
        self, rev: Revocation, *, token_issuer: str | None = None, audience: str | None = None
    ) -> bytes:
        """The SET of one revocation (``token_issuer`` and ``audience`` override the record's
        and the signer's for this one)."""
        return self.sign_payload(
            self.revocation_payload(rev, token_issuer=token_issuer, audience=audience)
        )

    def revocation_payload(
        self, rev: Revocation, *, token_issuer: str | None = None, audience: str | None = None
    ) -> bytes:
        """The claims of one revocation's SET, serialized: what ``sign_payload`` signs (the
        worker builds them on its event loop and signs them in another process)."""
        event_type, body = caep.revocation_event(rev)
        issuer_of_token = token_issuer or rev.token_issuer or self.token_issuer
        claims = {
            "iss": self.issuer,
            "aud": audience or self.audience,
            "iat": int(rev.issued_at.timestamp()),
            "jti": rev.revocation_id,
            "txn": rev.finding_id or rev.revocation_id,
            "sub_id": caep.subject(rev.target, token_issuer=issuer_of_token),
            "events": {event_type: body},
            TETHER_CLAIM: rev.model_dump(mode="json", exclude_none=True),
        }
        return dumps(claims)  # held until signed: sized to its content

    def heartbeat(self, hb: Heartbeat, *, audience: str | None = None) -> bytes:
        """The SET of one heartbeat: an SSF verification event, signed like a revocation."""
        event_type, body = caep.heartbeat_event(hb)
        claims = {
            "iss": self.issuer,
            "aud": audience or self.audience,
            "iat": int(hb.emitted_at.timestamp()),
            "jti": heartbeat_jti(hb),
            "sub_id": caep.heartbeat_subject(hb),
            "events": {event_type: body},
            TETHER_CLAIM: hb.model_dump(mode="json", exclude_none=True),
        }
        return self._sign(claims)

    def reinstatement(self, item: Reinstatement) -> bytes:
        """The SET of an operator's reinstatement. Verifiers accept it only from a key of the
        operators' JWKS with the operators' issuer (``not_operator`` otherwise), so the worker's
        signer calling this produces nothing any applier takes (tether.security.operators)."""
        event_type, body = caep.reinstatement_event(item)
        issuer_of_token = item.token_issuer or self.token_issuer
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "iat": int(item.issued_at.timestamp()),
            "jti": item.reinstatement_id,
            "txn": item.reinstatement_id,
            "sub_id": caep.subject(item.target, token_issuer=issuer_of_token),
            "events": {event_type: body},
            TETHER_CLAIM: item.model_dump(mode="json", exclude_none=True),
        }
        return self._sign(claims)

    def sign(self, record: Revocation | Heartbeat, *, audience: str | None = None) -> bytes:
        """Either of the two, by type (for ``audience``, else the signer's)."""
        if isinstance(record, Heartbeat):
            return self.heartbeat(record, audience=audience)
        return self.revocation(record, audience=audience)

    def sign_payload(self, payload: bytes) -> bytes:
        """The compact JWS of ``payload`` (serialized claims) with this signer's header."""
        token = jws.serialize_compact(self._header, payload, self._key, algorithms=[self.alg])
        return token.encode("ascii")

    def private_jwk(self) -> dict[str, Any]:
        """The private signing key as a JWK: only for handing it to a signing process."""
        return dict(self._key.as_dict(private=True))

    def _sign(self, claims: dict[str, Any]) -> bytes:
        return self.sign_payload(orjson.dumps(claims))


def audience_holds(aud: object, audience: str) -> bool:
    """Whether an ``aud`` claim (RFC 7519: a string or a list of strings) names ``audience``."""
    if isinstance(aud, str):
        return aud == audience
    return isinstance(aud, list) and audience in aud


def heartbeat_jti(hb: Heartbeat) -> str:
    """Unique per heartbeat, even when a restarted worker starts its sequence again."""
    jti = f"heartbeat:{hb.source}:{hb.sequence}:{round(hb.emitted_at.timestamp() * 1000)}"
    return jti if hb.partition is None else f"{jti}:p{hb.partition}"  # one per partition


# -- reading ---------------------------------------------------------------------------------


def _b64decode(segment: bytes) -> bytes:
    if not _B64URL.fullmatch(segment):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))


def unverified_parts(data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a compact JWS, NOT verified (tools, tests, diagnostics).

    Raises:
        SetRejected: ``unsigned`` for a plain JSON record, ``malformed`` for anything else that
            is not a three-part compact JWS with JSON object header and claims.
    """
    if not data:
        raise SetRejected("malformed", "empty record")
    if data.lstrip()[:1] == b"{":
        raise SetRejected("unsigned", "a plain JSON record, not a signed SET")
    parts = data.split(b".")
    if len(parts) != 3:  # noqa: PLR2004  # header.payload.signature
        raise SetRejected("malformed", f"not a compact JWS ({len(parts)} parts)")
    try:
        header = orjson.loads(_b64decode(parts[0]))
        claims = orjson.loads(_b64decode(parts[1]))
    except (ValueError, binascii.Error) as exc:
        raise SetRejected("malformed", f"unreadable JWS: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise SetRejected("malformed", "JWS header and claims must be JSON objects")
    return header, claims


def _tether_record(claims: Mapping[str, Any]) -> FeedRecord:
    body = claims.get(TETHER_CLAIM)
    if not isinstance(body, dict):
        raise SetRejected("malformed", f"no {TETHER_CLAIM!r} claim with the record")
    try:
        return _feed_record.validate_python(body)
    except ValidationError as exc:
        raise SetRejected("malformed", f"{TETHER_CLAIM!r} claim is not a record: {exc}") from exc


def peek(data: bytes) -> FeedRecord:
    """The record inside a SET WITHOUT verifying it; also reads legacy plain-JSON records.

    For tools, tests and comparing replays, never for enforcement (use :class:`SetVerifier`).

    Raises:
        SetRejected: ``malformed`` when ``data`` is neither.
    """
    try:
        _header, claims = unverified_parts(data)
    except SetRejected as exc:
        if exc.reason != "unsigned":
            raise
        try:
            return _feed_record.validate_json(data)
        except ValidationError as err:
            raise SetRejected("malformed", f"not a record: {err}") from err
    return _tether_record(claims)


# -- verification ----------------------------------------------------------------------------


class _Seen:
    """``(iss, jti)`` pairs accepted, each remembered until a given epoch second."""

    def __init__(self) -> None:
        self._until: dict[tuple[str, str], float] = {}
        self._expiry: list[tuple[float, tuple[str, str]]] = []

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._until

    def add(self, key: tuple[str, str], until: float) -> None:
        self._until[key] = until
        heapq.heappush(self._expiry, (until, key))

    def forget_before(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            until, key = heapq.heappop(expiry)
            if self._until.get(key) == until:
                del self._until[key]


class SetVerifier:
    """Accepts a record only when it is a well-formed tether SET, signed by a known key.

    Checks, in order (the first failure is the ``reason`` of :class:`SetRejected`): a JWS at all
    (``unsigned`` / ``malformed``); ``alg`` in the allowed set, so ``none`` and HMAC
    key-confusion never reach a key (``alg_not_allowed``); ``typ`` (``wrong_typ``); ``kid``
    known to the key source, which may refetch its JWKS (``unknown_kid``); the key fits the
    ``alg`` (``alg_not_allowed``); the signature (``bad_signature``); ``iss``, and the key's
    own binding: a JWK with an ``iss`` member verifies only that issuer, and with
    ``require_key_issuer`` a key without one verifies nothing (``wrong_issuer``); ``aud``, when
    the verifier has an audience (``wrong_audience``); the SSF profile (no ``sub``/``exp``, one
    event of the right type, a ``sub_id``, a record in the ``tether`` claim whose id is the
    ``jti``; ``malformed``); ``iat``, and a heartbeat's ``emitted_at``, at most ``max_skew_s``
    ahead of the clock (``future_dated``); and that this ``(iss, jti)`` was not accepted before
    (``replayed``). With ``operator_keys``, a SET whose ``iss`` is the operators' is verified
    with those keys only (each bound to that issuer); only such a SET may carry a reinstatement
    or a revocation naming an operator (``by``), and never a heartbeat (``not_operator``;
    docs/operators.md).

    Replay memory is bounded by time: a revocation's ``jti`` is remembered until its
    ``not_after`` (after that a copy is expired on arrival anyway, and one already expired is
    not remembered at all); a heartbeat's for ``heartbeat_window_s`` after it was emitted, even
    when that is ahead of the clock (an older heartbeat cannot make a feed fresh, since
    freshness counts from ``emitted_at``).
    Not thread-safe for concurrent ``verify`` calls beyond the lock it takes itself.
    """

    def __init__(  # noqa: PLR0913  # keyword-only verification policy, each with a safe default
        self,
        keys: KeyLookup,
        *,
        issuer: str,
        algorithms: Collection[str] = ALGORITHMS,
        clock: Callable[[], float] = time.time,
        heartbeat_window_s: float = HEARTBEAT_WINDOW_S,
        max_bytes: int = MAX_SET_BYTES,
        max_skew_s: float = MAX_SKEW_S,
        require_key_issuer: bool = False,
        audience: str | None = None,
        operator_keys: KeyLookup | None = None,
        operator_issuer: str = DEFAULT_OPERATOR_ISSUER,
    ) -> None:
        """Verify against ``keys``, accepting only ``issuer`` (and operators', see below).

        Args:
            keys: finds the public key of a ``kid`` (:class:`StaticKeys`,
                :class:`tether.security.keys.KeySource`).
            issuer: the only ``iss`` accepted.
            algorithms: allowed ``alg`` values; a subset of RS256 and ES256.
            clock: epoch seconds (bounds the replay memory); tests inject a fake.
            heartbeat_window_s: how long a heartbeat's ``jti`` is remembered.
            max_bytes: larger records are ``malformed`` without being parsed.
            max_skew_s: how far ahead of ``clock`` ``iat`` and ``emitted_at`` may be.
            require_key_issuer: refuse keys that carry no ``iss`` member (keys that carry one
                are always held to it).
            audience: when set, the ``aud`` claim must be it or a list holding it
                (``wrong_audience``); None accepts any audience.
            operator_keys: the operators' public keys (``TETHER_OPERATOR_JWKS``). A SET whose
                ``iss`` is ``operator_issuer`` is verified with these only, and each must be
                bound to that issuer (an ``iss`` member). Only such a SET may carry a
                reinstatement (``not_operator`` otherwise); an operator's revocation is
                accepted like the worker's. None: no operator is trusted.
            operator_issuer: the operators' ``iss`` (``TETHER_OPERATOR_ISSUER``).
        """
        if operator_keys is not None and operator_issuer == issuer:
            raise ValueError(
                f"the operators' issuer must differ from the worker's ({issuer!r}): a worker "
                "key must never sign as an operator"
            )
        self.operator_issuer = operator_issuer if operator_keys is not None else None
        self._operator_keys = operator_keys
        unsupported = set(algorithms) - ALGORITHMS
        if unsupported:
            raise ValueError(f"unsupported algorithms {sorted(unsupported)}: use RS256 or ES256")
        self.issuer = issuer
        self.audience = audience
        self._keys = keys
        self._algorithms = frozenset(algorithms)
        self._clock = clock
        self._heartbeat_window_s = heartbeat_window_s
        self._max_bytes = max_bytes
        self._max_skew_s = max_skew_s
        self._require_key_issuer = require_key_issuer
        self._seen = _Seen()
        self._lock = threading.Lock()

    @property
    def key_generation(self) -> int | None:
        """Successful reads of a key source that rereads its JWKS (``KeySource.generation``);
        None for keys that never change. A reader holding a record with an unknown ``kid``
        gives it up only after a read that succeeded later still lacks that key."""
        generations = [
            g
            for g in (getattr(k, "generation", None) for k in (self._keys, self._operator_keys))
            if isinstance(g, int)
        ]
        return sum(generations) if generations else None

    @property
    def remembered(self) -> int:
        """``jti`` values currently held for replay detection."""
        return len(self._seen)

    def forget(self) -> None:
        """Forget every ``jti`` accepted so far: what arrives next is first-seen again (for a
        reader that reads a feed again on purpose, as the registry sync rebuilding Redis)."""
        with self._lock:
            self._seen = _Seen()

    def verify(self, data: bytes) -> FeedRecord:
        """The record inside an authentic, first-seen SET.

        Raises:
            SetRejected: with the reason it is not (see the class docstring).
        """
        if len(data) > self._max_bytes:
            raise SetRejected("malformed", f"{len(data)} bytes; the limit is {self._max_bytes}")
        header, unverified = unverified_parts(data)
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise SetRejected("malformed", "no alg in the JWS header")
        if alg not in self._algorithms:
            raise SetRejected("alg_not_allowed", f"alg {alg!r} is not one of {self._allowed()}")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _TYPS:
            raise SetRejected("wrong_typ", f"typ {typ!r}; a SET has typ {SET_TYP!r}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise SetRejected("malformed", "no kid in the JWS header")
        if "crit" in header or "b64" in header:  # e.g. RFC 7797's unencoded payload
            raise SetRejected("malformed", "a tether SET has no critical header parameters")
        key = self._key(kid, unverified.get("iss"))
        try:
            fit = signing_alg(key)
        except ValueError as exc:
            raise SetRejected("alg_not_allowed", str(exc)) from exc
        if fit != alg:
            raise SetRejected("alg_not_allowed", f"key {kid!r} is a {fit} key, the SET says {alg}")
        claims = self._checked_claims(data, key, alg)
        record = self._record(claims)
        self._remember(claims, record)
        return record

    def _key(self, kid: str, iss: object) -> Key:
        """The key of ``kid`` from the key set the (not yet verified) ``iss`` names: operators'
        SETs verify only with operators' keys, the worker's only with the worker's."""
        operators = self._operator_keys
        if iss != self.issuer and (operators is None or iss != self.operator_issuer):
            # Neither ours nor the operators': no key lookup (and no hold for an unknown kid);
            # the signature is not checked, but no signature could make this SET acceptable.
            raise SetRejected("wrong_issuer", f"iss {iss!r}; expected {self.issuer!r}")
        if operators is not None and iss == self.operator_issuer:
            key = operators.find(kid)
            if key is None:
                if self._keys.find(kid) is not None:
                    raise SetRejected(
                        "wrong_issuer",
                        f"key {kid!r} is a worker key; it cannot sign as an operator",
                    )
                raise SetRejected("unknown_kid", f"no key {kid!r} in the operators' JWKS")
            if key.get(KEY_ISSUER) != self.operator_issuer:
                raise SetRejected(
                    "wrong_issuer", f"operator key {kid!r} is not bound to {self.operator_issuer!r}"
                )
            return key
        key = self._keys.find(kid)
        if key is None:
            if operators is not None and operators.find(kid) is not None:
                raise SetRejected(
                    "wrong_issuer", f"key {kid!r} is an operator key; iss {iss!r} is not theirs"
                )
            raise SetRejected("unknown_kid", f"no key {kid!r} in the JWKS")
        return key

    def _allowed(self) -> str:
        return ", ".join(sorted(self._algorithms))

    def _checked_claims(self, data: bytes, key: Key, alg: str) -> dict[str, Any]:
        try:
            obj = jws.deserialize_compact(data, key, algorithms=[alg])
        except BadSignatureError as exc:
            raise SetRejected("bad_signature", "the signature does not verify") from exc
        except UnsupportedAlgorithmError as exc:
            raise SetRejected("alg_not_allowed", str(exc)) from exc
        except (JoseError, ValueError) as exc:
            raise SetRejected("malformed", f"JWS rejected: {exc}") from exc
        try:
            claims = orjson.loads(obj.payload)
        except orjson.JSONDecodeError as exc:  # unreachable: unverified_parts parsed it
            raise SetRejected("malformed", "claims are not JSON") from exc
        if not isinstance(claims, dict):
            raise SetRejected("malformed", "claims must be a JSON object")
        iss = claims.get("iss")
        if iss != self.issuer and (iss is None or iss != self.operator_issuer):
            raise SetRejected("wrong_issuer", f"iss {iss!r}; expected {self.issuer!r}")
        bound = key.get(KEY_ISSUER)
        if bound is None and self._require_key_issuer:
            raise SetRejected("wrong_issuer", f"key {key.kid!r} is bound to no issuer")
        if bound is not None and bound != iss:
            raise SetRejected("wrong_issuer", f"key {key.kid!r} is bound to issuer {bound!r}")
        if self.audience is not None and not audience_holds(claims.get("aud"), self.audience):
            raise SetRejected(
                "wrong_audience", f"aud {claims.get('aud')!r}; expected {self.audience!r}"
            )
        return claims

    def _record(self, claims: dict[str, Any]) -> FeedRecord:
        for name in _FORBIDDEN_CLAIMS:
            if name in claims:
                raise SetRejected("malformed", f"a SET must not carry {name!r}")
        jti, iat = claims.get("jti"), claims.get("iat")
        if not isinstance(jti, str) or not jti:
            raise SetRejected("malformed", "no jti")
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            raise SetRejected("malformed", "no numeric iat")
        if not isinstance(claims.get("sub_id"), dict):
            raise SetRejected("malformed", "no sub_id subject")
        events = claims.get("events")
        if not isinstance(events, dict) or len(events) != 1:
            raise SetRejected("malformed", "events must hold exactly one event")
        record = _tether_record(claims)
        latest = self._clock() + self._max_skew_s
        if iat > latest:
            raise SetRejected("future_dated", f"iat {iat} is ahead of the clock")
        if isinstance(record, Heartbeat) and record.emitted_at.timestamp() > latest:
            raise SetRejected("future_dated", "the heartbeat's emitted_at is ahead of the clock")
        (event_type,) = events
        expected = caep.expected_event_type(record)
        if event_type != expected:
            raise SetRejected("malformed", f"event {event_type!r}; this record needs {expected!r}")
        if isinstance(record, Revocation) and jti != record.revocation_id:
            raise SetRejected("malformed", "jti differs from the revocation_id")
        self._check_operator(claims, record, jti)
        return record

    def _check_operator(self, claims: dict[str, Any], record: FeedRecord, jti: str) -> None:
        """A reinstatement only from an operator; never a heartbeat from one."""
        operator = self.operator_issuer is not None and claims.get("iss") == self.operator_issuer
        if isinstance(record, Reinstatement):
            if not operator:
                raise SetRejected(
                    "not_operator", "a reinstatement is accepted only from an operator key"
                )
            if jti != record.reinstatement_id:
                raise SetRejected("malformed", "jti differs from the reinstatement_id")
        elif isinstance(record, Heartbeat) and operator:
            raise SetRejected("not_operator", "a heartbeat is the worker's, never an operator's")
        elif isinstance(record, Revocation) and record.by is not None and not operator:
            # "alice revoked it" is an audit claim: only an operator's key may make it
            raise SetRejected("not_operator", "a revocation naming an operator (by) is theirs")

    def _remember(self, claims: dict[str, Any], record: FeedRecord) -> None:
        key = (str(claims["iss"]), str(claims["jti"]))
        now = self._clock()
        if isinstance(record, Revocation | Reinstatement):
            until = record.not_after.timestamp()
        else:
            until = record.emitted_at.timestamp() + self._heartbeat_window_s
        with self._lock:
            self._seen.forget_before(now)
            if key in self._seen:
                raise SetRejected("replayed", f"jti {key[1]!r} was accepted before")
            if until > now:
                self._seen.add(key, until)
