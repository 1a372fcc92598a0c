"""Signing keys on disk and the JWKS verifiers read: the only module of tether.security with I/O.

Files (``tether keys generate``): ``<dir>/signing.jwk.json``, the private JWK (mode 0600, with
``kid`` = its RFC 7638 thumbprint, ``alg`` and ``use: sig``), and ``<dir>/jwks.json``, the public
JWKS. ``tether keys rotate`` adds a new key to the JWKS *before* replacing the private key, and
keeps the old public keys, so SETs signed earlier (the compacted topic keeps them until their
``not_after``) still verify.

Development default: with neither ``TETHER_SIGNING_KEY`` nor ``TETHER_JWKS`` set, the signer
creates a key pair once under ``$TETHER_HOME/keys`` (default ``.tether/keys`` in the working
directory) and the verifier reads that directory's ``jwks.json``; both log a warning.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import stat
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPMessage
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Literal

import orjson
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, Key, KeyParameters, RSAKey

from tether.security.sets import MIN_RSA_BITS, SetSigner, SetVerifier, signing_alg

if TYPE_CHECKING:
    from tether.settings import Settings

_log = logging.getLogger(__name__)

PRIVATE_KEY_FILE: Final = "signing.jwk.json"
JWKS_FILE: Final = "jwks.json"
MAX_JWKS_BYTES: Final = 1024 * 1024
Alg = Literal["RS256", "ES256"]

_warned: set[str] = set()


def _warn_once(message: str, *args: object) -> None:
    text = message % args
    if text not in _warned:
        _warned.add(text)
        _log.warning(text)


# -- keys and files --------------------------------------------------------------------------


def generate_key(alg: Alg = "RS256", *, bits: int = MIN_RSA_BITS, issuer: str | None = None) -> Key:
    """A new private signing key with ``kid`` (its RFC 7638 thumbprint), ``alg`` and ``use``;
    with ``issuer``, bound to it (an ``iss`` member: it signs and verifies only as that issuer)."""
    params: KeyParameters = {"alg": alg, "use": "sig"}
    if issuer is not None:
        params["iss"] = issuer  # type: ignore[typeddict-unknown-key]  # a JWK member of tether's
    if alg == "RS256":
        if bits < MIN_RSA_BITS:
            raise ValueError(f"RSA keys need at least {MIN_RSA_BITS} bits")
        return RSAKey.generate_key(bits, parameters=params, private=True, auto_kid=True)
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters=params, private=True, auto_kid=True)
    raise ValueError(f"unsupported alg {alg!r}: use RS256 or ES256")


@dataclass(frozen=True, slots=True)
class KeyFiles:
    """Where a key pair lives, and which key it is."""

    private_key: Path
    jwks: Path
    kid: str
    alg: str


def key_files(directory: Path) -> tuple[Path, Path]:
    """The private key file and the JWKS file of a key directory."""
    return directory / PRIVATE_KEY_FILE, directory / JWKS_FILE


def _write_atomically(path: Path, data: bytes, *, mode: int, exclusive: bool = False) -> None:
    """Write a whole file or nothing; ``exclusive`` fails with FileExistsError if it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)  # atomic, and fails if another process got there first
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_private_key(path: Path, key: Key, *, exclusive: bool = False) -> None:
    """Write a private JWK (mode 0600)."""
    body = orjson.dumps(key.as_dict(private=True), option=orjson.OPT_INDENT_2) + b"\n"
    _write_atomically(path, body, mode=0o600, exclusive=exclusive)


