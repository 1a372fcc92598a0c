"""The committed SET test vectors (docs/vectors/): current, accepted and rejected as they say,
by tether's verifier AND by an independent JOSE implementation (PyJWT) with the SSF profile."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest

from tether.security import SetRejected, SetVerifier, StaticKeys, peek

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "docs" / "vectors"


def _load(name: str) -> Any:
    return orjson.loads((VECTORS / name).read_bytes())


JWKS = _load("jwks.json")
CONFIG = _load("verifier.json")
VALID = _load("valid.json")
REJECTED = _load("rejected.json")


def _script():
    spec = importlib.util.spec_from_file_location("set_vectors", ROOT / "scripts/set_vectors.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_vectors_are_what_the_script_generates():
    files = _script().build(VECTORS)
    for name, body in files.items():
        assert (VECTORS / name).read_bytes() == body, (
            f"regenerate: python scripts/set_vectors.py ({name})"
        )


def test_every_kind_of_record_has_a_vector():
    names = {v["name"] for v in VALID}
    assert {"token", "workflow", "delegation", "workload", "heartbeat"} <= names
    reasons = {r["reason"] for r in REJECTED}
    from tether.security import REJECT_REASONS

    assert reasons == set(REJECT_REASONS)


def tether_verifier() -> SetVerifier:
    return SetVerifier(
        StaticKeys.from_jwks(JWKS), issuer=CONFIG["issuer"], audience=CONFIG["audience"]
    )


class ProfileError(Exception):
    pass


def pyjwt_verify(token: str) -> dict[str, Any]:
    """A receiver written from the specs with PyJWT: signature, alg, typ, iss, aud, and the
    SSF 1.0 SET profile (no sub or exp, one event, a sub_id)."""
    header = jwt.get_unverified_header(token)
    if header.get("typ") != CONFIG["typ"]:
        raise ProfileError("typ")
    keys = {k["kid"]: jwt.PyJWK(k) for k in JWKS["keys"]}
    key = keys.get(header.get("kid"))
    if key is None:
        raise ProfileError("kid")
    claims = jwt.decode(
        token,
        key,
        algorithms=["RS256", "ES256"],
        issuer=CONFIG["issuer"],
        audience=CONFIG["audience"],
        options={"require": ["iss", "aud", "iat", "jti"], "verify_exp": False},
    )
    if "sub" in claims or "exp" in claims:
        raise ProfileError("sub/exp")
    if not isinstance(claims.get("events"), dict) or len(claims["events"]) != 1:
        raise ProfileError("events")
    if not isinstance(claims.get("sub_id"), dict) or "format" not in claims["sub_id"]:
        raise ProfileError("sub_id")
    return claims


@pytest.mark.parametrize("vector", VALID, ids=[v["name"] for v in VALID])
def test_valid_vectors_decode_to_their_claims_with_pyjwt(vector):
    assert pyjwt_verify(vector["set"]) == vector["claims"]
    assert jwt.get_unverified_header(vector["set"]) == vector["header"]


@pytest.mark.parametrize("vector", VALID, ids=[v["name"] for v in VALID])
def test_valid_vectors_verify_with_tether(vector):
    record = tether_verifier().verify(vector["set"].encode())
    assert record == peek(vector["set"].encode())


@pytest.mark.parametrize("vector", REJECTED, ids=[r["name"] for r in REJECTED])
def test_rejected_vectors_are_rejected_by_tether_for_their_reason(vector):
    verifier = tether_verifier()
    if vector["reason"] == "replayed":
        verifier.verify(vector["set"].encode())  # the first copy is accepted
    with pytest.raises(SetRejected) as err:
        verifier.verify(vector["set"].encode())
    assert err.value.reason == vector["reason"]


@pytest.mark.parametrize(
    "vector",
    [r for r in REJECTED if not r["tether_only"]],
    ids=[r["name"] for r in REJECTED if not r["tether_only"]],
)
def test_rejected_vectors_are_rejected_by_pyjwt_too(vector):
    with pytest.raises((jwt.PyJWTError, ProfileError, ValueError)):
        pyjwt_verify(vector["set"])
