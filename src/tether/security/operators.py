"""Operators' keys and signed actions: ``tether revoke`` and ``tether reinstate`` (docs/operators.md).

Why a key of their own. A reinstatement lifts a revocation, so whoever can produce one can
undo tether's enforcement. The worker reads agent-controlled input; if its key (or the worker
itself) could lift a revocation, an agent that subverted it could reinstate itself. So operators
sign with keys the worker never holds, bound (a JWK ``iss`` member) to the operators' issuer
(``TETHER_OPERATOR_ISSUER``, default ``urn:tether:operator``), published in a JWKS of their own
(``TETHER_OPERATOR_JWKS``). Verifiers (:class:`~tether.security.sets.SetVerifier`) accept a
reinstatement only from such a key; a worker-signed one is ``not_operator``, a worker key
claiming the operators' issuer is ``wrong_issuer``.

Files (``tether keys operator --out DIR``): ``DIR/operator.jwk.json``, the private JWK (mode
0600) carrying the operator's name in an ``operator`` member, and ``DIR/jwks.json``, the public
JWKS (several operators: concatenate their public keys into one JWKS).

Every action is a record (who, why, when) signed as a SET and published on the revocations
topic, keyed like the target's revocations (``<kind>:<id>``): the topic is its own audit trail.
Other operator tools (finding ack/resolve/suppress) reuse :func:`load_operator_signer`.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, get_args

from tether.models.outputs import Reinstatement, Revocation, Target, TargetKind
from tether.security.keys import (
    Alg,
    KeySource,
    generate_key,
    load_private_key,
    read_jwks,
    write_jwks,
    write_private_key,
)
from tether.security.sets import SetSigner

if TYPE_CHECKING:
    from tether.settings import Settings

_log = logging.getLogger("tether.operators")

OPERATOR_KEY_FILE: Final = "operator.jwk.json"
OPERATOR_JWKS_FILE: Final = "jwks.json"
OPERATOR_MEMBER: Final = "operator"
"""A private-JWK member naming the operator the key belongs to (the default ``--by``)."""
OPERATOR_REASON: Final = "operator"
"""The ``reason`` of a revocation made by hand (its ``note`` says why, ``by`` who)."""
TARGET_KINDS: Final[tuple[TargetKind, ...]] = get_args(TargetKind)


def operator_dir(settings: Settings) -> Path:
    """The development operator key directory: ``$TETHER_HOME/operator``."""
    return settings.home / "operator"


@dataclass(frozen=True, slots=True)
class OperatorKeyFiles:
    """Where an operator key pair was written."""

    private_key: Path
    jwks: Path
    kid: str
    name: str


def generate_operator_files(
    directory: Path, *, name: str, issuer: str, alg: Alg = "RS256", force: bool = False
) -> OperatorKeyFiles:
    """Create an operator key pair bound to ``issuer`` in ``directory``; the JWKS keeps the
    public keys already there (another operator's, an older key of this one).

    Raises:
        FileExistsError: a private key is there already and ``force`` is not set.
    """
    private = directory / OPERATOR_KEY_FILE
    jwks = directory / OPERATOR_JWKS_FILE
    if private.exists() and not force:
        raise FileExistsError(f"{private} exists: --force replaces it")
    key = generate_key(alg, issuer=issuer)
    public = dict(key.as_dict(private=False))
    others = [k for k in read_jwks(jwks) if k.get("kid") != key.kid] if jwks.exists() else []
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_jwks(jwks, [*others, public])
    body = {**key.as_dict(private=True), OPERATOR_MEMBER: name}
    from joserfc.jwk import JWKRegistry  # noqa: PLC0415  # only here: rebuild with the member

    write_private_key(private, JWKRegistry.import_key(body))
    return OperatorKeyFiles(private, jwks, str(key.kid), name)


def operator_jwks_location(settings: Settings) -> str | Path | None:
    """``TETHER_OPERATOR_JWKS``, else the development operator JWKS if it exists, else None."""
    if settings.operator_jwks is not None:
        return settings.operator_jwks
    dev = operator_dir(settings) / OPERATOR_JWKS_FILE
    return dev if dev.is_file() else None


def operator_key_source(settings: Settings) -> KeySource | None:
    """The operators' public keys verifiers accept, or None when no operator is trusted."""
    location = operator_jwks_location(settings)
    if location is None:
        return None
    return KeySource(
        location,
        min_refetch_s=settings.jwks_refetch_s,
        max_age_s=settings.jwks_max_age_s,
        allow_http=settings.jwks_allow_http,
    )


def parse_target(text: str) -> Target:
    """``KIND:ID`` (``token:jti-1``, ``workload:spiffe://acme/agent``) as a revocation target.

    Raises:
        ValueError: no colon, an unknown kind, or an empty id.
    """
    kind, sep, ident = text.partition(":")
    if not sep or kind not in TARGET_KINDS or not ident:
        raise ValueError(f"{text!r}: expected KIND:ID with KIND one of {', '.join(TARGET_KINDS)}")
    return Target(kind=kind, id=ident)


class OperatorSigner:
    """Builds and signs one operator's actions (never the worker's signer: see the module)."""

    def __init__(self, signer: SetSigner, *, name: str, window_s: float) -> None:
        """Sign as ``signer`` (an operator key bound to the operators' issuer) for ``name``."""
        self.signer = signer
        self.name = name
        self.window_s = window_s

    @property
    def kid(self) -> str:
        """The operator key's id."""
        return self.signer.kid

    def revocation(
        self,
        target: Target,
        *,
        reason: str,
        now: datetime,
        until: datetime,
        by: str | None = None,
    ) -> Revocation:
        """A revocation by hand of ``target`` from ``now`` until ``until``.

        Raises:
            ValueError: an empty reason, ``until`` not after ``now``, or further than the
                window (a reinstatement must be able to outlive any revocation it lifts).
        """
        who = _who(by, self.name)
        why = _why(reason)
        if until <= now:
            raise ValueError("--until must be in the future")
        if (until - now).total_seconds() > self.window_s:
            raise ValueError(
                f"--until is more than TETHER_OPERATOR_WINDOW_S ({self.window_s:.0f} s) away: a "
                "reinstatement must outlive what it lifts"
            )
        digest = _digest("revoke", target, who, why, now)
        return Revocation(
            revocation_id=f"op:{digest}",
            target=target,
            reason=OPERATOR_REASON,
            severity="high",
            workflow_id=target.id if target.kind == "workflow" else "",
            issued_at=now,
            not_after=until,
            evidence=[],
            by=who,
            note=why,
        )

    def reinstatement(
        self, target: Target, *, reason: str, now: datetime, by: str | None = None
    ) -> Reinstatement:
        """A reinstatement of ``target``: lifts its revocations issued at or before ``now``."""
        who = _who(by, self.name)
        why = _why(reason)
        return Reinstatement(
            reinstatement_id=f"reinstate:{_digest('reinstate', target, who, why, now)}",
            target=target,
            by=who,
            reason=why,
            issued_at=now,
            not_after=now + timedelta(seconds=self.window_s),
        )

    def sign(self, record: Revocation | Reinstatement) -> bytes:
        """The SET of one action."""
        if isinstance(record, Reinstatement):
            return self.signer.reinstatement(record)
        return self.signer.revocation(record)


def _who(by: str | None, default: str) -> str:
    who = (by if by is not None else default).strip()
    if not who:
        raise ValueError("an operator action needs a name (--by, TETHER_OPERATOR_NAME or $USER)")
    return who


def _why(reason: str) -> str:
    why = reason.strip()
    if not why:
        raise ValueError("an operator action needs a --reason")
    return why


def _digest(verb: str, target: Target, who: str, why: str, now: datetime) -> str:
    text = "\x1f".join((verb, target.key, who, why, now.isoformat()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load_operator_signer(settings: Settings, path: Path | None = None) -> OperatorSigner:
    """The operator signer of ``path``, else ``TETHER_OPERATOR_KEY``, else the development
    operator key (``$TETHER_HOME/operator/operator.jwk.json``, made by ``tether keys operator``).

    The name actions carry by default: ``TETHER_OPERATOR_NAME``, else the key's ``operator``
    member, else ``$USER``.

    Raises:
        ValueError: no key there, an unfit key, or a key bound to another issuer than
            ``TETHER_OPERATOR_ISSUER`` (the worker's key is refused: it is bound to the worker's).
    """
    where = path or settings.operator_key or operator_dir(settings) / OPERATOR_KEY_FILE
    if not where.exists():
        raise ValueError(
            f"no operator key at {where}: run `tether keys operator --out DIR` and set "
            "TETHER_OPERATOR_KEY (and TETHER_OPERATOR_JWKS for the verifiers)"
        )
    key = load_private_key(where)
    bound = key.get("iss")
    if bound != settings.operator_issuer:
        raise ValueError(
            f"{where} is bound to issuer {bound!r}, not the operators' "
            f"{settings.operator_issuer!r}: the worker's key cannot sign operator actions"
        )
    if settings.operator_issuer == settings.issuer:
        raise ValueError("TETHER_OPERATOR_ISSUER must differ from TETHER_ISSUER")
    signer = SetSigner(key, issuer=settings.operator_issuer, audience=settings.set_audience)
    raw: Any = key.get(OPERATOR_MEMBER)
    name = settings.operator_name or (raw if isinstance(raw, str) else None) or _user()
    return OperatorSigner(signer, name=name, window_s=settings.operator_window_s)


def _user() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except OSError:  # no user name at all (a container without /etc/passwd entry)
        return ""


def utc_now() -> datetime:
    """The operator's clock, whole seconds (a SET's ``iat`` has second precision, so the record
    and its SET agree on which revocations it lifts)."""
    return datetime.now(UTC).replace(microsecond=0)
