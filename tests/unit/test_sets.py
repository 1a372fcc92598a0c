"""Signed revocations: the SET wire format, and every way a forged or bent record is rejected."""

# token_id values are credential ids (jti), not secrets

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from joserfc import jws

from sdk_helpers import T0, FakeClock, heartbeat, revocation
from tether.models.codec import encode
from tether.models.outputs import Heartbeat, Revocation, Target
from tether.security import SetRejected, SetSigner, SetVerifier, StaticKeys, generate_key, peek
from tether.security.caep import (
    ANY_TOKEN_ISSUER,
    CREDENTIAL_CHANGE,
    SESSION_REVOKED,
    VERIFICATION,
)
from tether.security.sets import MAX_SET_BYTES, unverified_parts

ISSUER = "urn:tether:monitor"
STS = "https://sts.acme.example"
SPIFFE = "spiffe://acme.example/agent/summarizer"


@pytest.fixture(scope="module")
def rsa_key():
    return generate_key("RS256")


@pytest.fixture(scope="module")
def ec_key():
    return generate_key("ES256")


@pytest.fixture(scope="module")
def other_rsa_key():
    return generate_key("RS256")


@pytest.fixture(scope="module")
def signer(rsa_key):
    return SetSigner(rsa_key, issuer=ISSUER, token_issuer=STS)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def verifier(signer, ec_key, clock):
    keys = StaticKeys([signer.public_jwk(), ec_key.as_dict(private=False)])
    return SetVerifier(keys, issuer=ISSUER, clock=clock)


def rev_of(kind, ident, *, rid="rv-1", finding_id="f-1", reason="scope_escalation", lasts=600.0):
    return revocation(kind, ident, rid=rid, lasts=lasts).model_copy(
        update={"finding_id": finding_id, "reason": reason}
    )


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def compact(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]):
    signing_input = b64(orjson.dumps(header)) + b"." + b64(orjson.dumps(claims))
    return signing_input + b"." + b64(sign(signing_input))


