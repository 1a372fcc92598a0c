"""SETs as a standard receiver reads them: the token's real issuer, an ``aud``, CAEP/SSF claims.

Verified with PyJWT, a JOSE implementation independent of the one tether signs with (joserfc).
"""

from __future__ import annotations

# token_id values are credential ids (jti), not secrets
import jwt
import pytest

from builders import call, completed, started
from scenarios import run
from sdk_helpers import heartbeat, revocation
from tether.security import SetRejected, SetSigner, SetVerifier, StaticKeys, generate_key
from tether.security.caep import CREDENTIAL_CHANGE, SESSION_REVOKED, VERIFICATION
from tether.settings import Settings

ISSUER = "urn:tether:monitor"
STS = "https://sts.acme.example"  # the builders' credential issuer
AUD = "urn:example:gateways"


@pytest.fixture(scope="module")
def key():
    return generate_key("RS256")


@pytest.fixture(scope="module")
def signer(key):
    return SetSigner(key, issuer=ISSUER, audience=AUD)


def decode(token: bytes, key, audience: str = AUD) -> dict:
    public = jwt.PyJWK(key.as_dict(private=False))
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "secevent+jwt"
    return jwt.decode(
        token,
        public,
        algorithms=["RS256"],
        audience=audience,
        issuer=ISSUER,
        options={"require": ["iss", "aud", "iat", "jti"]},
    )


def escalation_events(wf: str, token: str) -> list[dict]:
    """scope_escalation: a call with a scope the grant never held (response: revoke the token)."""
    return [
        started(wf, "a", token, scopes=["crm:read"]),
        call(wf, "a", token, scopes=["crm:read", "crm:admin"], tool="crm.search", t=1),
    ]


def test_a_detected_token_revocation_names_the_tokens_own_issuer(key, signer):
    result = run(escalation_events("wf-1", "jti-esc"))
    tokens = [r for r in result.out.revocations if r.target.kind == "token"]
    assert tokens, result.out.revocations
    for rev in tokens:
        assert rev.token_issuer == STS
        claims = decode(signer.revocation(rev), key)
        assert claims["sub_id"] == {"format": "jwt_id", "iss": STS, "jti": rev.target.id}
    # the other targets carry no token issuer
    assert all(r.token_issuer is None for r in result.out.revocations if r.target.kind != "token")


def test_the_configured_issuer_only_when_the_revocation_names_none(key):
    signer = SetSigner(key, issuer=ISSUER, token_issuer="https://configured.example", audience=AUD)
    anonymous = revocation("token", "jti-9")
    named = anonymous.model_copy(update={"token_issuer": STS})
    assert decode(signer.revocation(anonymous), key)["sub_id"]["iss"] == (
        "https://configured.example"
    )
    assert decode(signer.revocation(named), key)["sub_id"]["iss"] == STS


@pytest.mark.parametrize(
    ("kind", "ident", "event_type", "sub_id"),
    [
        ("token", "jti-1", SESSION_REVOKED, {"format": "jwt_id", "iss": STS, "jti": "jti-1"}),
        (
            "workflow",
            "wf-7",
            SESSION_REVOKED,
            {"format": "complex", "session": {"format": "opaque", "id": "wf-7"}},
        ),
        ("delegation", "d-1", SESSION_REVOKED, {"format": "opaque", "id": "d-1"}),
        (
            "workload",
            "spiffe://acme.example/agent/a",
            CREDENTIAL_CHANGE,
            {"format": "uri", "uri": "spiffe://acme.example/agent/a"},
        ),
    ],
)
def test_every_kind_decodes_with_pyjwt_and_audience(key, signer, kind, ident, event_type, sub_id):
    rev = revocation(kind, ident)
    if kind == "token":
        rev = rev.model_copy(update={"token_issuer": STS})
    claims = decode(signer.revocation(rev), key)
    assert claims["sub_id"] == sub_id
    assert list(claims["events"]) == [event_type]
    body = claims["events"][event_type]
    # CAEP 1.0: optional common claims as tether always sends them
    assert body["initiating_entity"] == "policy"
    assert body["reason_admin"]["en"]
    assert isinstance(body["event_timestamp"], int)
    if event_type == CREDENTIAL_CHANGE:  # CAEP 1.0 required members
        assert body["credential_type"] == "x509"
        assert body["change_type"] == "revoke"
    assert "sub" not in claims
    assert "exp" not in claims  # SSF 1.0 forbids both
    assert claims["txn"]


def test_without_the_audience_pyjwt_refuses(key, signer):
    token = signer.revocation(revocation())
    with pytest.raises(jwt.InvalidAudienceError):
        decode(token, key, audience="urn:someone:else")


def test_heartbeats_carry_aud_too(key, signer):
    claims = decode(signer.heartbeat(heartbeat()), key)
    assert list(claims["events"]) == [VERIFICATION]
    assert claims["aud"] == AUD


def test_a_per_call_audience_overrides_the_signers(key, signer):
    claims = decode(signer.revocation(revocation(), audience="urn:stream:1"), key, "urn:stream:1")
    assert claims["aud"] == "urn:stream:1"