def load_private_key(path: Path) -> Key:
    """Read a private JWK file (RSA ≥2048 or EC P-256, with a ``kid``), readable by its owner
    only: a key others on the host can read is refused, with the ``chmod`` that fixes it.

    Raises:
        ValueError: the file is unreadable, not a private key, has no kid, is unfit to sign,
            or is group- or world-readable.
    """
    try:
        key = JWKRegistry.import_key(orjson.loads(path.read_bytes()))
    except OSError as exc:
        raise ValueError(f"cannot read the signing key {path}: {exc.strerror}") from exc
    except (orjson.JSONDecodeError, JoseError, ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a JWK: {exc}") from exc
    if not key.is_private:
        raise ValueError(f"{path} holds a public key; the signer needs the private JWK")
    if not key.kid:
        raise ValueError(f"{path} has no kid; create keys with `tether keys generate`")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ValueError(
            f"the signing key {path} is readable by others (mode {mode:04o}): anyone who can "
            f"read it can forge revocations. Run: chmod 600 {path}"
        )
    signing_alg(key)
    return key


def read_jwks(path: Path) -> list[dict[str, Any]]:
    """The keys of a JWKS file ([] when it does not exist)."""
    try:
        doc = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        raise ValueError(f"{path} is not a JWKS (no 'keys' list)")
    return [k for k in keys if isinstance(k, dict)]


def write_secret_jwks(path: Path, keys: list[dict[str, Any]]) -> None:
    """Write a JWKS of secret keys (a telemetry source's HS256 keys): mode 0600."""
    body = orjson.dumps({"keys": keys}, option=orjson.OPT_INDENT_2) + b"\n"
    _write_atomically(path, body, mode=0o600)


def write_jwks(path: Path, keys: list[dict[str, Any]]) -> None:
    """Write a public JWKS (mode 0644)."""
    body = orjson.dumps({"keys": keys}, option=orjson.OPT_INDENT_2) + b"\n"
    _write_atomically(path, body, mode=0o644)


def keep_out_of_git(directory: Path) -> None:
    """Put a ``.gitignore`` of ``*`` in ``directory``, so a development key is never committed."""
    ignore = directory / ".gitignore"
    if not ignore.exists():
        _write_atomically(ignore, b"# tether development keys: never commit them\n*\n", mode=0o644)


def _public(key: Key) -> dict[str, Any]:
    return dict(key.as_dict(private=False))


def _with_key(keys: list[dict[str, Any]], key: Key) -> list[dict[str, Any]]:
    return [k for k in keys if k.get("kid") != key.kid] + [_public(key)]


def generate_files(
    directory: Path,
    alg: Alg = "RS256",
    *,
    bits: int = MIN_RSA_BITS,
    force: bool = False,
    issuer: str | None = None,
) -> KeyFiles:
    """Create a key pair in ``directory``; with ``force`` replace one (and its whole JWKS).
    With ``issuer`` the key is bound to it (an ``iss`` member, in both files).

    Raises:
        FileExistsError: a private key is there already and ``force`` is not set.
    """
    private, jwks = key_files(directory)
    if private.exists() and not force:
        raise FileExistsError(
            f"{private} exists: `tether keys rotate` adds a key, --force replaces the pair"
        )
    key = generate_key(alg, bits=bits, issuer=issuer)
    write_jwks(jwks, [_public(key)])
    write_private_key(private, key)
    return KeyFiles(private, jwks, str(key.kid), alg)


def rotate_files(
    directory: Path, alg: Alg | None = None, *, bits: int = MIN_RSA_BITS, issuer: str | None = None
) -> KeyFiles:
    """Sign with a new key from now on; keep every old public key in the JWKS. The new key is
    bound to ``issuer``, else to the old key's issuer if it had one.

    The JWKS is written first, so a verifier that meets the new ``kid`` finds it on refetch.

    Raises:
        ValueError: there is no key pair to rotate.
    """
    private, jwks = key_files(directory)
    if not private.exists():
        raise ValueError(f"no signing key at {private}: run `tether keys generate` first")
    old = load_private_key(private)
    bound = issuer if issuer is not None else old.get("iss")
    new = generate_key(alg or signing_alg(old), bits=bits, issuer=bound)  # type: ignore[arg-type]  # RS256|ES256
    keys = read_jwks(jwks)
    if not any(k.get("kid") == old.kid for k in keys):
        keys = _with_key(keys, old)
    write_jwks(jwks, _with_key(keys, new))
    write_private_key(private, new)
    return KeyFiles(private, jwks, str(new.kid), signing_alg(new))


def ensure_dev_keys(directory: Path, alg: Alg = "RS256") -> KeyFiles:
    """The development key pair in ``directory``, created on first use (safe across processes)."""
    private, jwks = key_files(directory)
    if not private.exists():
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        keep_out_of_git(directory)
        with contextlib.suppress(FileExistsError):  # another process created it first
            write_private_key(private, generate_key(alg), exclusive=True)
    key = load_private_key(private)
    keys = read_jwks(jwks)
    if not any(k.get("kid") == key.kid for k in keys):
        write_jwks(jwks, _with_key(keys, key))
    return KeyFiles(private, jwks, str(key.kid), signing_alg(key))


# -- the verifier's key source ---------------------------------------------------------------


def parse_jwks(data: bytes, origin: str = "JWKS") -> dict[str, Key]:
    """The usable verification keys of a JWKS document, by ``kid``.

    Keys without a kid, with ``use`` other than ``sig``, or unfit for RS256/ES256 (oct, OKP,
    small RSA, other curves) are skipped with a warning.

    Raises:
        ValueError: the document is not a JWKS.
    """
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{origin} is not JSON: {exc}") from exc
    items = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ValueError(f"{origin} is not a JWKS (no 'keys' list)")
    keys: dict[str, Key] = {}
    for item in items:
        try:
            if not isinstance(item, dict):
                raise ValueError("not an object")
            if item.get("use", "sig") != "sig":
                raise ValueError(f"use is {item.get('use')!r}")
            key = JWKRegistry.import_key(item)
            if not key.kid:
                raise ValueError("no kid")
            signing_alg(key)
        except (JoseError, ValueError, TypeError) as exc:
            _log.warning("%s: skipping key %r: %s", origin, _kid_of(item), exc)
            continue
        if key.is_private:
            _warn_once(
                "%s holds private key material (kid %s); publish public keys only", origin, key.kid
            )
        keys[str(key.kid)] = key
    return keys


def _kid_of(item: object) -> object:
    return item.get("kid") if isinstance(item, dict) else None


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follows redirects, but never from https:// to plain http:// (unless http is allowed)."""

    def __init__(self, allow_http: bool) -> None:
        self.allow_http = allow_http

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if not self.allow_http and not newurl.lower().startswith("https://"):
            raise urllib.error.URLError(f"refusing a redirect of the JWKS to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _http_opener(allow_http: bool = False) -> urllib.request.OpenerDirector:
    """HTTP(S) only (no file:, ftp: or data: handlers, so a redirect cannot leave the web), and
    no redirect to plain http unless ``allow_http``."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        _NoDowngrade(allow_http),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


class KeySource:
    """A JWKS from a file or an http(s) URL, reread when a ``kid`` is unknown (rate-limited).

    Nothing is read until the first :meth:`find`. A miss rereads the JWKS at most once per
    ``min_refetch_s`` (whatever the kid), so rotation works without a restart and a flood of
    bogus kids cannot hammer the JWKS endpoint. The JWKS is also reread once it is
    ``max_age_s`` old. A failed read keeps the keys already known. A reread replaces the set: a
    key removed from the JWKS (say, after a compromise) stops verifying. Implements
    :class:`~tether.security.sets.KeyLookup`.
    """

    def __init__(
        self,
        location: str | Path,
        *,
        min_refetch_s: float = 10.0,
        max_age_s: float | None = 3600.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        allow_http: bool = False,
        parse: Callable[[bytes, str], dict[str, Key]] | None = None,
    ) -> None:
        """Read keys from ``location`` (a path, or an ``https://`` URL; ``http://`` only with
        ``allow_http``: anyone on the path could swap the keys).

        Args:
            location: the JWKS.
            min_refetch_s: least time between two reads caused by unknown kids.
            max_age_s: reread a JWKS this old on the next lookup (None: never).
            timeout_s: network timeout of one URL read.
            clock: monotonic seconds; tests inject a fake.
            allow_http: accept a plain ``http://`` URL (``TETHER_JWKS_ALLOW_HTTP``).
            parse: turns the document into keys by kid (default ``parse_jwks``: RS256/ES256
                public keys; telemetry sources also accept HS256 secrets, see ``sources``).
        """
        text = str(location)
        scheme = text.split("://", 1)[0].lower() if "://" in text else ""
        if scheme not in ("", "http", "https"):
            raise ValueError(f"JWKS {text!r}: use a file path or an http(s) URL")
        if scheme == "http" and not allow_http:
            raise ValueError(
                f"JWKS {text!r} is plain http: anyone on the path could swap the keys. Use "
                "https, or set TETHER_JWKS_ALLOW_HTTP=true (e.g. a sidecar on localhost)"
            )
        self._allow_http = allow_http
        self.location = text
        self._url = bool(scheme)
        self._min_refetch_s = min_refetch_s
        self._max_age_s = math.inf if max_age_s is None else max_age_s
        self._stale_at = -math.inf  # monotonic time after which the JWKS is reread
        self._timeout_s = timeout_s
        self._clock = clock
        self._parse = parse or parse_jwks
        self._keys: dict[str, Key] = {}
        self._read_at: float | None = None
        self._lock = threading.Lock()
        self.reads = 0
        """Attempts to read the JWKS (successful or not)."""
        self.generation = 0
        """Successful reads of the JWKS: a record held for an unknown ``kid`` is given up only
        once a read counted here after it still lacks that key (never while reads fail)."""
        self.last_error: str | None = None

    def find(self, kid: str) -> Key | None:
        """The key with this ``kid``; reread the JWKS first if it is ``max_age_s`` old, or on a
        miss if the rate limit allows."""
        now = self._clock()
        key = self._keys.get(kid)
        if key is not None and now < self._stale_at:
            return key
        with self._lock:
            if now >= self._stale_at:  # first use, or the JWKS is max_age_s old
                self._load(now)
                return self._keys.get(kid)
            key = self._keys.get(kid)  # another thread may just have reread it
            if key is not None:
                return key
            if self._read_at is not None and now - self._read_at < self._min_refetch_s:
                return None
            self._load(now)
            return self._keys.get(kid)

    def refresh(self) -> bool:
        """Reread the JWKS now, whatever the rate limit; False when the read failed."""
        with self._lock:
            return self._load(self._clock())

    @property
    def kids(self) -> frozenset[str]:
        """The kids known now."""
        return frozenset(self._keys)

    def _load(self, now: float) -> bool:
        self._read_at = now
        self._stale_at = now + self._max_age_s
        self.reads += 1
        try:
            keys = self._parse(self._read(), self.location)
        except (OSError, ValueError) as exc:
            self.last_error = str(exc)
            _log.warning(
                "cannot read the JWKS %s: %s (keeping %d known keys)",
                self.location,
                exc,
                len(self._keys),
            )
            return False
        self._keys = keys
        self.last_error = None
        self.generation += 1
        return True

    def _read(self) -> bytes:
        if not self._url:
            with open(self.location, "rb") as f:
                data = f.read(MAX_JWKS_BYTES + 1)
        else:
            request = urllib.request.Request(  # noqa: S310  # scheme checked in __init__
                self.location, headers={"Accept": "application/jwk-set+json, application/json"}
            )
            opener = _http_opener(self._allow_http)
            with opener.open(request, timeout=self._timeout_s) as response:
                data = response.read(MAX_JWKS_BYTES + 1)
        if len(data) > MAX_JWKS_BYTES:
            raise ValueError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
        return bytes(data)


# -- from settings ---------------------------------------------------------------------------


def dev_keys_dir(settings: Settings) -> Path:
    """Where the development key pair lives: ``$TETHER_HOME/keys``."""
    return settings.home / "keys"


def signer_from_settings(settings: Settings) -> SetSigner:
    """The worker's signer: ``TETHER_SIGNING_KEY``, else the development key (created once).

    Raises:
        ValueError: the key cannot be read, or does not match ``TETHER_SIGNING_ALG``.
    """
    path = settings.signing_key
    if path is None:
        files = ensure_dev_keys(dev_keys_dir(settings), settings.signing_alg or "RS256")
        _warn_once(
            "signing revocations with the DEVELOPMENT key %s (kid %s); "
            "set TETHER_SIGNING_KEY and TETHER_JWKS in production",
            files.private_key,
            files.kid,
        )
        path = files.private_key
    key = load_private_key(path)
    alg = signing_alg(key)
    if settings.signing_alg is not None and alg != settings.signing_alg:
        raise ValueError(f"TETHER_SIGNING_ALG is {settings.signing_alg} but {path} is an {alg} key")
    audience = settings.set_audience
    token_issuer = settings.token_issuer
    if token_issuer is None:
        return SetSigner(key, issuer=settings.issuer, audience=audience)
    return SetSigner(key, issuer=settings.issuer, token_issuer=token_issuer, audience=audience)


def key_source_from_settings(settings: Settings) -> KeySource:
    """The JWKS of ``TETHER_JWKS``, else the development key directory's (read lazily)."""
    location: str | Path | None = settings.jwks
    if location is None:
        location = dev_keys_dir(settings) / JWKS_FILE
        if location.is_file():
            _warn_once(
                "verifying revocations with the DEVELOPMENT JWKS %s; set TETHER_JWKS in production",
                location,
            )
        else:  # never claim to use a file that is not there: say what will happen instead
            _warn_once(
                "TETHER_JWKS is not set and there is no development JWKS at %s (a tether worker "
                "started in this directory creates one): no revocation verifies (unknown_kid) "
                "until it exists; set TETHER_JWKS to the workers' jwks.json",
                location,
            )
    return KeySource(
        location,
        min_refetch_s=settings.jwks_refetch_s,
        max_age_s=settings.jwks_max_age_s,
        allow_http=settings.jwks_allow_http,
    )


def verifier_from_settings(
    settings: Settings, *, clock: Callable[[], float] = time.time
) -> SetVerifier:
    """A gateway's verifier: the configured JWKS and issuer, and the operators' JWKS
    (``TETHER_OPERATOR_JWKS``; tether.security.operators). Reads nothing until first use."""
    from tether.security.operators import operator_key_source  # noqa: PLC0415  # imports this

    return SetVerifier(
        key_source_from_settings(settings),
        issuer=settings.issuer,
        clock=clock,
        max_skew_s=settings.max_skew_s,
        require_key_issuer=settings.jwks_require_iss,
        operator_keys=operator_key_source(settings),
        operator_issuer=settings.operator_issuer,
    )
