"""The source registry, record proofs, verified credentials and the two modes (unit level)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from joserfc import jwt

from builders import T0, call, started, wl
from sources_world import World
from tether.bootstrap import source_gate
from tether.core import Context, DetectionConfig, Monitor, Outbox
from tether.models.codec import Rejected, decode_event
from tether.replay import Replayer
from tether.sdk import Emitter, SourceKey
from tether.security.gate import SourceGate
from tether.security.keys import KeySource, generate_key, write_jwks
from tether.security.proof import split
from tether.security.sources import Workloads, load_registry
from tether.security.tokens import TokenVerifier
from tether.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sources.yaml"


# -- proofs ------------------------------------------------------------------------------------


def test_a_signed_record_is_the_record_plus_a_last_proof_member() -> None:
    key = SourceKey.generate("gw")
    record = orjson.dumps(call("wf", "a", "t1"))
    signed = key.sign(record)
    assert orjson.loads(signed) == {**orjson.loads(record), "proof": orjson.loads(signed)["proof"]}
    proof = split(signed)
    assert not isinstance(proof, str)
    assert proof.record == record


@pytest.mark.parametrize("resource_len", [0, 200, 1100, 2048])
def test_records_of_any_length_verify(tmp_path: Path, resource_len: int) -> None:
    """The proof is looked for near the record's end, whatever the record's length."""
    world = World(tmp_path)
    event = call("wf-v", "victim", "jti-v")
    event["action"]["resource"] = "r" * resource_len
    admitted = _admit(world.gate(), world.sign("victim-agents", event))
    assert not isinstance(admitted, Rejected), admitted
    assert admitted.trust.authenticated


def test_a_standard_detached_jws_from_a_jose_library_verifies_too(tmp_path: Path) -> None:
    """An emitter in another language may use its JOSE library's detached compact JWS (payload
    base64url-encoded, no "b64" header): accepted, at the cost of encoding the record."""
    from joserfc import jws
    from joserfc.jwk import OctKey

    world = World(tmp_path)
    key = world.keys["victim-agents"]
    record = orjson.dumps(call("wf-v", "victim", "jti-v"))
    header = {"alg": "HS256", "kid": key.kid, "iss": "victim-agents"}
    lenient = jws.JWSRegistry(strict_check_header=False)  # "iss" is not a registered header
    compact = jws.serialize_compact(header, record, OctKey.import_key(key.jwk()), registry=lenient)
    head, _, sig = compact.split(".")
    line = record[:-1] + f',"proof":"{head}..{sig}"}}'.encode()
    admitted = _admit(world.gate(), line)
    assert not isinstance(admitted, Rejected), admitted
    assert admitted.trust.source == "victim-agents"
    forged = line.replace(b'"crm.search"', b'"crm.delete"')
    assert isinstance(_admit(world.gate(), forged), Rejected)


def test_trailing_whitespace_after_a_signed_record_is_forgiven(tmp_path: Path) -> None:
    world = World(tmp_path)
    line = world.sign("victim-agents", call("wf-v", "victim", "jti-v")) + b" \r\n"
    admitted = _admit(world.gate(), line)
    assert not isinstance(admitted, Rejected), admitted
    assert admitted.trust.authenticated


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda b: b[:-1] + b',"x":1}', "last member"),
        (lambda b: b.replace(b"..", b"."), "compact JWS"),
        (lambda b: b[:-3] + b'!"}', "not base64url"),
        (lambda b: b.replace(b"..", b".eyJ9."), "detached"),
        (lambda b: orjson.dumps(orjson.loads(b) | {"proof": None}), "no proof"),
    ],
)
def test_malformed_proofs_say_why(mutate: Any, why: str) -> None:
    signed = SourceKey.generate("gw").sign(orjson.dumps(call("wf", "a", "t1")))
    result = split(mutate(signed))
    assert isinstance(result, str)
    assert why in result


def test_emitter_signs_what_it_sends_when_given_a_key() -> None:
    key = SourceKey.generate("gw")
    emitter = Emitter("127.0.0.1:1", source_key=key)  # nothing connects before an emit
    from tether.sdk.events import validate_event

    event = validate_event(call("wf", "a", "t1"))
    data = emitter.record(event)
    proof = split(data)
    assert not isinstance(proof, str)
    assert decode_event(data).event_id == event.event_id  # type: ignore[union-attr]
    assert Emitter("127.0.0.1:1").record(event) == data[: data.rfind(b',"proof"')] + b"}"


# -- the registry ------------------------------------------------------------------------------


def test_workload_patterns_match_ids_below_a_path_and_nothing_sideways() -> None:
    w = Workloads.of(["spiffe://acme.example/agent/*", "spiffe://other.example/exact"])
    assert "spiffe://acme.example/agent/planner" in w
    assert "spiffe://acme.example/agent/team/planner" in w
    assert "spiffe://other.example/exact" in w
    for outside in (
        "spiffe://acme.example/agent/../admin",
        "spiffe://acme.example/agent/",
        "spiffe://acme.example/agentx/planner",
        "spiffe://acme.example.evil/agent/planner",
        "spiffe://other.example/exact/child",
        "spiffe://acme.example/agent//planner",
    ):
        assert outside not in w, outside
    with pytest.raises(ValueError, match="'\\*' only"):
        Workloads.of(["spiffe://acme.example/*/x"])


def test_the_example_registry_loads() -> None:
    reg = load_registry(EXAMPLE)
    assert reg.mode == "enforce"
    assert {"orchestrator", "gateway"} <= set(reg.sources)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("sources: []", "at least 1"),
        ("sources: [{name: a, keys: k.json, colour: red}]", "colour"),
        ("sources: [{name: a, keys: k.json, event_types: [tool_call.run]}]", "unknown event"),
        ("sources: [{name: a, keys: k.json}, {name: a, keys: k.json}]", "unique"),
        ("sources: [{name: a, keys: k.json, complete: sometimes}]", "complete"),
        ("{{{", "not YAML"),
    ],
)
def test_a_bad_registry_is_refused_with_the_field_named(
    tmp_path: Path, text: str, error: str
) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=error):
        load_registry(path)


def test_a_rotated_source_key_verifies_after_the_key_set_is_reread(tmp_path: Path) -> None:
    world = World(tmp_path)
    gate = world.gate()
    line = world.sign("victim-agents", started("wf", "victim", "t"))
    assert not isinstance(_admit(gate, line), Rejected)
    new = SourceKey.generate("victim-agents")
    old = world.keys["victim-agents"]
    write_jwks(tmp_path / "victim-agents.jwks.json", [old.jwk(), new.jwk()])
    assert gate.registry is not None
    gate.registry.sources["victim-agents"].keys.refresh()
    assert not isinstance(
        _admit(gate, new.sign(orjson.dumps(started("wf2", "victim", "t")))), Rejected
    )


def _admit(gate: SourceGate, line: bytes, out: Outbox | None = None) -> Any:
    event = decode_event(line)
    assert not isinstance(event, Rejected)
    return gate.admit(line, event, lambda _wf: None, 0.0, out if out is not None else Outbox())


# -- modes -------------------------------------------------------------------------------------


def test_audit_mode_applies_everything_and_labels_what_enforce_would_refuse(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, mode="audit")
    lines = [
        world.sign("victim-agents", started("wf-v", "victim", "jti-v", t=10)),
        world.sign("attacker-agents", call("wf-v", "attacker", "jti-b", t=20)),  # intrusion
        orjson.dumps(call("wf-v", "victim", "jti-b", holder="attacker", t=21)),  # unsigned
    ]
    out = world.replay(lines)
    assert not out.deadletters
    by_workload = {f["workload_id"]: f for f in out.findings if f["code"] != "credential_reuse"}
    assert by_workload[wl("attacker")]["authenticated"] is True
    assert by_workload[wl("victim")]["authenticated"] is False  # it would have been refused
    assert by_workload[wl("victim")].get("source") is None
    assert not any(f.get("withheld") for f in out.findings)  # audit holds nothing back


def test_without_a_registry_the_gate_is_off_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="tether"):
        assert source_gate(Settings(), warn=True) is None
    assert "unauthenticated" in caplog.text


def test_an_unsigned_record_keeps_todays_output_without_a_registry() -> None:
    line = orjson.dumps(call("wf", "a", "t1", t=1))
    event = decode_event(line)
    assert not isinstance(event, Rejected)
    assert event.trust is None


def test_an_emitter_cannot_label_its_own_record_as_trusted() -> None:
    raw = call("wf", "a", "t1") | {
        "trust": {"source": "gateway", "authenticated": True, "credential_verified": True}
    }
    event = decode_event(orjson.dumps(raw))
    assert not isinstance(event, Rejected)
    assert event.trust is None


# -- verified credentials ------------------------------------------------------------------------

ISSUER = "https://sts.acme.example"


@pytest.fixture
def issuer(tmp_path: Path) -> Any:
    key = generate_key("ES256")
    write_jwks(tmp_path / "sts.jwks.json", [dict(key.as_dict(private=False))])

    def mint(sub: str, jti: str, scope: str = "crm:read", key_: Any = key) -> str:
        iat = int(T0.timestamp()) - 60
        claims = {"iss": ISSUER, "sub": wl(sub), "jti": jti, "scope": scope, "iat": iat}
        claims["exp"] = iat + 600
        return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key_)

    mint.verifier = TokenVerifier({ISSUER: KeySource(tmp_path / "sts.jwks.json")})  # type: ignore[attr-defined]
    return mint


def _gate_with_tokens(world: World, verifier: TokenVerifier) -> SourceGate:
    return SourceGate(load_registry(world.registry_path), verifier, DetectionConfig(grace_s=5))


def test_a_verified_token_replaces_the_asserted_credential(tmp_path: Path, issuer: Any) -> None:
    world = World(tmp_path)
    token = issuer("victim", "jti-real", "crm:read crm:write")
    asserted = call("wf-v", "victim", "jti-fake", t=20) | {"presented_token": token}
    event = _admit(_gate_with_tokens(world, issuer.verifier), world.sign("victim-agents", asserted))
    assert event.credential.token_id == "jti-real"
    assert event.credential.scopes == ["crm:read", "crm:write"]
    assert event.trust.credential_verified is True
    assert "revoke_token" not in event.trust.withhold  # a verified token may be revoked
    assert event.presented_token is None  # never kept in state (a bearer token)


def test_an_invalid_token_is_a_finding_against_the_presenter_never_a_crash(
    tmp_path: Path, issuer: Any
) -> None:
    world = World(tmp_path)
    forged_key = generate_key("ES256")
    bad = issuer("victim", "jti-v", key_=forged_key)  # victim's token id, wrong signature
    out = Outbox()
    gate = _gate_with_tokens(world, issuer.verifier)
    for token in (bad, "not.a.jwt", "garbage"):
        ev = call("wf-b", "attacker", "jti-v", t=20) | {"presented_token": token}
        assert _admit(gate, world.sign("attacker-agents", ev), out) is None  # not applied
    assert {f.code for f in out.findings} == {"credential_invalid"}
    assert {f.workload_id for f in out.findings} == {wl("attacker")}
    assert all(f.credential_verified is False for f in out.findings)
    targets = {(r.target.kind, r.target.id) for r in out.revocations}
    assert targets == {("workload", wl("attacker"))}  # never the token id it names


def test_an_invalid_token_cannot_quarantine_a_workload_its_sender_does_not_speak_for(
    tmp_path: Path, issuer: Any
) -> None:
    world = World(tmp_path)
    ev = call("wf-v", "victim", "jti-v", t=20) | {"presented_token": "x.y.z"}
    gate = _gate_with_tokens(world, issuer.verifier)
    out = Outbox()
    result = _admit(gate, world.sign("attacker-agents", ev), out)
    assert isinstance(result, Rejected)
    assert result.reason == "unauthorized_assertion"
    assert not out.revocations
    # without a registry (issuers only): a finding, but no quarantine on an anonymous word
    open_gate = SourceGate(None, issuer.verifier, DetectionConfig(grace_s=5))
    out = Outbox()
    _admit(open_gate, orjson.dumps(ev), out)
    assert [f.code for f in out.findings] == ["credential_invalid"]
    assert out.findings[0].withheld == ["quarantine_workload"]
    assert not out.revocations


def test_a_stolen_verified_token_revokes_the_token_and_blames_the_thief(
    tmp_path: Path, issuer: Any
) -> None:
    """Framing with a real stolen token dated early: the thief holds the token (revoking it is
    right), but the findings and the quarantine fall on the thief, not on its subject."""
    world = World(tmp_path)
    token = issuer("victim", "jti-v")
    thief = call("wf-b", "attacker", "x", t=1) | {"presented_token": token}
    mine = [
        started("wf-v", "victim", "x", t=10) | {"presented_token": token},
        call("wf-v", "victim", "x", t=20) | {"presented_token": token},
    ]
    lines = [world.sign("attacker-agents", thief)] + [world.sign("victim-agents", e) for e in mine]
    buf: list[bytes] = []
    mon = Monitor(Context(DetectionConfig(grace_s=5)))
    gate = _gate_with_tokens(world, issuer.verifier)
    Replayer(mon, buf.append, gate=gate).run(lines)
    records = [orjson.loads(x) for x in buf]
    findings = [r for r in records if r["kind"] == "finding"]
    assert findings
    assert {f["workload_id"] for f in findings} == {wl("attacker")}
    assert {"credential_reuse", "identity_mismatch"} <= {f["code"] for f in findings}
    assert all(f["credential_verified"] for f in findings if f["code"] == "identity_mismatch")
    quarantined = {
        r["target"]["id"] for r in records if r.get("target", {}).get("kind") == "workload"
    }
    assert quarantined == {wl("attacker")}


def test_token_verification_is_cached_per_token(tmp_path: Path, issuer: Any) -> None:
    token = issuer("victim", "jti-v")
    verifier: TokenVerifier = issuer.verifier
    for _ in range(1000):
        assert not isinstance(verifier.verify(token), str)
    assert verifier.verified == 1  # one signature check, whatever the number of events


def test_a_check_waiting_in_saved_state_keeps_its_events_trust(tmp_path: Path) -> None:
    """An intrusion waits a grace period for a delegation; a worker restart in between must
    not give the intruder back the power to revoke the victim's workflow."""
    from tether.core.fold import fire_due
    from tether.models.state_codec import dump_session, load_session

    world = World(tmp_path)
    gate = world.gate()
    mon = Monitor(Context(DetectionConfig(grace_s=5)))
    for line in (
        world.sign("victim-agents", started("wf-v", "victim", "jti-v", t=10)),
        world.sign("attacker-agents", call("wf-v", "attacker", "jti-b", t=20)),
    ):
        event = decode_event(line)
        assert not isinstance(event, Rejected)
        admitted = gate.admit(line, event, lambda _wf: wl("victim"), 0.0, Outbox())
        assert not isinstance(admitted, Rejected | None)
        mon.process(admitted)
    saved = mon.sessions["wf-v"]
    assert saved.pending
    back = load_session(dump_session(saved))
    out = Outbox()
    fire_due(back, 1e12, mon.ctx, 0.0, out, [])
    assert [f.code for f in out.findings] == ["undelegated_actor"]
    assert out.findings[0].withheld == ["revoke_token", "revoke_workflow"]
    assert [(r.target.kind, r.target.id) for r in out.revocations] == [("workload", wl("attacker"))]


