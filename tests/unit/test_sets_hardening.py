"""Smaller holes in the signed feed (issue 18 item 11): each reproduced, then refused.

Future-dated heartbeats and ``iat``; keys not bound to an issuer; a JWKS over plain http; a
private key file others can read; faust's web server on every interface; the fleet container
holding the signing key.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from sdk_helpers import T0, FakeClock, heartbeat, revocation
from tether.security import KeySource, SetRejected, SetSigner, SetVerifier, StaticKeys, generate_key
from tether.security.keys import (
    generate_files,
    key_source_from_settings,
    load_private_key,
    read_jwks,
    write_private_key,
)
from tether.settings import Settings

PROD = "https://tether.prod.example"
STAGING = "https://tether.staging.example"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prod():
    return SetSigner(generate_key("ES256"), issuer=PROD)


@pytest.fixture(scope="module")
def staging():
    return SetSigner(generate_key("ES256"), issuer=STAGING)


def rejected(verifier: SetVerifier, data: bytes) -> str:
    with pytest.raises(SetRejected) as info:
        verifier.verify(data)
    return info.value.reason


# -- time --------------------------------------------------------------------------------------


def test_a_heartbeat_dated_beyond_the_skew_bound_is_refused(prod):
    clock = FakeClock()
    verifier = SetVerifier(StaticKeys([prod.public_jwk()]), issuer=PROD, clock=clock)
    ahead = prod.heartbeat(heartbeat(T0 + timedelta(hours=2)))
    assert rejected(verifier, ahead) == "future_dated"
    clock.advance(2 * 3600)  # two hours later it would look fresh: it must not verify then
    verifier.forget()
    assert verifier.verify(ahead)  # at its time it is an ordinary heartbeat


def test_a_heartbeat_within_the_skew_is_remembered_until_it_can_no_longer_look_fresh(prod):
    clock = FakeClock()
    verifier = SetVerifier(StaticKeys([prod.public_jwk()]), issuer=PROD, clock=clock)
    ahead = prod.heartbeat(heartbeat(T0 + timedelta(seconds=299)))
    assert verifier.verify(ahead)
    clock.advance(300.5)  # a replay when it looks 1.5 s old: fresh, were it accepted again
    assert rejected(verifier, ahead) == "replayed"


def test_a_revocation_whose_iat_is_beyond_the_skew_bound_is_refused(prod):
    verifier = SetVerifier(StaticKeys([prod.public_jwk()]), issuer=PROD, clock=FakeClock())
    rev = revocation(start=T0 + timedelta(hours=1))
    assert rejected(verifier, prod.revocation(rev)) == "future_dated"
    assert verifier.verify(prod.revocation(revocation(start=T0 + timedelta(seconds=60))))


# -- keys bound to issuers ---------------------------------------------------------------------


def test_a_staging_key_in_the_production_jwks_cannot_sign_production_revocations(prod, staging):
    jwks = StaticKeys([prod.public_jwk(), staging.public_jwk()])  # one JWKS for both
    verifier = SetVerifier(jwks, issuer=PROD, clock=FakeClock())
    impostor = SetSigner(staging._key, issuer=PROD)  # staging's key, claiming production
    assert rejected(verifier, impostor.revocation(revocation())) == "wrong_issuer"
    assert verifier.verify(prod.revocation(revocation()))


def test_keys_without_an_issuer_are_refused_when_binding_is_required(prod):
    unbound = {k: v for k, v in prod.public_jwk().items() if k != "iss"}
    loose = SetVerifier(StaticKeys([unbound]), issuer=PROD, clock=FakeClock())
    assert loose.verify(prod.revocation(revocation()))
    strict = SetVerifier(
        StaticKeys([unbound]), issuer=PROD, clock=FakeClock(), require_key_issuer=True
    )
    assert rejected(strict, prod.revocation(revocation())) == "wrong_issuer"


def test_a_signer_refuses_a_key_bound_to_another_issuer(tmp_path):
    files = generate_files(tmp_path, "ES256", issuer=STAGING)
    assert read_jwks(files.jwks)[0]["iss"] == STAGING
    with pytest.raises(ValueError, match="issuer"):
        SetSigner(load_private_key(files.private_key), issuer=PROD)


# -- where keys come from ----------------------------------------------------------------------


def test_a_jwks_over_plain_http_is_refused_unless_allowed():
    with pytest.raises(ValueError, match="http"):
        KeySource("http://keys.example/jwks.json")
    with pytest.raises(ValueError, match="TETHER_JWKS_ALLOW_HTTP"):
        key_source_from_settings(Settings(jwks="http://keys.example/jwks.json"))
    assert KeySource("http://keys.example/jwks.json", allow_http=True)
    assert key_source_from_settings(
        Settings(jwks="http://keys.example/jwks.json", jwks_allow_http=True)
    )
    assert KeySource("https://keys.example/jwks.json")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_private_key_others_can_read_is_refused_with_the_chmod_to_run(tmp_path, mode):
    path = tmp_path / "signing.jwk.json"
    write_private_key(path, generate_key("ES256"))
    os.chmod(path, mode)
    with pytest.raises(ValueError, match=f"chmod 600 {path}"):
        load_private_key(path)
    os.chmod(path, 0o600)
    assert load_private_key(path).is_private


# -- deployment --------------------------------------------------------------------------------


def test_faust_web_server_binds_loopback_unless_told_otherwise():
    from streams.app import web_bind

    assert Settings(web_port=6066).web_host == "127.0.0.1"
    assert web_bind(Settings(web_port=6066)) == "127.0.0.1"
    assert web_bind(Settings(web_port=6066, web_host="0.0.0.0")) == "0.0.0.0"  # noqa: S104


def test_the_fleet_container_gets_only_the_jwks_not_the_signing_key():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    key_path = services["worker"]["environment"]["TETHER_SIGNING_KEY"]
    signing_volumes = {
        str(m).split(":")[0]
        for m in services["worker"]["volumes"]
        if key_path.startswith(str(m).split(":")[1])
    }
    assert signing_volumes  # the worker signs: it mounts the key
    fleet = services["fleet"]
    mounts = [str(m) for m in fleet.get("volumes", [])]
    assert not {m.split(":")[0] for m in mounts} & signing_volumes
    assert "TETHER_SIGNING_KEY" not in fleet.get("environment", {})
    assert "--no-worker" in fleet["command"]  # a worker of its own would need the key
    assert all(m.endswith(":ro") for m in mounts)
