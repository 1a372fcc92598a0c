"""The ``kafka`` section of tether's settings: how every Kafka client connects and authenticates.

Every client tether runs (the worker's faust app and its librdkafka producers and consumers, the
admin client that creates topics, the SDK ``Emitter`` and ``Watcher``, the registry sync, the CLI
and the benchmark harness) takes its security from this one section, so that a deployment with
Kafka ACLs can tell tether's worker from an agent that only may write intents. It also holds the
replication of every topic tether creates. Environment: ``TETHER_KAFKA__<FIELD>`` (two
underscores), e.g. ``TETHER_KAFKA__SECURITY_PROTOCOL=SASL_SSL``; the bootstrap servers stay
``TETHER_KAFKA_BOOTSTRAP``. docs/kafka-security.md has the table and the ACLs per principal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, FilePath, SecretStr, model_validator

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]

# librdkafka properties the typed fields own: the passthrough may not set them, so that a secret
# never sits in a plain dict and no two settings disagree about how a client authenticates.
OWNED_PROPERTIES: Final = frozenset(
    {
        "bootstrap.servers",
        "metadata.broker.list",
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "ssl.ca.location",
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.key.password",
        "ssl.endpoint.identification.algorithm",
    }
)

_ENV = "TETHER_KAFKA__"


class KafkaSettings(BaseModel):
    """Connection security and topic replication shared by every Kafka client of tether.

    Validation refuses, with the variable to set, what would otherwise fail later and less
    clearly, or silently connect with less protection than asked: SASL without a username and
    exactly one password source; credentials or certificates given while the protocol would not
    use them; a client certificate without its key; a passthrough property that a typed field
    owns; ``min_insync_replicas`` above ``replication_factor`` (no write could ever succeed).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    sasl_mechanism: SaslMechanism = Field(
        "SCRAM-SHA-512", description="with a SASL_* protocol: SCRAM-SHA-512, SCRAM-SHA-256, PLAIN"
    )
    sasl_username: str | None = Field(None, min_length=1, description="SASL user (principal)")
    sasl_password: SecretStr | None = Field(None, description="SASL password")
    sasl_password_file: FilePath | None = Field(
        None, description="file holding the SASL password (instead of sasl_password)"
    )
    ssl_ca_file: FilePath | None = Field(
        None, description="PEM CA bundle that signed the brokers' certificates; unset: system CAs"
    )
    ssl_cert_file: FilePath | None = Field(
        None, description="PEM client certificate (mutual TLS); needs ssl_key_file"
    )
    ssl_key_file: FilePath | None = Field(None, description="PEM private key of ssl_cert_file")
    ssl_key_password: SecretStr | None = Field(None, description="password of ssl_key_file")
    ssl_verify_hostname: bool = Field(
        True, description="check that the broker's certificate names the host connected to"
    )
    properties: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="other librdkafka properties for every confluent-kafka client, as JSON "
        '(e.g. {"socket.keepalive.enable": true}); faust\'s own clients take only the typed '
        "settings",
    )
    replication_factor: int = Field(
        1, ge=1, description="replicas of every topic tether creates (production: 3)"
    )
    min_insync_replicas: int = Field(
        1,
        ge=1,
        description="min.insync.replicas of every topic tether creates: with acks=all, a write "
        "is acknowledged once this many replicas have it (production: 2)",
    )

    @property
    def uses_sasl(self) -> bool:
        """Whether clients authenticate with SASL."""
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        """Whether connections are encrypted (and the broker authenticated) with TLS."""
        return self.security_protocol.endswith("SSL")

    def password(self) -> str | None:
        """The SASL password, read from ``sasl_password_file`` when that is how it was given.

        The file is read at each call, so a rotated password reaches the next client created.
        """
        if self.sasl_password is not None:
            return self.sasl_password.get_secret_value()
        if self.sasl_password_file is not None:
            return Path(self.sasl_password_file).read_text(encoding="utf-8").rstrip("\r\n")
        return None

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        protocol = f"{_ENV}SECURITY_PROTOCOL={self.security_protocol}"
        if self.uses_sasl:
            if self.sasl_username is None:
                raise ValueError(f"{protocol} needs {_ENV}SASL_USERNAME")
            if (self.sasl_password is None) == (self.sasl_password_file is None):
                raise ValueError(
                    f"{protocol} needs exactly one of {_ENV}SASL_PASSWORD and "
                    f"{_ENV}SASL_PASSWORD_FILE"
                )
        elif any(
            value is not None
            for value in (self.sasl_username, self.sasl_password, self.sasl_password_file)
        ):
            raise ValueError(
                f"SASL credentials are set but {protocol} would not send them: "
                "use SASL_SSL (or SASL_PLAINTEXT on a trusted network)"
            )
        tls_files = {
            "SSL_CA_FILE": self.ssl_ca_file,
            "SSL_CERT_FILE": self.ssl_cert_file,
            "SSL_KEY_FILE": self.ssl_key_file,
            "SSL_KEY_PASSWORD": self.ssl_key_password,
        }
        given = [f"{_ENV}{name}" for name, value in tls_files.items() if value is not None]
        if given and not self.uses_tls:
            raise ValueError(
                f"{', '.join(given)} set but {protocol} does not use TLS: use SSL or SASL_SSL"
            )
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError(f"mutual TLS needs both {_ENV}SSL_CERT_FILE and {_ENV}SSL_KEY_FILE")
        if self.ssl_key_password is not None and self.ssl_key_file is None:
            raise ValueError(f"{_ENV}SSL_KEY_PASSWORD is set without {_ENV}SSL_KEY_FILE")
        owned = sorted(OWNED_PROPERTIES.intersection(self.properties))
        if owned:
            raise ValueError(
                f"{_ENV}PROPERTIES may not set {', '.join(owned)}: use the typed settings "
                f"(TETHER_KAFKA_BOOTSTRAP, {_ENV}SECURITY_PROTOCOL, {_ENV}SASL_*, {_ENV}SSL_*)"
            )
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"{_ENV}MIN_INSYNC_REPLICAS={self.min_insync_replicas} is above "
                f"{_ENV}REPLICATION_FACTOR={self.replication_factor}: no write could succeed"
            )
        return self