def test_tether_replay_takes_the_registry(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tether.cli import main

    world = World(tmp_path)
    lines = [
        world.sign("victim-agents", started("wf-v", "victim", "jti-v", t=10)),
        world.sign("attacker-agents", call("wf-v", "victim", "jti-b", holder="attacker", t=20)),
        orjson.dumps(call("wf-v", "victim", "jti-b", t=21)),
    ]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    args = ["replay", "-q", "--sources", str(world.registry_path), str(tmp_path / "in.jsonl")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    records = [orjson.loads(x) for x in result.stdout_bytes.splitlines()]
    assert [r.get("reason") for r in records] == [
        "unauthorized_assertion",
        "unauthenticated_source",
    ]
    audit = CliRunner().invoke(main, [*args[:2], "--sources-mode", "audit", *args[2:]])
    assert audit.exit_code == 0
    assert "unauthenticated_source" in audit.stdout  # the file's own mode (enforce) wins


@pytest.mark.parametrize("key_len", [32, 64, 65, 100])
def test_precomputed_hmac_states_agree_with_hmac(key_len: int) -> None:
    import hmac
    import os

    from tether.security.proof import hmac_states

    secret, prefix, record = os.urandom(key_len), b"eyJhbGciOi.", os.urandom(900)
    inner, outer = (h.copy() for h in hmac_states(secret, prefix))
    inner.update(record)
    outer.update(inner.digest())
    assert outer.digest() == hmac.digest(secret, prefix + record, "sha256")


def test_the_hot_path_and_the_full_path_agree(tmp_path: Path) -> None:
    """Every record the inlined path admits, the full path admits with the same trust; a record
    the full path refuses, the inlined path does not admit."""
    world = World(tmp_path)
    gate = world.gate()
    first = world.sign("victim-agents", started("wf-v", "victim", "jti-v"))
    _admit(gate, first)  # learns the header's source and key
    cases = [
        world.sign("victim-agents", call("wf-v", "victim", "jti-v")),
        world.sign("victim-agents", call("wf-v", "helper", "jti-h")),
        world.sign("victim-agents", call("wf-v", "attacker", "jti-b")),  # not its workload
        world.sign("victim-agents", call("wf-v", "victim", "jti-b", holder="attacker")),
        world.sign("victim-agents", call("wf-v", "victim", "jti-v")).replace(b"crm.", b"crx."),
    ]
    for line in cases:
        event = decode_event(line)
        assert not isinstance(event, Rejected)
        fast = gate._fast(line, event, lambda _wf: wl("victim"))
        full = gate._admit(line, decode_event(line), lambda _wf: wl("victim"), 0.0, Outbox())  # type: ignore[arg-type]
        if fast is None:
            assert isinstance(full, Rejected), line
        else:
            assert not isinstance(full, Rejected | None)
            assert full.trust == fast
    assert gate._fast(cases[0], decode_event(cases[0]), lambda _wf: wl("victim")) is not None  # type: ignore[arg-type]
