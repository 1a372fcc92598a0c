"""faust's side of the ``kafka`` settings: broker credentials and a TLS context for aiokafka.

faust's consumer, producer and topic admin are aiokafka clients, configured by the app's
``broker_credentials`` rather than librdkafka properties. This module maps the same typed settings
that ``tether.adapters.kafka_config.security_config`` maps for librdkafka, so the worker's two
kinds of client always log in as the same principal. The librdkafka passthrough
(``TETHER_KAFKA__PROPERTIES``) has no aiokafka equivalent and is not applied here.
"""

from __future__ import annotations

import ssl

import faust
from faust.types.auth import CredentialsT

from tether.kafka_settings import KafkaSettings


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """A client TLS context: the brokers verified against ``ssl_ca_file`` (else the system CAs),
    with the client certificate for mutual TLS when one is configured."""
    context = ssl.create_default_context(
        cafile=str(kafka.ssl_ca_file) if kafka.ssl_ca_file is not None else None
    )
    context.check_hostname = kafka.ssl_verify_hostname
    if kafka.ssl_cert_file is not None and kafka.ssl_key_file is not None:
        password = kafka.ssl_key_password
        context.load_cert_chain(
            str(kafka.ssl_cert_file),
            str(kafka.ssl_key_file),
            password=password.get_secret_value() if password is not None else None,
        )
    return context


def broker_credentials(kafka: KafkaSettings) -> CredentialsT | None:
    """The faust ``broker_credentials`` for ``kafka`` (None: plaintext, no authentication)."""
    if kafka.uses_sasl:
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.password(),
            mechanism=kafka.sasl_mechanism,
            ssl_context=ssl_context(kafka) if kafka.uses_tls else None,
        )
    if kafka.uses_tls:
        return faust.SSLCredentials(ssl_context(kafka))
    return None
