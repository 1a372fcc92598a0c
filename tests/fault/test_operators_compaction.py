"""Compaction neither resurrects a lifted revocation nor loses a later one (docs/operators.md).

Soak only (``make soak``): the shared broker's log cleaner needs up to a minute or two. The
revocations topic compacts per key, and an operator's reinstatement is keyed like the target's
revocations, so after compaction only one record per target is left. With the ledger running:

* ``token:A`` revoked, then reinstated: what is left is the reinstatement; a gateway that
  bootstraps afterwards answers not revoked.
* ``token:B`` revoked (long), revoked again later (shorter, issued AFTER the reinstatement's
  instant), then reinstated: the ledger republishes the later revocation after the
  reinstatement; what is left is that one, and a gateway that bootstraps afterwards holds it.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from sdk_helpers import revocation
from streams.ledger import RevocationLedger
from tether.adapters.kafka_admin import create_topics
from tether.adapters.kafka_config import producer_config
from tether.models.outputs import Reinstatement, Revocation
from tether.sdk.watcher import Watcher
from tether.security import SetSigner, generate_key, peek, verifier_from_settings
from tether.security.keys import write_jwks
from tether.security.operators import generate_operator_files, load_operator_signer, parse_target
from tether.settings import Settings

ISSUER = "urn:tether:monitor"
OPS = "urn:tether:operator"

pytestmark = pytest.mark.soak


def _compacting(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    configs = [
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
        for name, value in (
            ("segment.ms", "1000"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("min.compaction.lag.ms", "0"),
            ("delete.retention.ms", "1000"),
            ("max.compaction.lag.ms", "2000"),
        )
    ]
    resource = ConfigResource("TOPIC", topic, incremental_configs=configs)
    for fut in admin.incremental_alter_configs([resource]).values():
        fut.result(timeout=10)


def _records(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "peek", "enable.auto.commit": False})
    out: list[tuple[bytes | None, bytes | None]] = []
    try:
        highs = {}
        for p in range(2):
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                highs[p] = high
        c.assign([TopicPartition(topic, p, 0) for p in highs])
        done: set[int] = set()
        deadline = time.monotonic() + 30
        while len(done) < len(highs) and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append((msg.key(), msg.value()))
            if msg.offset() + 1 >= highs[msg.partition()]:
                done.add(msg.partition())
    finally:
        c.close()
    return out


def _settings(tmp_path, kafka_bootstrap: str, worker: SetSigner) -> Settings:
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, [worker.public_jwk()])
    ops = generate_operator_files(tmp_path / "ops", name="alice", issuer=OPS, alg="ES256")
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"it-{uuid.uuid4().hex[:12]}.",
        partitions=2,
        issuer=ISSUER,
        jwks=str(jwks),
        operator_jwks=str(ops.jwks),
        operator_key=ops.private_key,
        home=tmp_path,
    )


def _compacted(producer: Producer, bootstrap: str, topic: str) -> dict[bytes, list[bytes | None]]:
    """Roll segments with filler until one record is left per key (or 150 s)."""
    deadline = time.monotonic() + 150
    kept: dict[bytes, list[bytes | None]] = {}
    while time.monotonic() < deadline:
        for p in range(2):
            producer.produce(topic, key=b"filler", value=None, partition=p)
        producer.flush(5)
        kept = {}
        for key, value in _records(bootstrap, topic):
            if key in (b"token:A", b"token:B"):
                kept.setdefault(key, []).append(value)
        if all(len(kept.get(k, [])) == 1 for k in (b"token:A", b"token:B")):
            break
        time.sleep(3.0)
    return kept


def test_compaction_keeps_the_reinstatement_or_the_later_revocation(tmp_path, kafka_bootstrap):
    kafka_admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    worker = SetSigner(generate_key("ES256", issuer=ISSUER), issuer=ISSUER)
    settings = _settings(tmp_path, kafka_bootstrap, worker)
    created = create_topics(settings)
    topic = settings.topic("revocations")
    _compacting(kafka_bootstrap, topic)
    operator = load_operator_signer(settings)
    ledger = RevocationLedger(settings, verifier_from_settings(settings))
    ledger.start()
    producer = Producer(producer_config(settings, client_id="test-feed"))
    now = datetime.now(UTC).replace(microsecond=0)
    lift_at = now - timedelta(seconds=30)

    def publish(record: Revocation | Reinstatement, signed: bytes) -> None:
        producer.produce(topic, key=record.target.key.encode(), value=signed)
        producer.flush(10)

    try:
        a = revocation("token", "A", lasts=3600, rid="rv-a", start=now - timedelta(seconds=60))
        publish(a, worker.revocation(a))
        x_a = operator.reinstatement(parse_target("token:A"), reason="fp", now=lift_at)
        publish(x_a, operator.sign(x_a))

        b1 = revocation("token", "B", lasts=3600, rid="rv-b1", start=now - timedelta(seconds=60))
        b2 = revocation("token", "B", lasts=900, rid="rv-b2", start=now - timedelta(seconds=10))
        publish(b1, worker.revocation(b1))
        publish(b2, worker.revocation(b2))
        x_b = operator.reinstatement(parse_target("token:B"), reason="fp", now=lift_at)
        publish(x_b, operator.sign(x_b))

        kept = _compacted(producer, kafka_bootstrap, topic)
        assert all(len(kept.get(k, [])) == 1 for k in (b"token:A", b"token:B")), kept
        (left_a,) = kept[b"token:A"]
        (left_b,) = kept[b"token:B"]
        assert left_a is not None
        assert left_b is not None
        assert peek(left_a) == x_a
        assert peek(left_b) == b2
        with Watcher(settings, staleness_s=float("inf")) as watcher:
            assert watcher.wait_ready(30), watcher.last_error
            assert not watcher.is_revoked(token_id="A")
            assert watcher.revocations.revoked_until("token", "B") == b2.not_after.timestamp()
    finally:
        ledger.stop()
        for future in kafka_admin.delete_topics(created, operation_timeout=30).values():
            future.result(30)
