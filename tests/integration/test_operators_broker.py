"""Operators' reinstatements on the real broker and Redis (issue 22, item 2; docs/operators.md).

A false positive revoked a token; an operator runs ``tether reinstate``; a gateway's ``Watcher``
allows the next call (the latency from the command's publish to the watcher's answer is
printed), the revocation ledger does not republish the lifted revocation, and the Redis
registry answers "not revoked" once the registry sync has applied it. A reinstatement that is
unsigned or signed with the worker's key is rejected by the watcher and the sync. A later
violation revokes again.
"""

from __future__ import annotations

# token_id values are credential ids (jti), not secrets
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from click.testing import CliRunner
from test_sdk_watcher import Feed, eventually

from sdk_helpers import revocation
from streams.ledger import RevocationLedger
from streams.registry_sync import RegistrySync
from tether.adapters.kafka_admin import create_topics
from tether.adapters.redis_registry import RedisRegistry
from tether.cli import main
from tether.models.outputs import Reinstatement, Target
from tether.sdk.watcher import Watcher
from tether.security import SetSigner, generate_key, verifier_from_settings
from tether.security.keys import write_jwks
from tether.security.operators import generate_operator_files
from tether.settings import Settings

ISSUER = "urn:tether:monitor"
OPS = "urn:tether:operator"


@pytest.fixture(scope="module")
def worker() -> SetSigner:
    return SetSigner(generate_key("ES256", issuer=ISSUER), issuer=ISSUER)


@pytest.fixture
def settings(tmp_path, kafka_bootstrap, redis_url, fresh_topic_prefix, kafka_admin, worker):
    jwks = tmp_path / "worker-jwks.json"
    write_jwks(jwks, [worker.public_jwk()])
    ops = generate_operator_files(tmp_path / "operator", name="alice", issuer=OPS, alg="ES256")
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        topic_prefix=f"{fresh_topic_prefix}.",
        partitions=2,
        issuer=ISSUER,
        jwks=str(jwks),
        operator_jwks=str(ops.jwks),
        operator_key=ops.private_key,
        home=tmp_path,
    )
    created = create_topics(settings)
    yield settings
    for future in kafka_admin.delete_topics(created, operation_timeout=30).values():
        future.result(30)


def cli(settings: Settings, *args: str) -> str:
    env = {
        "TETHER_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "TETHER_TOPIC_PREFIX": settings.topic_prefix,
        "TETHER_OPERATOR_KEY": str(settings.operator_key),
        "TETHER_HOME": str(settings.home),
    }
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def forged(signer: SetSigner, item: Reinstatement) -> bytes:
    """A reinstatement signed by hand with the worker's key (a stolen key)."""
    from tether.security import caep

    event_type, body = caep.reinstatement_event(item)
    claims = {
        "iss": signer.issuer,
        "aud": signer.audience,
        "iat": int(item.issued_at.timestamp()),
        "jti": item.reinstatement_id,
        "sub_id": caep.subject(item.target),
        "events": {event_type: body},
        "tether": item.model_dump(mode="json", exclude_none=True),
    }
    return signer.sign_payload(orjson.dumps(claims))


def test_a_false_positive_is_reinstated_and_forged_reinstatements_are_not(
    settings, worker, fresh_topic_prefix, redis_client
):
    feed = Feed(settings, worker)
    start = datetime.now(UTC) - timedelta(seconds=5)
    fp = revocation("token", "jti-fp", lasts=3600, rid="rv-fp", start=start)
    feed.revoke(fp)
    feed.flush()
    store = RedisRegistry(
        settings.redis_url.get_secret_value(),
        key_prefix=f"{fresh_topic_prefix}:revoked:",
        sync_topic=None,  # the test reads the registry itself; vouching is tested elsewhere
    )
    sync = RegistrySync(settings, store, verifier_from_settings(settings), check_s=0.2)
    ledger = RevocationLedger(settings, verifier_from_settings(settings))
    sync.start()
    ledger.start()
    try:
        with Watcher(settings, staleness_s=float("inf")) as watcher:
            assert watcher.wait_ready(15)
            eventually(lambda: watcher.is_revoked(token_id="jti-fp"), timeout=10)
            eventually(lambda: store.lookup_sync("token", "jti-fp") is True, timeout=10)
            eventually(lambda: all(p.live for p in ledger.state.partitions.values()), timeout=10)

            # a thief with the worker's key, and someone who can only write the topic
            item = Reinstatement(
                reinstatement_id="reinstate:forged",
                target=Target(kind="token", id="jti-fp"),
                by="mallory",
                reason="let me back in",
                issued_at=datetime.now(UTC),
                not_after=datetime.now(UTC) + timedelta(days=1),
            )
            feed.raw(b"token:jti-fp", forged(worker, item))
            feed.raw(b"token:jti-fp", orjson.dumps(item.model_dump(mode="json")))
            feed.flush()
            eventually(
                lambda: {"not_operator", "unsigned"} <= set(watcher.stats.rejected), timeout=10
            )
            eventually(lambda: sync.skipped >= 2, timeout=10)
            assert watcher.is_revoked(token_id="jti-fp")
            assert store.lookup_sync("token", "jti-fp") is True
            assert watcher.stats.reinstatements == 0
            # the ledger restored the revocation after each record that displaced it
            eventually(lambda: ledger.state.corrections == 2, timeout=10)

            # the operator's reinstatement
            published = time.monotonic()
            out = cli(settings, "reinstate", "token:jti-fp", "--reason", "false positive")
            record = orjson.loads(out.splitlines()[0])
            assert (record["kind"], record["by"]) == ("reinstatement", "alice")
            latency = eventually(lambda: not watcher.is_revoked(token_id="jti-fp"), timeout=10)
            cli_s = time.monotonic() - published - latency
            print(
                f"\nreinstated: the watcher allowed the next call {latency * 1000:.1f} ms after "
                f"`tether reinstate` returned (the command took {cli_s * 1000:.0f} ms)"
            )
            assert watcher.stats.reinstatements == 1
            eventually(lambda: store.lookup_sync("token", "jti-fp") is False, timeout=10)
            time.sleep(1.0)  # the ledger has read it: it must not bring the revocation back
            assert not watcher.is_revoked(token_id="jti-fp")
            assert store.lookup_sync("token", "jti-fp") is False
            assert ledger.state.corrections == 2  # nothing republished since the reinstatement

            # a later violation revokes again, everywhere
            again = revocation(
                "token", "jti-fp", lasts=600, rid="rv-again", start=datetime.now(UTC)
            )
            feed.revoke(again)
            feed.flush()
            eventually(lambda: watcher.is_revoked(token_id="jti-fp"), timeout=10)
            eventually(lambda: store.lookup_sync("token", "jti-fp") is True, timeout=10)
    finally:
        sync.stop()
        ledger.stop()
        store.close_sync()


def test_an_operator_revokes_by_hand(settings, worker):
    with Watcher(settings, staleness_s=float("inf")) as watcher:
        assert watcher.wait_ready(15)
        out = cli(
            settings,
            "revoke",
            "workload:spiffe://acme/agent/coder",
            "--reason",
            "laptop stolen",
            "--until",
            "1h",
        )
        record = orjson.loads(out.splitlines()[0])
        assert (record["reason"], record["by"], record["note"]) == (
            "operator",
            "alice",
            "laptop stolen",
        )
        eventually(lambda: watcher.is_revoked(workload_id="spiffe://acme/agent/coder"), timeout=10)
