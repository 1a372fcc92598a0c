"""tether on a secured broker: SASL_SSL with SCRAM users and the ACLs of `tether topics acls`.

Runs against the second broker `scripts/services.sh up-secure` starts (`make services` starts it
with the first): one SASL_SSL listener, users admin, worker, agent and gateway, and
StandardAuthorizer with nothing allowed but what tether's ACL table grants. Each test makes a
fresh topic prefix and grants that prefix's ACLs as admin, exactly as an operator would.

What it proves (docs/kafka-security.md): nobody connects without TLS and a valid password; a
compromised agent can write intents and nothing else (no revocation, no tombstone, no finding,
no changelog record); a gateway can read revocations and not write them; and the whole pipeline
(an agent's Emitter, a `tether worker`, a gateway's Watcher) works with each on its principal.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.kafka_auth import ssl_context
from tether.adapters.kafka_acls import Principals, acl_grants, apply_acls
from tether.adapters.kafka_admin import BrokerUnavailableError, create_topics, wait_for_broker
from tether.adapters.kafka_config import admin_config, consumer_config, producer_config
from tether.kafka_settings import KafkaSettings
from tether.sdk.emitter import Emitter
from tether.sdk.watcher import Watcher
from tether.settings import Settings
from tls_certs import self_signed_ca

ROOT = Path(__file__).resolve().parents[2]
SECURE_DIR = Path(os.environ.get("TETHER_SERVICES_DIR", ROOT / ".services")) / "kafka-secure"
ORG = "spiffe://acme.example/agent/"
DENIED = {KafkaError.TOPIC_AUTHORIZATION_FAILED}


def user_env(user: str) -> dict[str, str]:
    """The TETHER_* variables `scripts/services.sh env-secure USER` prints."""
    path = SECURE_DIR / "clients" / f"{user}.env"
    if not path.exists():
        pytest.fail(
            f"the secured broker is not set up ({path} is missing): run `make services` "
            "or `scripts/services.sh up-secure`",
            pytrace=False,
        )
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def settings_of(user: str, prefix: str, **kafka: Any) -> Settings:
    """Settings of a client logged in as ``user`` (``kafka`` overrides the section's fields)."""
    env = user_env(user)
    section: dict[str, Any] = {
        key.removeprefix("TETHER_KAFKA__").lower(): value
        for key, value in env.items()
        if key.startswith("TETHER_KAFKA__")
    }
    section.update(kafka)
    return Settings(
        kafka_bootstrap=env["TETHER_KAFKA_BOOTSTRAP"],
        kafka=KafkaSettings(**section),
        topic_prefix=prefix,
        partitions=2,
    )


@pytest.fixture(scope="module")
def secure_bootstrap() -> str:
    env = user_env("admin")
    try:
        wait_for_broker(settings_of("admin", "tether."), timeout=30)
    except BrokerUnavailableError as exc:
        pytest.fail(
            f"the secured broker does not answer: {exc}. Run `scripts/services.sh up-secure`.",
            pytrace=False,
        )
    return env["TETHER_KAFKA_BOOTSTRAP"]


@pytest.fixture
def prefix(secure_bootstrap: str) -> str:
    """A fresh prefix with tether's topics and the ACLs of its three roles, made by the admin."""
    prefix = f"sec{uuid.uuid4().hex[:10]}."
    admin = settings_of("admin", prefix)
    create_topics(admin)
    apply_acls(admin, acl_grants(admin, Principals()))
    return prefix


def assert_denied(error: KafkaError | None, what: object) -> None:
    """The broker refused on authorization (never a transport error or a silent success)."""
    assert error is not None, f"{what}: accepted"
    assert error.code() in DENIED, f"{what}: {error}"


def produce(settings: Settings, topic: str, value: bytes | None, **overrides: Any) -> Any:
    """Produce one record; the delivery error (None when the broker acknowledged it)."""
    errors: list[Any] = []
    config = producer_config(
        settings, client_id=f"test-{uuid.uuid4().hex[:6]}", overrides={"message.timeout.ms": 15000}
    )
    config.update(overrides)
    producer = Producer(config)
    producer.produce(topic, value, b"token:jti-victim", on_delivery=lambda e, _m: errors.append(e))
    producer.flush(30)
    assert errors, f"no delivery report for {topic}"
    return errors[0]


def first_error(settings: Settings, topic: str, group: str) -> Any:
    """Read ``topic`` partition 0 from the start: its first record's value, or the error."""
    consumer = Consumer(consumer_config(settings, group_id=group, client_id="test-reader"))
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            return msg.error() or msg.value()
        return None
    finally:
        consumer.close()


# -- authentication ----------------------------------------------------------------------------


def test_a_client_without_sasl_is_refused(secure_bootstrap: str) -> None:
    plaintext = Settings(kafka_bootstrap=secure_bootstrap)
    with pytest.raises(BrokerUnavailableError):
        wait_for_broker(plaintext, timeout=4)
    tls_only = settings_of("agent", "tether.")
    tls_only = tls_only.model_copy(
        update={
            "kafka": KafkaSettings(security_protocol="SSL", ssl_ca_file=tls_only.kafka.ssl_ca_file)
        }
    )
    with pytest.raises(BrokerUnavailableError):
        wait_for_broker(tls_only, timeout=4)


def test_a_wrong_password_is_refused(secure_bootstrap: str) -> None:
    wrong = settings_of(
        "agent", "tether.", sasl_password="not-the-password", sasl_password_file=None
    )
    with pytest.raises(BrokerUnavailableError, match=r"(?i)authentication"):
        wait_for_broker(wrong, timeout=6)


def test_a_broker_certificate_from_another_ca_is_refused(
    secure_bootstrap: str, tmp_path: Path
) -> None:
    """The client checks the broker: system CAs do not vouch for the local test CA."""
    agent = settings_of("agent", "tether.")
    other = tmp_path / "other-ca.crt"
    other.write_bytes(self_signed_ca("other"))
    fake = agent.model_copy(update={"kafka": agent.kafka.model_copy(update={"ssl_ca_file": other})})
    with pytest.raises(BrokerUnavailableError):
        wait_for_broker(fake, timeout=4)


def test_mutual_tls_logs_in_by_certificate_and_refuses_a_client_without_one(prefix: str) -> None:
    """The MTLS listener: the certificate's CN is the principal (CN=agent: the agent's ACLs);
    its key is encrypted, so TETHER_KAFKA__SSL_KEY_PASSWORD is exercised too."""
    agent = settings_of("agent-mtls", prefix)
    assert agent.kafka.ssl_key_password is not None
    assert produce(agent, agent.topic("intents"), b"{}") is None
    assert_denied(produce(agent, agent.topic("revocations"), b"{}"), "revocations")
    # faust's aiokafka clients load the same certificate and encrypted key
    assert ssl_context(agent.kafka).verify_mode is ssl.CERT_REQUIRED
    without_cert = agent.model_copy(
        update={
            "kafka": KafkaSettings(security_protocol="SSL", ssl_ca_file=agent.kafka.ssl_ca_file)
        }
    )
    with pytest.raises(BrokerUnavailableError):
        wait_for_broker(without_cert, timeout=4)


# -- authorization: what an agent may write --------------------------------------------------


def test_an_agent_writes_intents_and_nothing_else(prefix: str) -> None:
    agent = settings_of("agent", prefix)
    admin = settings_of("admin", prefix)
    # the worker's changelogs exist (faust would have made them): an agent still cannot write them
    changelogs = [f"{admin.group_id}-sessions-changelog", f"{admin.group_id}-tokens-changelog"]
    client = AdminClient(admin_config(admin))
    for future in client.create_topics([NewTopic(t, 2, 1) for t in changelogs]).values():
        future.result(30)

    assert produce(agent, agent.topic("intents"), b"{}") is None

    for name in ("revocations", "findings", "decisions", "deadletter", "credential-uses"):
        error = produce(agent, agent.topic(name), b'{"forged": true}')
        assert_denied(error, (name, error))
    tombstone = produce(agent, agent.topic("revocations"), None)
    assert_denied(tombstone, tombstone)
    for changelog in changelogs:
        error = produce(agent, changelog, b"{}")
        assert_denied(error, (changelog, error))


def test_an_agent_cannot_read_revocations_or_create_topics(prefix: str) -> None:
    agent = settings_of("agent", prefix)
    assert produce(settings_of("worker", prefix), agent.topic("revocations"), b"{}") is None
    error = first_error(agent, agent.topic("revocations"), group=f"tether-watcher-{prefix}")
    assert isinstance(error, KafkaError), error  # never the record
    assert error.code() in DENIED | {KafkaError.GROUP_AUTHORIZATION_FAILED}, error
    client = AdminClient(admin_config(agent))
    for name in ("revocations", "findings", "decisions", "credential-uses"):
        topic = agent.topic(name)
        assert_denied(client.list_topics(topic=topic, timeout=20).topics[topic].error, topic)
    future = client.create_topics([NewTopic(f"{prefix}squatted", 1, 1)])[f"{prefix}squatted"]
    with pytest.raises(Exception, match=r"(?i)authoriz"):
        future.result(30)


# -- authorization: what a gateway may do --------------------------------------------------------


def joins(settings: Settings, group: str, topic: str) -> KafkaError | None:
    """Try to join ``group`` on ``topic``: the first error (None: it was given partitions)."""
    consumer = Consumer(consumer_config(settings, group_id=group, client_id="test-joiner"))
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error():
                return msg.error()
            if consumer.assignment():
                return None
        raise AssertionError("neither an assignment nor an error")
    finally:
        consumer.close()


@pytest.mark.parametrize("user", ["agent", "gateway"])
def test_nobody_but_the_worker_can_join_its_consumer_group(prefix: str, user: str) -> None:
    """A member of the worker's group would be handed intents partitions (stalling them)."""
    settings = settings_of(user, prefix)
    error = joins(settings, settings.group_id, settings.topic("revocations"))
    assert error is not None, f"{user} joined the worker's group"
    assert error.code() in DENIED | {KafkaError.GROUP_AUTHORIZATION_FAILED}, error


def test_a_gateway_reads_revocations_and_cannot_write_them(prefix: str) -> None:
    gateway = settings_of("gateway", prefix)
    worker = settings_of("worker", prefix)
    assert produce(worker, worker.topic("revocations"), b'{"from": "worker"}') is None

    # as the Watcher: a group id of its own (it joins none), which it may only Describe
    seen = first_error(gateway, gateway.topic("revocations"), group=f"tether-watcher-{prefix}")
    assert seen == b'{"from": "worker"}'

    # without idempotence, so that the refusal is the topic's ACL and nothing else
    error = produce(gateway, gateway.topic("revocations"), b"{}", **{"enable.idempotence": False})
    assert_denied(error, error)
    tombstone = produce(
        gateway, gateway.topic("revocations"), None, **{"enable.idempotence": False}
    )
    assert_denied(tombstone, tombstone)
    intents = gateway.topic("intents")
    metadata = AdminClient(admin_config(gateway)).list_topics(topic=intents, timeout=20)
    error = metadata.topics[intents].error
    assert_denied(error, error)


# -- the command line, logged in by TETHER_KAFKA__* variables ------------------------------------


def test_the_cli_logs_in_with_the_environment_and_is_held_to_its_principal(
    tmp_path: Path,
) -> None:
    """`tether topics create|acls` as admin, `tether emit` as agent: the same ACLs hold."""
    from click.testing import CliRunner

    from tether.cli_stream import emit, topics

    runner = CliRunner()
    prefix = f"cli{uuid.uuid4().hex[:10]}."
    admin = {**user_env("admin"), "TETHER_TOPIC_PREFIX": prefix}
    agent = {**user_env("agent"), "TETHER_TOPIC_PREFIX": prefix}
    created = runner.invoke(topics, ["create", "--partitions", "1"], env=admin)
    assert created.exit_code == 0, created.output
    assert "1 replica(s)" in created.output
    assert "min.insync.replicas=1" in created.output
    applied = runner.invoke(topics, ["acls", "--apply"], env=admin)
    assert applied.exit_code == 0, applied.output

    path = tmp_path / "e.jsonl"
    path.write_bytes(b'{"workflow_id": "wf-cli"}\n')
    emitted = runner.invoke(emit, [str(path), "--timeout", "10"], env=agent)
    assert emitted.exit_code == 0, emitted.output
    assert "1 acknowledged" in emitted.output
    forged = runner.invoke(
        emit, [str(path), "--topic", f"{prefix}revocations", "--timeout", "10"], env=agent
    )
    assert forged.exit_code == 1, forged.output
    assert "authorization" in forged.output.lower(), forged.output
    # an agent cannot grant itself more
    escalated = runner.invoke(topics, ["acls", "--apply", "--wait", "10"], env=agent)
    assert escalated.exit_code == 1, escalated.output


@pytest.fixture(scope="module")
def operator_env(secure_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The operator's TETHER_* login: `scripts/services.sh up-secure` makes user `operator` on a
    fresh start; a broker set up before that gets it here, as admin, with a password of this run."""
    if (SECURE_DIR / "clients" / "operator.env").exists():
        return user_env("operator")
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    password = uuid.uuid4().hex
    path = tmp_path_factory.mktemp("operator") / "operator.password"
    path.write_text(password)
    admin = AdminClient(admin_config(settings_of("admin", "tether.")))
    upsert = UserScramCredentialUpsertion(
        "operator", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), password.encode()
    )
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(timeout=30)
    env = {**user_env("admin"), "TETHER_KAFKA__SASL_USERNAME": "operator"}
    env["TETHER_KAFKA__SASL_PASSWORD_FILE"] = str(path)
    return env


def test_an_operator_revokes_as_its_principal_and_writes_nothing_else(
    prefix: str, operator_env: dict[str, str], tmp_path: Path
) -> None:
    """`tether revoke` logged in as the operator principal (Principals.operator) publishes a
    revocation signed with the operator's key, which a gateway reads; the same login cannot
    write findings nor read revocations back."""
    from click.testing import CliRunner

    from tether.cli import main
    from tether.security.operators import generate_operator_files
    from tether.security.sets import unverified_parts

    files = generate_operator_files(
        tmp_path / "op", name="alice", issuer="urn:tether:operator", alg="ES256"
    )
    env = {
        **operator_env,
        "TETHER_TOPIC_PREFIX": prefix,
        "TETHER_OPERATOR_KEY": str(files.private_key),
        "TETHER_HOME": str(tmp_path / "home"),
    }
    target = "workload:spiffe://acme.example/agent/stolen"
    res = CliRunner().invoke(
        main, ["revoke", target, "--reason", "laptop stolen", "--until", "1h"], env=env
    )
    assert res.exit_code == 0, res.output

    gateway = settings_of("gateway", prefix)
    reader = Consumer(
        consumer_config(gateway, group_id=f"tether-watcher-{uuid.uuid4().hex[:6]}", client_id="t")
    )
    topic = gateway.topic("revocations")
    reader.assign([TopicPartition(topic, p, 0) for p in range(gateway.partitions)])
    got = None
    deadline = time.monotonic() + 15
    while got is None and time.monotonic() < deadline:
        msg = reader.poll(0.5)
        if msg is not None and msg.error() is None and msg.key() == target.encode():
            got = msg.value()
    reader.close()
    assert got is not None, "the gateway never read the operator's revocation"
    header, claims = unverified_parts(got)
    assert header["kid"] == files.kid
    assert claims["iss"] == "urn:tether:operator"

    operator = Settings(
        kafka_bootstrap=operator_env["TETHER_KAFKA_BOOTSTRAP"],
        kafka=KafkaSettings(
            **{
                k.removeprefix("TETHER_KAFKA__").lower(): v
                for k, v in operator_env.items()
                if k.startswith("TETHER_KAFKA__")
            }
        ),
        topic_prefix=prefix,
        partitions=2,
    )
    assert_denied(produce(operator, operator.topic("findings"), b"{}"), "operator -> findings")


# -- the pipeline, each component on its own principal ------------------------------------------


@pytest.fixture
def worker_proc(prefix: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_KAFKA")}
    env.update(user_env("worker"))
    env.update(
        {
            "TETHER_TOPIC_PREFIX": prefix,
            "TETHER_PARTITIONS": "2",
            "TETHER_GRACE_S": "2",
            "TETHER_WORKER_ID": "secure-w1",
            "TETHER_HEARTBEAT_S": "0.5",
            "TETHER_HOME": str(tmp_path / "home"),
            "TETHER_SIGNING_PROCESSES": "0",
        }
    )
    log_path = tmp_path / "worker.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(  # our own CLI, fixed arguments
            [sys.executable, "-m", "tether.cli", "worker", "--loglevel", "info"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_pipeline_works_end_to_end_on_sasl_ssl(
    prefix: str, worker_proc: tuple[subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    proc, log_path = worker_proc

    def log() -> str:
        return log_path.read_text(errors="replace")[-4000:]

    gateway = settings_of("gateway", prefix).model_copy(update={"home": tmp_path / "home"})
    agent = settings_of("agent", prefix)
    watcher = Watcher(gateway).start()
    try:
        assert watcher.wait_ready(30), watcher.last_error
        deadline = time.monotonic() + 90
        while watcher.last_heartbeat is None and time.monotonic() < deadline:
            assert proc.poll() is None, f"the worker exited: {log()}"
            time.sleep(0.2)
        assert watcher.last_heartbeat is not None, f"no heartbeat from the worker: {log()}"

        now = datetime.now(UTC)
        token = f"jti-{prefix}"

        def cred(holder: str, jti: str) -> dict[str, object]:
            return {
                "token_id": jti,
                "issuer": "https://sts.acme.example",
                "subject": ORG + holder,
                "scopes": ["crm:read"],
                "issued_at": now - timedelta(seconds=30),
                "expires_at": now + timedelta(minutes=10),
            }

        with Emitter(agent, client_id="agent-secure") as emitter:
            emitter.workflow_started(
                workflow_id="wf-secure",
                agent=ORG + "planner",
                credential=cred("planner", "jti-planner"),
                grant={
                    "task_type": "triage",
                    "purpose": "answer a ticket",
                    "scopes": ["crm:read"],
                    "tools": ["crm.search"],
                    "max_sensitivity": "internal",
                    "destinations": [],
                    "not_after": now + timedelta(hours=1),
                    "autonomy": "low",
                },
                occurred_at=now,
                wait=True,
            )
            # the summarizer acts although nobody delegated to it: a broken handoff
            emitter.tool_call_intent(
                workflow_id="wf-secure",
                agent=ORG + "summarizer",
                credential=cred("summarizer", token),
                action={
                    "tool": "crm.search",
                    "operation": "read",
                    "resource": "crm://a/1",
                    "destination": "crm.internal",
                    "data_sensitivity": "internal",
                },
                occurred_at=now + timedelta(seconds=1),
                wait=True,
            )
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not watcher.is_revoked(token_id=token):
            time.sleep(0.1)
        assert watcher.is_revoked(token_id=token), log()
        assert watcher.is_revoked(workflow_id="wf-secure")
        assert not watcher.is_revoked(token_id="jti-planner")
        assert watcher.last_error is None, watcher.last_error
    finally:
        watcher.stop()