def rs256(key) -> Callable[[bytes], bytes]:
    return lambda data: key.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def hs256(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


# -- the wire format -------------------------------------------------------------------------

SUBJECTS = [
    ("token", "jti-8c1", SESSION_REVOKED, {"format": "jwt_id", "iss": STS, "jti": "jti-8c1"}),
    (
        "workflow",
        "wf-42",
        SESSION_REVOKED,
        {"format": "complex", "session": {"format": "opaque", "id": "wf-42"}},
    ),
    ("workload", SPIFFE, CREDENTIAL_CHANGE, {"format": "uri", "uri": SPIFFE}),
    ("workload", "billing-bot", CREDENTIAL_CHANGE, {"format": "opaque", "id": "billing-bot"}),
    ("delegation", "dlg-7", SESSION_REVOKED, {"format": "opaque", "id": "dlg-7"}),
]


@pytest.mark.parametrize(("kind", "ident", "event_type", "sub_id"), SUBJECTS)
def test_a_revocation_round_trips_as_an_ssf_set(signer, verifier, kind, ident, event_type, sub_id):
    rev = rev_of(kind, ident)
    data = signer.revocation(rev)
    header, claims = unverified_parts(data)

    assert header == {"alg": "RS256", "kid": signer.kid, "typ": "secevent+jwt"}
    assert "exp" not in claims
    assert "sub" not in claims
    assert claims["iss"] == ISSUER
    assert claims["iat"] == int(rev.issued_at.timestamp())
    assert claims["jti"] == rev.revocation_id
    assert claims["txn"] == rev.finding_id
    assert claims["sub_id"] == sub_id
    assert list(claims["events"]) == [event_type]
    event = claims["events"][event_type]
    assert event["event_timestamp"] == int(rev.issued_at.timestamp())
    assert event["initiating_entity"] == "policy"
    assert rev.reason in event["reason_admin"]["en"]
    assert ident in event["reason_admin"]["en"]
    if event_type == CREDENTIAL_CHANGE:
        assert event["change_type"] == "revoke"
        assert event["credential_type"] == "x509"
    assert claims["tether"] == orjson.loads(encode(rev))

    assert verifier.verify(data) == rev
    assert peek(data) == rev


def test_every_revocation_of_one_finding_shares_its_txn_and_keeps_its_own_jti(signer):
    token = rev_of("token", "jti-1", rid="rv-a", finding_id="f-9")
    workflow = rev_of("workflow", "wf-42", rid="rv-b", finding_id="f-9")
    completed = rev_of("token", "jti-2", rid="rv-c", finding_id=None, reason="task_completed")
    claims = [unverified_parts(signer.revocation(r))[1] for r in (token, workflow, completed)]
    assert [c["txn"] for c in claims] == ["f-9", "f-9", "rv-c"]
    assert [c["jti"] for c in claims] == ["rv-a", "rv-b", "rv-c"]
    assert "f-9" not in claims[2]["events"][SESSION_REVOKED]["reason_admin"]["en"]


def test_the_token_issuer_defaults_to_any_and_can_be_given_per_revocation(rsa_key):
    plain = SetSigner(rsa_key, issuer=ISSUER)
    rev = rev_of("token", "jti-1")
    assert unverified_parts(plain.revocation(rev))[1]["sub_id"]["iss"] == ANY_TOKEN_ISSUER
    given = plain.revocation(rev, token_issuer="https://sts.other.example")
    assert unverified_parts(given)[1]["sub_id"]["iss"] == "https://sts.other.example"


def test_rs256_signing_is_deterministic_so_duplicates_are_identical(signer):
    rev = rev_of("token", "jti-1")
    assert signer.revocation(rev) == signer.revocation(rev)


def test_es256_sets_verify_too(ec_key, verifier):
    es = SetSigner(ec_key, issuer=ISSUER)
    rev = rev_of("workflow", "wf-1")
    data = es.revocation(rev)
    assert unverified_parts(data)[0]["alg"] == "ES256"
    assert verifier.verify(data) == rev


def test_a_heartbeat_is_a_signed_ssf_verification_event(signer, verifier):
    hb = Heartbeat(emitted_at=T0, source="worker-a", sequence=17, interval_s=1.0)
    data = signer.heartbeat(hb)
    header, claims = unverified_parts(data)
    assert header["typ"] == "secevent+jwt"
    assert "exp" not in claims
    assert "sub" not in claims
    assert "txn" not in claims
    assert claims["sub_id"] == {"format": "opaque", "id": "worker-a"}
    assert claims["events"] == {VERIFICATION: {"state": "worker-a:17"}}
    assert claims["jti"].startswith("heartbeat:worker-a:17:")
    assert claims["tether"] == orjson.loads(encode(hb))
    assert verifier.verify(data) == hb


def test_a_restarted_worker_reusing_a_sequence_number_gets_a_new_jti(signer, verifier):
    first = Heartbeat(emitted_at=T0, source="w", sequence=1)
    again = Heartbeat(emitted_at=T0 + timedelta(seconds=30), source="w", sequence=1)
    assert verifier.verify(signer.heartbeat(first)) == first
    assert verifier.verify(signer.heartbeat(again)) == again


def test_sign_picks_the_kind(signer):
    assert unverified_parts(signer.sign(heartbeat()))[1]["tether"]["kind"] == "heartbeat"
    assert unverified_parts(signer.sign(revocation()))[1]["tether"]["kind"] == "revocation"


def test_a_signer_refuses_keys_unfit_for_sets(rsa_key):
    public = type(rsa_key).import_key(rsa_key.as_dict(private=False))
    with pytest.raises(ValueError, match="private"):
        SetSigner(public, issuer=ISSUER)
    no_kid = type(rsa_key).import_key(
        {k: v for k, v in rsa_key.as_dict(private=True).items() if k != "kid"}
    )
    with pytest.raises(ValueError, match="kid"):
        SetSigner(no_kid, issuer=ISSUER)
    with pytest.raises(ValueError, match="RS256 or ES256"):
        SetVerifier(StaticKeys([]), issuer=ISSUER, algorithms={"HS256"})


# -- peek ------------------------------------------------------------------------------------


def test_peek_reads_legacy_plain_records_with_or_without_kind():
    rev = revocation()
    assert peek(encode(rev)) == rev
    doc = orjson.loads(encode(rev))
    del doc["kind"]
    assert peek(orjson.dumps(doc)) == rev
    assert peek(encode(heartbeat())) == heartbeat()


@pytest.mark.parametrize("data", [b"", b"not json", b"a.b", b"{}", b"{broken", b"x.y.z"])
def test_peek_rejects_what_is_neither(data):
    with pytest.raises(SetRejected) as info:
        peek(data)
    assert info.value.reason == "malformed"


# -- rejections ------------------------------------------------------------------------------


def _claims(signer: SetSigner, rev: Revocation | None = None) -> dict[str, Any]:
    return unverified_parts(signer.revocation(rev or revocation()))[1]


def _header(signer: SetSigner, **changes: Any) -> dict[str, Any]:
    header = {"alg": "RS256", "kid": signer.kid, "typ": "secevent+jwt", **changes}
    return {k: v for k, v in header.items() if v is not None}


def unsigned(ctx):
    return encode(revocation())


def alg_none(ctx):
    signer = ctx["signer"]
    return compact(_header(signer, alg="none"), _claims(signer), lambda _data: b"")


def hs256_with_public_pem(ctx):
    signer, key = ctx["signer"], ctx["rsa_key"]
    pem = key.as_pem(private=False)
    return compact(_header(signer, alg="HS256"), _claims(signer), hs256(pem))


def hs256_with_public_jwk(ctx):
    signer = ctx["signer"]
    secret = orjson.dumps(signer.public_jwk())
    return compact(_header(signer, alg="HS256"), _claims(signer), hs256(secret))


def rs256_header_on_an_es256_kid(ctx):
    signer, ec = ctx["signer"], ctx["ec_key"]
    return compact(_header(signer, kid=ec.kid), _claims(signer), rs256(ctx["rsa_key"]))


def wrong_key_same_kid(ctx):
    signer = ctx["signer"]
    return compact(_header(signer), _claims(signer), rs256(ctx["other_rsa_key"]))


def tampered_payload(ctx):
    signer = ctx["signer"]
    header, _payload, signature = signer.revocation(revocation()).split(b".")
    claims = _claims(signer)
    claims["tether"]["not_after"] = "2026-11-28T14:00:01Z"  # the forger wants it lifted early
    return b".".join([header, b64(orjson.dumps(claims)), signature])


def tampered_header(ctx):
    signer = ctx["signer"]
    _header_seg, payload, signature = signer.revocation(revocation()).split(b".")
    return b".".join([b64(orjson.dumps(_header(signer, cty="x"))), payload, signature])


def swapped_signature(ctx):
    signer = ctx["signer"]
    a = signer.revocation(revocation(ident="jti-a", rid="rv-a")).split(b".")
    b = signer.revocation(revocation(ident="jti-b", rid="rv-b")).split(b".")
    return b".".join([a[0], a[1], b[2]])


def wrong_issuer(ctx):
    return SetSigner(ctx["rsa_key"], issuer="urn:someone:else").revocation(revocation())


def _resigned(ctx, header: dict[str, Any], claims: dict[str, Any]) -> bytes:
    return compact(header, claims, rs256(ctx["rsa_key"]))


def wrong_typ(ctx):
    signer = ctx["signer"]
    return _resigned(ctx, _header(signer, typ="JWT"), _claims(signer))


def missing_typ(ctx):
    signer = ctx["signer"]
    return _resigned(ctx, {"alg": "RS256", "kid": signer.kid}, _claims(signer))


def unknown_kid(ctx):
    return SetSigner(ctx["other_rsa_key"], issuer=ISSUER).revocation(revocation())


def _with_claims(ctx, **changes: Any) -> bytes:
    signer = ctx["signer"]
    claims = {**_claims(signer), **changes}
    return _resigned(ctx, _header(signer), {k: v for k, v in claims.items() if v is not None})


def with_sub(ctx):
    return _with_claims(ctx, sub="jti-1")


def with_exp(ctx):
    return _with_claims(ctx, exp=int(T0.timestamp()) + 60)


def two_events(ctx):
    claims = _claims(ctx["signer"])
    events = dict(claims["events"])
    events[CREDENTIAL_CHANGE] = {"change_type": "revoke", "credential_type": "x509"}
    return _with_claims(ctx, events=events)


def wrong_event_type(ctx):
    return _with_claims(ctx, events={VERIFICATION: {"state": "x"}})


def no_record(ctx):
    return _with_claims(ctx, tether=None)


def bad_record(ctx):
    return _with_claims(ctx, tether={"kind": "revocation", "revocation_id": "rv-1"})


def jti_not_the_revocation_id(ctx):
    return _with_claims(ctx, jti="rv-other")


def no_sub_id(ctx):
    return _with_claims(ctx, sub_id=None)


def crit_header(ctx):
    signer = ctx["signer"]
    return _resigned(ctx, _header(signer, crit=["exp"], exp=1), _claims(signer))


def unencoded_payload(ctx):
    signer = ctx["signer"]
    header = _header(signer, b64=False, crit=["b64"])
    return _resigned(ctx, header, _claims(signer))


def no_kid(ctx):
    signer = ctx["signer"]
    return _resigned(ctx, {"alg": "RS256", "typ": "secevent+jwt"}, _claims(signer))


REJECTIONS: list[tuple[Callable[[dict[str, Any]], bytes], str]] = [
    (unsigned, "unsigned"),
    (alg_none, "alg_not_allowed"),
    (hs256_with_public_pem, "alg_not_allowed"),
    (hs256_with_public_jwk, "alg_not_allowed"),
    (rs256_header_on_an_es256_kid, "alg_not_allowed"),
    (wrong_key_same_kid, "bad_signature"),
    (tampered_payload, "bad_signature"),
    (tampered_header, "bad_signature"),
    (swapped_signature, "bad_signature"),
    (wrong_issuer, "wrong_issuer"),
    (wrong_typ, "wrong_typ"),
    (missing_typ, "wrong_typ"),
    (unknown_kid, "unknown_kid"),
    (with_sub, "malformed"),
    (with_exp, "malformed"),
    (two_events, "malformed"),
    (wrong_event_type, "malformed"),
    (no_record, "malformed"),
    (bad_record, "malformed"),
    (jti_not_the_revocation_id, "malformed"),
    (no_sub_id, "malformed"),
    (crit_header, "malformed"),
    (unencoded_payload, "malformed"),
    (no_kid, "malformed"),
    (lambda ctx: b"", "malformed"),
    (lambda ctx: b"garbage", "malformed"),
    (lambda ctx: b"a.b", "malformed"),
    (lambda ctx: b"!!.??.**", "malformed"),
    (lambda ctx: b"e30.e30.e30.e30", "malformed"),
    (lambda ctx: b"W10.e30.", "malformed"),  # header is a JSON array
    (lambda ctx: b"x" * (MAX_SET_BYTES + 1), "malformed"),
]


@pytest.fixture
def ctx(signer, rsa_key, ec_key, other_rsa_key):
    return {"signer": signer, "rsa_key": rsa_key, "ec_key": ec_key, "other_rsa_key": other_rsa_key}


@pytest.mark.parametrize(
    ("forge", "reason"), REJECTIONS, ids=[getattr(f, "__name__", "?") for f, _ in REJECTIONS]
)
def test_a_record_that_is_not_an_authentic_set_is_rejected_with_its_reason(
    ctx, verifier, forge, reason
):
    data = forge(ctx)
    with pytest.raises(SetRejected) as info:
        verifier.verify(data)
    assert info.value.reason == reason, info.value
    assert verifier.remembered == 0


def test_the_forgeries_are_well_formed_apart_from_the_flaw(ctx, verifier):
    """The builders above really build SETs: with the flaw undone, the same path verifies."""
    signer = ctx["signer"]
    assert verifier.verify(_resigned(ctx, _header(signer), _claims(signer))) == revocation()


def test_a_verifier_restricted_to_es256_refuses_rs256(signer, ec_key):
    keys = StaticKeys([signer.public_jwk(), ec_key.as_dict(private=False)])
    only_es = SetVerifier(keys, issuer=ISSUER, algorithms={"ES256"})
    with pytest.raises(SetRejected) as info:
        only_es.verify(signer.revocation(revocation()))
    assert info.value.reason == "alg_not_allowed"


def test_joserfc_cannot_be_talked_into_hs256_with_a_public_key(signer):
    """Belt and braces: the library refuses the key confusion on its own as well."""
    data = compact(_header(signer, alg="HS256"), {"a": 1}, hs256(b"x"))
    key = StaticKeys([signer.public_jwk()]).find(signer.kid)
    with pytest.raises(Exception):  # noqa: B017, PT011  # any refusal will do
        jws.deserialize_compact(data, key, algorithms=["HS256"])


# -- replay ----------------------------------------------------------------------------------


def test_a_replayed_jti_is_rejected_until_its_revocation_ends(signer, verifier, clock):
    rev = revocation(lasts=600)
    data = signer.revocation(rev)
    assert verifier.verify(data) == rev
    assert verifier.remembered == 1
    for _ in range(2):
        with pytest.raises(SetRejected) as info:
            verifier.verify(data)
        assert info.value.reason == "replayed"
    clock.advance(600)  # past not_after: a copy is expired on arrival, so it is forgotten
    assert verifier.verify(data) == rev
    assert verifier.remembered == 0


def test_a_reader_that_forgets_accepts_what_it_reads_again(signer, verifier):
    rev = revocation(lasts=600)
    data = signer.revocation(rev)
    assert verifier.verify(data) == rev
    verifier.forget()  # the registry sync reading a partition again to rebuild Redis
    assert verifier.remembered == 0
    assert verifier.verify(data) == rev
    with pytest.raises(SetRejected, match="replayed"):
        verifier.verify(data)


def test_a_revocation_already_expired_is_not_remembered(signer, verifier):
    rev = revocation(lasts=-1)
    data = signer.revocation(rev)
    assert verifier.verify(data) == rev
    assert verifier.verify(data) == rev  # harmless: it revokes nothing
    assert verifier.remembered == 0


def test_the_same_target_revoked_again_under_a_new_id_is_not_a_replay(signer, verifier):
    assert verifier.verify(signer.revocation(revocation(rid="rv-1")))
    assert verifier.verify(signer.revocation(revocation(rid="rv-2", lasts=900)))


def test_a_heartbeat_jti_is_remembered_for_the_window_after_it_was_emitted(signer, clock):
    verifier = SetVerifier(
        StaticKeys([signer.public_jwk()]), issuer=ISSUER, clock=clock, heartbeat_window_s=60
    )
    data = signer.heartbeat(heartbeat(T0))
    verifier.verify(data)
    clock.advance(59)
    with pytest.raises(SetRejected, match="replayed"):
        verifier.verify(data)
    clock.advance(1)
    assert verifier.verify(data) == heartbeat(T0)  # too old to make the feed look fresh
    assert verifier.remembered == 0


def test_replay_memory_is_per_issuer_and_jti(rsa_key, clock):
    keys = StaticKeys([SetSigner(rsa_key, issuer=ISSUER).public_jwk()])
    data = SetSigner(rsa_key, issuer=ISSUER).revocation(revocation())
    a = SetVerifier(keys, issuer=ISSUER, clock=clock)
    b = SetVerifier(keys, issuer=ISSUER, clock=clock)
    assert a.verify(data) == b.verify(data)  # each gateway applies it once


def test_static_keys_refuse_unfit_keys():
    with pytest.raises(ValueError, match="neither RSA nor EC P-256"):
        StaticKeys(
            [{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXh4eHg", "kid": "hmac"}]
        )
    assert StaticKeys.from_jwks({"keys": []}).find("x") is None


def test_target_kinds_have_subjects_for_every_kind():
    kinds = {kind for kind, *_ in SUBJECTS}
    assert kinds == set(Target.model_fields["kind"].annotation.__args__)
