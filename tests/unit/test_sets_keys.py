"""Signing keys and JWKS sources: files, URLs, rotation without a restart, a rate-limited refetch."""

from __future__ import annotations

import http.server
import logging
import stat
import threading

import orjson
import pytest
from click.testing import CliRunner

from sdk_helpers import FakeClock, revocation
from tether.cli import main
from tether.security import KeySource, SetRejected, SetSigner, SetVerifier, generate_key
from tether.security.keys import (
    ensure_dev_keys,
    generate_files,
    load_private_key,
    parse_jwks,
    read_jwks,
    rotate_files,
    signer_from_settings,
    verifier_from_settings,
    write_jwks,
)
from tether.security.sets import unverified_parts
from tether.settings import Settings

ISSUER = "urn:tether:monitor"


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def old_key():
    return generate_key("RS256")


@pytest.fixture(scope="module")
def new_key():
    return generate_key("ES256")


def public(key):
    return key.as_dict(private=False)


# -- rotation through a KeySource ------------------------------------------------------------


class RotationScenario:
    """A gateway verifying while the JWKS behind ``location`` rotates from one key to two."""

    def __init__(self, location, publish, old_key, new_key, reads=None) -> None:
        self.tick = Monotonic()
        self.source = KeySource(location, min_refetch_s=10.0, clock=self.tick, allow_http=True)
        self.verifier = SetVerifier(self.source, issuer=ISSUER, clock=FakeClock())
        self.publish = publish
        self.old = SetSigner(old_key, issuer=ISSUER)
        self.new = SetSigner(new_key, issuer=ISSUER)
        self.bogus = SetSigner(generate_key("ES256"), issuer=ISSUER)
        self.reads = reads or (lambda: self.source.reads)

    def run(self) -> None:
        self.publish([public(self.old._key)])
        assert self.verifier.verify(self.old.revocation(revocation(rid="rv-1")))
        assert self.reads() == 1

        # rotation: the JWKS gains the new key; a record signed with it arrives 1 s after the
        # last read, so the rate limit holds the refetch back
        self.publish([public(self.old._key), public(self.new._key)])
        self.tick.now += 1
        new_rev = self.new.revocation(revocation(rid="rv-2"))
        self._rejected(new_rev, "unknown_kid")
        # a flood of bogus kids does not reach the JWKS endpoint
        for i in range(50):
            self._rejected(self.bogus.revocation(revocation(rid=f"rv-bogus-{i}")), "unknown_kid")
        assert self.reads() == 1

        self.tick.now += 9  # 10 s after the last read: one refetch, and the new key is known
        assert self.verifier.verify(new_rev)
        assert self.reads() == 2
        assert self.verifier.verify(self.old.revocation(revocation(rid="rv-3")))  # old key stays

        self.tick.now += 1  # 1 s after the last read
        self._rejected(self.bogus.revocation(revocation(rid="rv-x")), "unknown_kid")
        self.tick.now += 8  # 9 s
        self._rejected(self.bogus.revocation(revocation(rid="rv-y")), "unknown_kid")
        assert self.reads() == 2
        self.tick.now += 1  # 10 s: the next read is allowed
        self._rejected(self.bogus.revocation(revocation(rid="rv-z")), "unknown_kid")
        assert self.reads() == 3

    def _rejected(self, data: bytes, reason: str) -> None:
        with pytest.raises(SetRejected) as info:
            self.verifier.verify(data)
        assert info.value.reason == reason


def test_rotation_through_a_jwks_file_without_a_restart(tmp_path, old_key, new_key):
    path = tmp_path / "jwks.json"
    RotationScenario(path, lambda keys: write_jwks(path, keys), old_key, new_key).run()


class JwksServer:
    """A local http.server serving one JWKS document and counting the requests."""

    def __init__(self) -> None:
        self.body = b'{"keys": []}'
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                if self.path != "/.well-known/jwks.json":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/jwk-set+json")
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, format, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_server():
    server = JwksServer()
    yield server
    server.close()


def test_rotation_through_a_jwks_url_without_a_restart(jwks_server, old_key, new_key):
    def publish(keys):
        jwks_server.body = orjson.dumps({"keys": keys})

    scenario = RotationScenario(
        jwks_server.url, publish, old_key, new_key, lambda: jwks_server.requests
    )
    scenario.run()
    assert scenario.source.reads == jwks_server.requests


