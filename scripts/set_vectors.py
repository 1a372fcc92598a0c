"""Signed test vectors for tether's SETs (docs/vectors/): what a verifier in any language must
accept, the claims each decodes to, and what it must reject, with the reason.

    python scripts/set_vectors.py            # rewrite docs/vectors/ (same key, same bytes)
    python scripts/set_vectors.py --check    # exit 1 when the committed files differ

The signing key is a TEST key committed with the vectors (docs/vectors/test-signing-key.json),
so regenerating them is reproducible (RS256 signatures are deterministic). Never trust it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from joserfc import jws
from joserfc.jwk import JWKRegistry, Key

from tether.models.outputs import Heartbeat, Reinstatement, Revocation, Target
from tether.security import SetSigner, generate_key

OUT = Path(__file__).resolve().parent.parent / "docs" / "vectors"
KEY_FILE = "test-signing-key.json"
ISSUER = "https://tether.example/monitor"
AUDIENCE = "urn:tether:revocations"
STS = "https://sts.acme.example"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
UNTIL = datetime(2099, 1, 1, tzinfo=UTC)  # still in force whenever the vectors are run


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _key(out: Path) -> Key:
    path = out / KEY_FILE
    if path.is_file():
        return JWKRegistry.import_key(orjson.loads(path.read_bytes()))
    key = generate_key("RS256")
    out.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(key.as_dict(private=True), option=orjson.OPT_INDENT_2) + b"\n")
    return key


def _revocation(kind: str, ident: str, rid: str, **extra: Any) -> Revocation:
    return Revocation.model_validate(
        {
            "revocation_id": rid,
            "target": Target.model_validate({"kind": kind, "id": ident}),
            "reason": "scope_escalation",
            "severity": "high",
            "finding_id": f"f-{rid}",
            "workflow_id": "wf-vectors",
            "issued_at": T0,
            "not_after": UNTIL,
            "evidence": ["e-1"],
            **extra,
        }
    )


def _parts(token: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _sig = token.split(b".")
    pad = lambda s: s + b"=" * (-len(s) % 4)  # noqa: E731
    return orjson.loads(base64.urlsafe_b64decode(pad(head))), orjson.loads(
        base64.urlsafe_b64decode(pad(body))
    )


def _sign(key: Key, header: dict[str, Any], claims: dict[str, Any]) -> str:
    return jws.serialize_compact(header, orjson.dumps(claims), key, algorithms=["RS256"])


def build(out: Path = OUT) -> dict[str, bytes]:
    """Every vector file's bytes, by file name."""
    key = _key(out)
    signer = SetSigner(key, issuer=ISSUER, audience=AUDIENCE)
    header = {"alg": "RS256", "kid": signer.kid, "typ": "secevent+jwt"}
    records: list[tuple[str, str, Revocation | Heartbeat]] = [
        (
            "token",
            "a token revoked: CAEP session-revoked about a jwt_id subject (the token's issuer)",
            _revocation("token", "jti-7f3a", "r-token-1", token_issuer=STS),
        ),
        (
            "workflow",
            "a workflow revoked: CAEP session-revoked about a complex subject (opaque session)",
            _revocation("workflow", "wf-vectors", "r-workflow-1"),
        ),
        (
            "delegation",
            "a delegation revoked: CAEP session-revoked about an opaque subject",
            _revocation("delegation", "d-planner-coder", "r-delegation-1"),
        ),
        (
            "workload",
            "a SPIFFE workload quarantined: CAEP credential-change (x509, revoke) about a uri",
            _revocation("workload", "spiffe://acme.example/agent/coder", "r-workload-1"),
        ),
        (
            "workload-opaque",
            "a workload whose id is not a URI: credential-change about an opaque subject",
            _revocation("workload", "coder-7", "r-workload-2"),
        ),
        (
            "heartbeat",
            "a worker heartbeat: the SSF verification event (freshness of the feed)",
            Heartbeat(emitted_at=T0, source="worker-1", sequence=42, interval_s=1.0),
        ),
    ]
    valid = []
    for name, description, record in records:
        token = signer.sign(record)
        head, claims = _parts(token)
        valid.append(
            {
                "name": name,
                "description": description,
                "set": token.decode("ascii"),
                "header": head,
                "claims": claims,
            }
        )
    token_set = valid[0]["set"].encode("ascii")
    _h, base = _parts(token_set)

    def variant(**changes: Any) -> dict[str, Any]:
        claims = dict(base)
        for name, value in changes.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    head_b64, body_b64, sig_b64 = token_set.split(b".")
    public_pem = key.as_pem(private=False)
    hs_header = _b64(orjson.dumps({"alg": "HS256", "kid": signer.kid, "typ": "secevent+jwt"}))
    hs_input = f"{hs_header}.{body_b64.decode()}".encode()
    hs_sig = _b64(hmac.new(public_pem, hs_input, hashlib.sha256).digest())
    none_header = _b64(orjson.dumps({"alg": "none", "typ": "secevent+jwt"}))
    flipped = bytearray(base64.urlsafe_b64decode(sig_b64 + b"=" * (-len(sig_b64) % 4)))
    flipped[0] ^= 0x01
    two_events = dict(base["events"])
    two_events["https://schemas.openid.net/secevent/caep/event-type/credential-change"] = {
        "credential_type": "x509",
        "change_type": "revoke",
    }

    def rejected(name: str, reason: str, why: str, token: str, *, tether_only: bool = False):
        return {
            "name": name,
            "reason": reason,
            "description": why,
            "set": token,
            "tether_only": tether_only,
        }

    rejects = [
        rejected(
            "unsigned",
            "unsigned",
            "the record as plain JSON, no JWS at all",
            orjson.dumps(base["tether"]).decode(),
        ),
        rejected(
            "alg-none",
            "alg_not_allowed",
            "alg none with an empty signature",
            f"{none_header}.{body_b64.decode()}.",
        ),
        rejected(
            "hs256-key-confusion",
            "alg_not_allowed",
            "HS256 keyed with the issuer's PUBLIC key (PEM): the classic key-confusion forgery",
            f"{hs_header}.{body_b64.decode()}.{hs_sig}",
        ),
        rejected(
            "bad-signature",
            "bad_signature",
            "the token SET with one bit of its signature flipped",
            f"{head_b64.decode()}.{body_b64.decode()}.{_b64(bytes(flipped))}",
        ),
        rejected(
            "tampered-claims",
            "bad_signature",
            "the token SET's claims changed (another jti) under the original signature",
            f"{head_b64.decode()}.{_b64(orjson.dumps(variant(jti='jti-other')))}.{sig_b64.decode()}",
        ),
        rejected(
            "unknown-kid",
            "unknown_kid",
            "signed by the test key but naming a kid that is not in the JWKS",
            _sign(key, {**header, "kid": "not-in-the-jwks"}, base),
        ),
        rejected(
            "wrong-issuer",
            "wrong_issuer",
            "iss is not the configured issuer",
            _sign(key, header, variant(iss="https://evil.example")),
        ),
        rejected(
            "wrong-audience",
            "wrong_audience",
            "aud names another audience than the verifier's",
            _sign(key, header, variant(aud="urn:someone:else")),
        ),
        rejected(
            "wrong-typ",
            "wrong_typ",
            "typ JWT: an access token, not a Security Event Token",
            _sign(key, {**header, "typ": "JWT"}, base),
        ),
        rejected(
            "sub-claim",
            "malformed",
            "carries sub, which SSF 1.0 forbids in a SET",
            _sign(key, header, variant(sub="jti-7f3a")),
        ),
        rejected(
            "exp-claim",
            "malformed",
            "carries exp, which SSF 1.0 forbids in a SET",
            _sign(key, header, variant(exp=int((T0 + timedelta(hours=1)).timestamp()))),
        ),
        rejected(
            "two-events",
            "malformed",
            "two events in one SET (the CAEP interoperability profile requires exactly one)",
            _sign(key, header, variant(events=two_events)),
        ),
        rejected(
            "no-sub-id",
            "malformed",
            "no sub_id subject",
            _sign(key, header, variant(sub_id=None)),
        ),
        rejected(
            "jti-not-the-revocation",
            "malformed",
            "jti differs from the revocation_id of the record it carries",
            _sign(key, header, variant(jti="r-other")),
            tether_only=True,
        ),
        rejected(
            "future-dated",
            "future_dated",
            "iat far in the future (2100): a SET dated ahead could be replayed at its date, a "
            "heartbeat to make a dead feed look fresh (allow a few minutes of clock skew)",
            _sign(key, header, variant(iat=int(datetime(2100, 1, 1, tzinfo=UTC).timestamp()))),
        ),
        rejected(
            "reinstatement-not-from-an-operator",
            "not_operator",
            "a reinstatement (lifting the token's revocation) signed with the WORKER's key and "
            "issuer: only a key of the operators' JWKS, with the operators' issuer, may lift a "
            "revocation (docs/operators.md); a stolen worker key must not",
            signer.reinstatement(
                Reinstatement(
                    reinstatement_id="reinstate-1",
                    target=Target.model_validate({"kind": "token", "id": "jti-7f3a"}),
                    by="mallory",
                    reason="let me back in",
                    issued_at=T0,
                    not_after=UNTIL,
                    token_issuer=STS,
                )
            ).decode("ascii"),
            tether_only=True,
        ),
        rejected(
            "replayed",
            "replayed",
            "the token SET again, byte for byte, after the verifier accepted it (check (iss, "
            "jti) pairs: at-least-once delivery makes duplicates; a verifier must not count "
            "them as new)",
            valid[0]["set"],
            tether_only=True,
        ),
    ]
    jwks = {"keys": [signer.public_jwk()]}
    verifier = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "algorithms": ["RS256", "ES256"],
        "typ": "secevent+jwt",
        "jwks": "jwks.json",
    }
    opts = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    return {
        "jwks.json": orjson.dumps(jwks, option=opts) + b"\n",
        "verifier.json": orjson.dumps(verifier, option=opts) + b"\n",
        "valid.json": orjson.dumps(valid, option=opts) + b"\n",
        "rejected.json": orjson.dumps(rejects, option=opts) + b"\n",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    files = build(args.out)
    stale = (
        [n for n, body in files.items() if (args.out / n).read_bytes() != body]
        if args.check
        else []
    )
    if args.check:
        print("stale: " + ", ".join(stale) if stale else "vectors are current")
        return 1 if stale else 0
    for name, body in files.items():
        (args.out / name).write_bytes(body)
    print(f"wrote {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