def test_the_verifier_checks_aud_when_given_one(key, signer):
    keys = StaticKeys([key.as_dict(private=False)])
    SetVerifier(keys, issuer=ISSUER, audience=AUD).verify(signer.revocation(revocation(rid="a")))
    with pytest.raises(SetRejected) as err:
        SetVerifier(keys, issuer=ISSUER, audience="urn:other").verify(
            signer.revocation(revocation(rid="b"))
        )
    assert err.value.reason == "wrong_audience"


def test_the_audience_setting_reaches_the_workers_signer(tmp_path, monkeypatch):
    from tether.security.keys import signer_from_settings

    monkeypatch.setenv("TETHER_SET_AUDIENCE", "urn:acme:pep")
    settings = Settings(home=tmp_path)
    assert settings.set_audience == "urn:acme:pep"
    assert signer_from_settings(settings).audience == "urn:acme:pep"
    assert Settings(home=tmp_path, _env_file=None).set_audience  # never empty by default


def _issuer_of_every_token_revocation(events, cfg=None):
    result = run(events, cfg)
    tokens = [r for r in result.out.revocations if r.target.kind == "token"]
    assert tokens, result.out
    return {(r.reason, r.token_issuer) for r in tokens}


def test_task_completed_revocations_name_the_tokens_issuer():
    events = [
        started("wf-c", "a", "jti-c"),
        call("wf-c", "a", "jti-c", t=1),
        completed("wf-c", "a"),
    ]
    assert _issuer_of_every_token_revocation(events) == {("task_completed", STS)}


def test_late_activity_revocations_name_the_tokens_issuer():
    events = [
        started("wf-l", "a", "jti-l"),
        completed("wf-l", "a", t=5),
        call("wf-l", "a", "jti-late", t=9),
    ]
    issuers = _issuer_of_every_token_revocation(events)
    assert all(issuer == STS for _reason, issuer in issuers), issuers


def test_unknown_workflow_revocations_name_the_tokens_issuer():
    from tether.core import DetectionConfig

    events = [call("wf-u", "a", "jti-u", t=1), call("wf-u", "a", "jti-u", t=30)]
    cfg = DetectionConfig(response={"unknown_workflow": ("revoke_token",)})
    issuers = _issuer_of_every_token_revocation(events, cfg)
    assert all(issuer == STS for _reason, issuer in issuers), issuers


def test_the_issuer_survives_the_session_codec():
    from builders import parse
    from tether.core import Context, DetectionConfig, Monitor
    from tether.models.state_codec import dump_session, load_session

    sessions: dict = {}
    mon = Monitor(Context(DetectionConfig()), sessions=sessions)
    mon.process(parse(started("wf-s", "a", "jti-s")))
    mon.process(parse(call("wf-s", "a", "jti-s", t=1)))
    again = load_session(dump_session(sessions["wf-s"]))
    assert [t.issuer for t in again.tokens] == [STS]
    assert [a.token_issuer for a in again.recent or ()] == [STS]


def test_credential_reuse_revocations_name_the_tokens_issuer():
    events = [
        started("wf-r1", "a", "jti-r"),
        call("wf-r1", "a", "jti-r", t=1),
        started("wf-r2", "b", "jti-b", t=2),
        call("wf-r2", "b", "jti-r", holder="a", t=3),
    ]
    issuers = _issuer_of_every_token_revocation(events)
    assert ("credential_reuse", STS) in issuers
    assert all(issuer == STS for _reason, issuer in issuers), issuers


def test_the_issuer_crosses_the_credential_uses_topic_and_the_token_state():
    from streams.credential_uses import decode_use, encode_use
    from tether.core.credentials import CredentialUse
    from tether.models.session import TokenState
    from tether.models.state_codec import dump_token, load_token

    use = CredentialUse("jti", "wl", "wf", 1.0, "e1", False, 9.0, issuer=STS)
    assert decode_use(encode_use(use)) == use
    old = CredentialUse("jti", "wl", "wf", 1.0, "e1", False, 9.0)
    assert decode_use(encode_use(old)) == old  # uses written before the issuer was kept
    st = TokenState("jti", 9.0, issuer=STS)
    assert load_token(dump_token(st)).issuer == STS
    assert load_token(dump_token(TokenState("jti", 9.0))).issuer is None


def test_a_token_presented_with_two_issuers_names_the_same_one_in_any_order():
    """Until inputs are verified, a token id can arrive with different issuers; which one its
    revocation names must not depend on arrival order (replays and workers agree)."""

    def with_issuer(event, issuer):
        event["credential"]["issuer"] = issuer
        return event

    def names(order):
        events = [
            started("wf-o", "a", "jti-o"),
            with_issuer(call("wf-o", "a", "jti-o", t=1, eid="c1"), "https://b.example"),
            with_issuer(call("wf-o", "a", "jti-o", t=2, eid="c2"), "https://a.example"),
            completed("wf-o", "a", t=5),
        ]
        head, *calls, tail = events
        return _issuer_of_every_token_revocation([head, *(calls[i] for i in order), tail])

    assert names([0, 1]) == names([1, 0])