def test_an_unreachable_or_broken_jwks_keeps_the_keys_already_known(jwks_server, old_key):
    tick = Monotonic()
    jwks_server.body = orjson.dumps({"keys": [public(old_key)]})
    source = KeySource(jwks_server.url, min_refetch_s=1, clock=tick, allow_http=True)
    assert source.find(old_key.kid) is not None
    for body in (b"<html>oops</html>", b'{"no": "keys"}'):
        jwks_server.body = body
        tick.now += 1
        assert source.find("other") is None
        assert source.last_error is not None
        assert source.find(old_key.kid) is not None
    missing = KeySource(jwks_server.url.replace("jwks.json", "nope"), clock=tick, allow_http=True)
    assert missing.find("k") is None
    assert "404" in str(missing.last_error)


def test_a_key_removed_from_the_jwks_stops_verifying_after_a_reread(tmp_path, old_key):
    path = tmp_path / "jwks.json"
    write_jwks(path, [public(old_key)])
    source = KeySource(path)
    assert source.find(old_key.kid) is not None
    write_jwks(path, [])
    assert source.refresh()
    assert source.find(old_key.kid) is None
    assert source.kids == frozenset()


def test_the_jwks_is_reread_once_it_is_max_age_old(tmp_path, old_key, new_key):
    path = tmp_path / "jwks.json"
    write_jwks(path, [public(old_key), public(new_key)])
    tick = Monotonic()
    source = KeySource(path, max_age_s=300, clock=tick)
    assert source.find(old_key.kid) is not None
    write_jwks(path, [public(new_key)])  # the old key was compromised: removed
    tick.now += 299
    assert source.find(old_key.kid) is not None  # known keys are not reread on every lookup
    assert source.reads == 1
    tick.now += 1
    assert source.find(old_key.kid) is None
    assert source.find(new_key.kid) is not None
    assert source.reads == 2


def test_nothing_is_read_before_the_first_lookup(tmp_path):
    source = KeySource(tmp_path / "missing.json")
    assert source.reads == 0
    assert source.find("k") is None
    assert source.reads == 1
    assert "missing.json" in str(source.last_error)


@pytest.mark.parametrize("location", ["file:///etc/jwks.json", "ftp://x/jwks.json"])
def test_only_paths_and_http_urls_are_accepted(location):
    with pytest.raises(ValueError, match="http"):
        KeySource(location)


