"""The ``kafka`` settings section: parsing, validation, and that every client is built from it.

The secured broker itself is exercised in tests/integration/test_kafka_security.py; these tests
pin what can be checked without one: the environment names, the refusals of incoherent
settings, the librdkafka and faust configurations derived from the section, the replication of
every topic tether and faust create, and that no Kafka client is configured anywhere else.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import faust
import pytest
from faust.types.auth import AuthProtocol, SASLMechanism
from pydantic import ValidationError

from streams import faust_fixes
from streams.app import build
from streams.kafka_auth import broker_credentials
from tether.adapters.kafka_config import admin_config, consumer_config, producer_config
from tether.kafka_settings import KafkaSettings
from tether.settings import Settings
from tether.topics import topic_specs
from tls_certs import self_signed_ca

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    """A file standing for a CA bundle, certificate or key (only its existence is checked)."""
    path = tmp_path / "file.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def test_the_section_is_read_from_tether_kafka_double_underscore_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    password = tmp_path / "pw"
    password.write_text("s3cret\n")
    monkeypatch.setenv("TETHER_KAFKA_BOOTSTRAP", "kafka-1:9093,kafka-2:9093")
    monkeypatch.setenv("TETHER_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TETHER_KAFKA__SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("TETHER_KAFKA__SASL_USERNAME", "worker")
    monkeypatch.setenv("TETHER_KAFKA__SASL_PASSWORD_FILE", str(password))
    monkeypatch.setenv("TETHER_KAFKA__PROPERTIES", '{"socket.keepalive.enable": true}')
    monkeypatch.setenv("TETHER_KAFKA__REPLICATION_FACTOR", "3")
    monkeypatch.setenv("TETHER_KAFKA__MIN_INSYNC_REPLICAS", "2")
    settings = Settings()
    assert settings.kafka_bootstrap == "kafka-1:9093,kafka-2:9093"
    kafka = settings.kafka
    assert (kafka.security_protocol, kafka.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")
    assert kafka.password() == "s3cret"  # the file's trailing newline is not part of it
    assert kafka.properties == {"socket.keepalive.enable": True}
    assert (kafka.replication_factor, kafka.min_insync_replicas) == (3, 2)
    assert "s3cret" not in repr(settings)


def test_defaults_suit_a_local_plaintext_broker() -> None:
    kafka = KafkaSettings()
    assert kafka.security_protocol == "PLAINTEXT"
    assert (kafka.replication_factor, kafka.min_insync_replicas) == (1, 1)
    assert producer_config(Settings(kafka=kafka), client_id="c")["security.protocol"] == "PLAINTEXT"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs TETHER_KAFKA__SASL_USERNAME"),
        (
            {"security_protocol": "SASL_SSL", "sasl_username": "agent"},
            "exactly one of TETHER_KAFKA__SASL_PASSWORD and TETHER_KAFKA__SASL_PASSWORD_FILE",
        ),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_username": "agent",
                "sasl_password": "x",
                "sasl_password_file": "PEM",
            },
            "exactly one of",
        ),
        ({"sasl_username": "agent", "sasl_password": "x"}, "would not send them"),
        ({"security_protocol": "SSL", "sasl_password": "x"}, "would not send them"),
        ({"ssl_ca_file": "PEM"}, "does not use TLS"),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_username": "a",
                "sasl_password": "x",
                "ssl_ca_file": "PEM",
            },
            "does not use TLS",
        ),
        ({"security_protocol": "SSL", "ssl_cert_file": "PEM"}, "needs both"),
        ({"security_protocol": "SSL", "ssl_key_file": "PEM"}, "needs both"),
        ({"security_protocol": "SSL", "ssl_key_password": "x"}, "without"),
        ({"properties": {"sasl.password": "x"}}, "may not set sasl.password"),
        ({"properties": {"security.protocol": "plaintext"}}, "may not set security.protocol"),
        ({"properties": {"bootstrap.servers": "evil:9092"}}, "may not set bootstrap.servers"),
        ({"replication_factor": 1, "min_insync_replicas": 2}, "no write could succeed"),
        ({"replication_factor": 0}, "greater than or equal to 1"),
        ({"security_protocol": "SASL_SSL ", "sasl_username": "a"}, "literal_error|Input should"),
        ({"sasl_mechanism": "GSSAPI"}, "Input should be"),
        (
            {"security_protocol": "SSL", "ssl_ca_file": "/nonexistent/ca.pem"},
            "does not point to a file",
        ),
        ({"unknown_field": 1}, "Extra inputs are not permitted"),
    ],
)
def test_incoherent_settings_are_refused_with_the_variable_to_set(
    fields: dict[str, object], message: str, pem: Path
) -> None:
    values = {k: (str(pem) if v == "PEM" else v) for k, v in fields.items()}
    with pytest.raises(ValidationError, match=message):
        KafkaSettings.model_validate(values)


def test_sasl_ssl_with_mutual_tls_reaches_every_librdkafka_client(tmp_path: Path) -> None:
    files = {}
    for name in ("ca", "cert", "key"):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_text("pem")
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="worker",
        sasl_password="pw",
        ssl_ca_file=files["ca"],
        ssl_cert_file=files["cert"],
        ssl_key_file=files["key"],
        ssl_key_password="kpw",
        properties={"socket.keepalive.enable": True, "acks": "1"},
    )
    settings = Settings(kafka_bootstrap="b:9093", kafka=kafka)
    expected = {
        "bootstrap.servers": "b:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "worker",
        "sasl.password": "pw",
        "ssl.ca.location": str(files["ca"]),
        "ssl.certificate.location": str(files["cert"]),
        "ssl.key.location": str(files["key"]),
        "ssl.key.password": "kpw",
        "ssl.endpoint.identification.algorithm": "https",
        "socket.keepalive.enable": True,
    }
    for config in (
        producer_config(settings, client_id="p"),
        consumer_config(settings, group_id="g", client_id="c"),
        admin_config(settings),
    ):
        assert expected.items() <= config.items()
    # the passthrough cannot weaken what tether itself requires of its producers
    assert producer_config(settings, client_id="p")["acks"] == "all"


def test_plain_tls_sends_no_sasl_and_hostname_checks_can_be_relaxed(pem: Path) -> None:
    kafka = KafkaSettings(security_protocol="SSL", ssl_ca_file=pem, ssl_verify_hostname=False)
    config = admin_config(Settings(kafka=kafka))
    assert config["security.protocol"] == "SSL"
    assert config["ssl.endpoint.identification.algorithm"] == "none"
    assert not any(key.startswith("sasl.") for key in config)


def test_the_password_file_is_read_when_a_client_is_configured(tmp_path: Path) -> None:
    """A rotated password reaches the next client without restarting the settings."""
    path = tmp_path / "pw"
    path.write_text("old")
    settings = Settings(
        kafka=KafkaSettings(
            security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password_file=path
        )
    )
    assert producer_config(settings, client_id="p")["sasl.password"] == "old"
    path.write_text("new\n")
    assert consumer_config(settings, group_id="g", client_id="c")["sasl.password"] == "new"


def _ca(tmp_path: Path) -> Path:
    """A real CA certificate file (ssl.create_default_context parses it)."""
    path = tmp_path / "ca.pem"
    path.write_bytes(self_signed_ca("unit-ca"))
    return path


def test_faust_logs_in_as_the_librdkafka_clients_do(tmp_path: Path) -> None:
    ca = _ca(tmp_path)
    assert broker_credentials(KafkaSettings()) is None
    sasl = broker_credentials(
        KafkaSettings(
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="worker",
            sasl_password="pw",
            ssl_ca_file=ca,
        )
    )
    assert isinstance(sasl, faust.SASLCredentials)
    assert (sasl.username, sasl.password) == ("worker", "pw")
    assert sasl.mechanism is SASLMechanism.SCRAM_SHA_512
    assert sasl.protocol is AuthProtocol.SASL_SSL
    assert sasl.ssl_context is not None
    assert sasl.ssl_context.verify_mode is ssl.CERT_REQUIRED
    assert sasl.ssl_context.check_hostname
    plain_sasl = broker_credentials(
        KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p")
    )
    assert isinstance(plain_sasl, faust.SASLCredentials)
    assert plain_sasl.protocol is AuthProtocol.SASL_PLAINTEXT
    tls = broker_credentials(KafkaSettings(security_protocol="SSL", ssl_ca_file=ca))
    assert isinstance(tls, faust.SSLCredentials)


def test_every_topic_takes_min_insync_replicas_from_the_settings() -> None:
    for spec in topic_specs("t.", 3, min_insync_replicas=2):
        assert spec.config["min.insync.replicas"] == "2", spec.name
    # the revocations topic no longer forces 1 whatever the settings say
    assert all(s.config["min.insync.replicas"] == "1" for s in topic_specs("t.", 3))


def test_the_workers_changelogs_are_replicated_and_authenticated_as_the_settings_say() -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_username="worker",
        sasl_password="pw",
        replication_factor=3,
        min_insync_replicas=2,
    )
    try:
        app, _ = build(Settings(topic_prefix="repl-a.", kafka=kafka))
        assert app.conf.topic_replication_factor == 3
        assert app.conf.topic_disable_leader  # no leader topic with faust's own defaults
        changelogs = [table.changelog_topic for table in app.tables.values()]
        assert len(changelogs) == 2
        for topic in changelogs:
            assert (topic.replicas or app.conf.topic_replication_factor) == 3
            assert topic.config["min.insync.replicas"] == "2"
        credentials = app.conf.broker_credentials
        assert isinstance(credentials, faust.SASLCredentials)
        assert credentials.username == "worker"
    finally:
        faust_fixes._elsewhere.clear()


_CLIENT = re.compile(r"\b(Producer|Consumer|AdminClient)\(\s*\{")


@pytest.mark.parametrize("tree", ["src", "streams", "benchmarks"])
def test_no_kafka_client_is_configured_outside_kafka_config(tree: str) -> None:
    """Every client takes its configuration from tether.adapters.kafka_config, so none can be
    the one left connecting without TLS or SASL: no literal configuration, no bootstrap.servers
    set by hand anywhere else."""
    offenders = []
    for path in sorted((ROOT / tree).rglob("*.py")):
        if path.name in {"kafka_config.py", "kafka_settings.py"}:
            continue
        text = path.read_text()
        if (
            _CLIENT.search(text)
            or '"bootstrap.servers"' in text
            or "kafka://" in text.replace('f"kafka://{settings.kafka_bootstrap}"', "")
        ):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"Kafka clients configured by hand: {offenders}"