def test_unfit_keys_in_a_jwks_are_skipped_with_a_warning(old_key, caplog):
    doc = {
        "keys": [
            public(old_key),
            {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXh4eHg", "kid": "hmac"},
            {**public(old_key), "kid": "enc", "use": "enc"},
            {**public(old_key), "kid": None},
            "not a key",
        ]
    }
    with caplog.at_level(logging.WARNING):
        keys = parse_jwks(orjson.dumps(doc), "test")
    assert list(keys) == [old_key.kid]
    assert "hmac" in caplog.text
    assert "enc" in caplog.text


# -- key files -------------------------------------------------------------------------------


def test_generate_writes_a_private_jwk_and_a_public_jwks(tmp_path):
    files = generate_files(tmp_path / "k", "RS256")
    assert stat.S_IMODE(files.private_key.stat().st_mode) == 0o600
    key = load_private_key(files.private_key)
    assert key.kid == files.kid == key.thumbprint()
    (entry,) = read_jwks(files.jwks)
    assert entry["kid"] == files.kid
    assert entry["alg"] == "RS256"
    assert entry["use"] == "sig"
    assert "d" not in entry  # public only
    with pytest.raises(FileExistsError, match="rotate"):
        generate_files(tmp_path / "k")
    assert generate_files(tmp_path / "k", "ES256", force=True).alg == "ES256"


def test_rotate_keeps_old_public_keys_so_earlier_sets_still_verify(tmp_path):
    directory = tmp_path / "k"
    first = generate_files(directory)
    old_set = SetSigner(load_private_key(first.private_key), issuer=ISSUER).revocation(
        revocation(rid="rv-old")
    )
    second = rotate_files(directory, "ES256")
    third = rotate_files(directory)
    assert third.alg == "ES256"  # the current key's algorithm by default
    assert [k["kid"] for k in read_jwks(second.jwks)] == [first.kid, second.kid, third.kid]
    signer = SetSigner(load_private_key(third.private_key), issuer=ISSUER)
    assert signer.kid == third.kid
    verifier = SetVerifier(KeySource(third.jwks), issuer=ISSUER)
    assert verifier.verify(old_set)
    assert verifier.verify(signer.revocation(revocation(rid="rv-new")))


def test_rotate_needs_a_key_to_rotate(tmp_path):
    with pytest.raises(ValueError, match="generate"):
        rotate_files(tmp_path)


def test_a_private_key_file_must_hold_a_private_key_with_a_kid(tmp_path, old_key):
    path = tmp_path / "k.json"
    path.write_bytes(orjson.dumps(public(old_key)))
    with pytest.raises(ValueError, match="public key"):
        load_private_key(path)
    path.write_bytes(b"{")
    with pytest.raises(ValueError, match="not a JWK"):
        load_private_key(path)
    with pytest.raises(ValueError, match="cannot read"):
        load_private_key(tmp_path / "missing.json")


def test_dev_keys_are_created_once_and_kept_out_of_git(tmp_path):
    first = ensure_dev_keys(tmp_path / "keys")
    again = ensure_dev_keys(tmp_path / "keys")
    assert first == again
    assert (tmp_path / "keys" / ".gitignore").read_text().strip().endswith("*")
    (tmp_path / "keys" / "jwks.json").unlink()  # e.g. deleted by hand: it is restored
    ensure_dev_keys(tmp_path / "keys")
    assert [k["kid"] for k in read_jwks(first.jwks)] == [first.kid]


# -- from settings ---------------------------------------------------------------------------


def test_with_nothing_configured_signer_and_watcher_share_a_dev_key(tmp_path, caplog):
    settings = Settings(home=tmp_path / "home")
    verifier = verifier_from_settings(settings)  # reads nothing yet
    assert not (tmp_path / "home").exists()
    with caplog.at_level(logging.WARNING):
        signer = signer_from_settings(settings)
    assert "DEVELOPMENT" in caplog.text
    assert (tmp_path / "home" / "keys" / "signing.jwk.json").exists()
    rev = revocation(lasts=1e9)
    assert verifier.verify(signer.revocation(rev)) == rev
    assert signer_from_settings(settings).kid == signer.kid  # created once


def test_explicit_keys_and_issuer_from_settings(tmp_path):
    files = generate_files(tmp_path, "ES256")
    settings = Settings(
        signing_key=files.private_key,
        jwks=str(files.jwks),
        issuer="urn:acme:tether",
        token_issuer="https://sts.acme.example",
        home=tmp_path / "unused",
    )
    signer = signer_from_settings(settings)
    data = signer.revocation(revocation(lasts=1e9))
    claims = unverified_parts(data)[1]
    assert claims["iss"] == "urn:acme:tether"
    assert claims["sub_id"]["iss"] == "https://sts.acme.example"
    assert verifier_from_settings(settings).verify(data)
    assert not (tmp_path / "unused").exists()
    with pytest.raises(SetRejected, match="wrong_issuer"):
        verifier_from_settings(Settings(jwks=str(files.jwks))).verify(data)


def test_a_signing_alg_setting_must_match_the_key(tmp_path):
    files = generate_files(tmp_path, "ES256")
    with pytest.raises(ValueError, match="TETHER_SIGNING_ALG"):
        signer_from_settings(Settings(signing_key=files.private_key, signing_alg="RS256"))


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TETHER_SIGNING_KEY", str(tmp_path / "k.json"))
    monkeypatch.setenv("TETHER_JWKS", "https://keys.acme.example/jwks.json")
    monkeypatch.setenv("TETHER_ISSUER", "urn:acme:tether")
    monkeypatch.setenv("TETHER_JWKS_REFETCH_S", "30")
    monkeypatch.setenv("TETHER_HOME", str(tmp_path))
    settings = Settings()
    assert settings.signing_key == tmp_path / "k.json"
    assert settings.jwks == "https://keys.acme.example/jwks.json"
    assert settings.issuer == "urn:acme:tether"
    assert settings.jwks_refetch_s == 30
    assert settings.jwks_max_age_s == 3600
    assert settings.home == tmp_path


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_generate_then_rotate(tmp_path):
    runner = CliRunner()
    directory = tmp_path / "keys"
    result = runner.invoke(main, ["keys", "generate", "--dir", str(directory), "--alg", "ES256"])
    assert result.exit_code == 0, result.output
    assert f"TETHER_JWKS={directory / 'jwks.json'}" in result.output
    again = runner.invoke(main, ["keys", "generate", "--dir", str(directory)])
    assert again.exit_code == 1
    assert "rotate" in again.output
    rotated = runner.invoke(main, ["keys", "rotate", "--dir", str(directory), "--alg", "RS256"])
    assert rotated.exit_code == 0, rotated.output
    assert len(read_jwks(directory / "jwks.json")) == 2
    missing = runner.invoke(main, ["keys", "rotate", "--dir", str(tmp_path / "none")])
    assert missing.exit_code == 1
    assert "tether keys generate" in missing.output


def test_cli_defaults_to_the_dev_key_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("TETHER_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(main, ["keys", "generate"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "home" / "keys" / "signing.jwk.json").exists()
    assert (tmp_path / "home" / "keys" / ".gitignore").exists()


@pytest.mark.parametrize("args", [["keys"], ["keys", "generate"], ["keys", "rotate"]])
def test_cli_help_teaches(args):
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output or "Production" in result.output
